"""Registers ``hydra/sweeper=nnlab_optuna`` and its sampler and pruner options when Hydra scans plugins.

The settings' schema is ``sweeps.config.SweeperConf``; the node stored here adds what Hydra needs to build
the sweeper from it (``_target_``, the default sampler and pruner).

No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module before it is in
``sys.modules``, where ``dataclass`` would look up string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from sweeps.config import PRUNERS, SAMPLERS, SweeperConf


@dataclass
class HydraKeys:
    """The keys Hydra reads (first in the node, as ``--cfg hydra`` shows them)."""

    _target_: str = "hydra_plugins.nnlab_optuna_sweeper.sweeper.NnlabOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler (the grid needs the space) and the pruner
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])


@dataclass
class NnlabOptunaSweeperConf(SweeperConf, HydraKeys):
    """``hydra/sweeper=nnlab_optuna``: ``HydraKeys``, then the settings."""


def register() -> None:
    """``hydra/sweeper=nnlab_optuna`` and its sampler and pruner options in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="nnlab_optuna", node=NnlabOptunaSweeperConf, provider="nnlab")
    for name, node in SAMPLERS.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="nnlab")
    for name, node in PRUNERS.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="nnlab")


register()
