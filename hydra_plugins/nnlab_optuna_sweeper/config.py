"""``hydra/sweeper=nnlab_optuna``: its config node, registered in Hydra's ConfigStore when Hydra scans plugins.

The sweep itself comes from ``+sweep=<name>`` (conf/sweep/); any key set here replaces the sweep's.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

import sweeps.config  # noqa: F401  registers schema/sweep/default, which conf/sweep/*.yaml build on


@dataclass
class NnlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.nnlab_optuna_sweeper.sweeper.NnlabOptunaSweeper"
    study_name: str | None = None
    direction: str | None = None
    n_trials: int | None = None
    storage: str | None = None
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    params: dict[str, Any] | None = None  # Hydra sweep syntax, as in conf/sweep/*.yaml
    heartbeat: dict[str, Any] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="nnlab_optuna", node=NnlabOptunaSweeperConf, provider="nnlab")
