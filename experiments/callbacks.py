"""Per-epoch hooks of ``train(cfg, callbacks=[...])``: a sweep's pruner, early stopping, anything else.

A callback sees every epoch's metrics once they are logged; raising ``Pruned`` from it stops the run,
which is closed as KILLED with ``nnlab.state=pruned`` and returned with status ``"pruned"``.
"""

from __future__ import annotations


class Pruned(Exception):
    """Raised by a callback to stop the run early; its message is the run's reason."""


class Callback:
    """Override what you need; ``run_id`` is the MLflow run's id (None with ``tracking=none``)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], run_id: str | None) -> None:
        """After epoch ``epoch`` (from 1) is logged, with its finite metrics (``val/acc``, ``train/loss``, ...)."""
