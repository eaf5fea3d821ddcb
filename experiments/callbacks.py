"""Hooks of ``train(cfg, callbacks=[...])``: ``nn.callbacks`` (early stopping, anything else), plus a
sweep's pruner.

A callback sees every epoch's finite metrics once they are logged. Raising ``nn.callbacks.StopTraining``
ends the run as FINISHED (early stopping); raising ``Pruned`` ends it as KILLED with
``nnlab.state=pruned``, returned with status ``"pruned"``.
"""

from __future__ import annotations

import nn.callbacks


class Pruned(Exception):
    """Raised by a callback to stop the run early; its message is the run's reason."""


class Callback(nn.callbacks.Callback):
    """``nn``'s callback plus ``run_id``: the MLflow run's id, which ``train()`` sets before the first epoch
    (None with ``tracking=none``)."""

    run_id: str | None = None
