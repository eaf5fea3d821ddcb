"""The ``nnlab_optuna`` sweeper as Hydra sees it: ``python experiments/run.py -m sweep=digits_smoke`` (the sweep
config selects it).

Hydra imports every plugin module on every run, ``-m`` or not, so this one holds only the class Hydra
instantiates. Its engine, ``sweeps.engine.SweepEngine`` (the study, the batches handed to the launcher,
the worker processes), and with it Optuna, is imported when a sweeper is built, as in Hydra's own
Optuna sweeper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.plugins.sweeper import Sweeper

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig


class NnlabOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from sweeps.engine import SweepEngine

        self.engine = SweepEngine(settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.engine.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        return self.engine.sweep(arguments)
