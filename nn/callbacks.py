"""Hooks into the training loop (``nn.training.Loop``), for ``fit(..., callbacks=[...])`` and the harness.

A callback sees the running loop (its ``network``, ``trainer``, ``epoch``, ``history``, ...) at each
hook. ``on_train_start`` hooks run in list order, ``on_train_end`` and ``on_exception`` in reverse (what
opened first closes last, as with nested ``with`` blocks). Raising ``StopTraining`` from
``on_epoch_end`` ends training after that epoch (``EarlyStopping`` does); the callbacks after the one
that raised do not see that epoch.
"""

from __future__ import annotations

import math

import numpy as np

from nn.checks import check, is_number


class StopTraining(Exception):
    """Raised by a callback to end training after the current epoch; the message says why."""


class Callback:
    """Override what you need; ``loop`` is the running ``nn.training.Loop``."""

    def on_train_start(self, loop) -> None:
        """Before the first epoch (of this process: after a resume too)."""

    def on_batch_end(self, loop, step: int, num_batches: int, loss: float) -> None:
        """After each update of epoch ``loop.epoch`` (a progress bar); called only where overridden."""

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        """After epoch ``loop.epoch`` (from 1) with its finite metrics (``train/loss``, ``val/acc``, ...); may add
        metrics for the callbacks after it; raise ``StopTraining`` to end training."""

    def on_train_end(self, loop) -> None:
        """After the last epoch."""

    def on_exception(self, loop, error: BaseException) -> None:
        """Training or a callback raised ``error`` (Ctrl-C too); the loop re-raises it after every callback."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (Keras's and Lightning's ``EarlyStopping``).

    Parameters
    ----------
    monitor : a per-epoch metric (``val/loss``, ``val/acc``, ``train/loss``, ...).
    mode : ``min`` (a loss) or ``max`` (an accuracy).
    patience : epochs without improvement before stopping, >= 1.
    min_delta : the least change that counts as an improvement, >= 0.
    restore_best : at the end, put back the weights of the best epoch (a copy is kept in memory).
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        check(mode in ("min", "max"), "mode", mode, "'min' or 'max'")
        check(isinstance(patience, int) and patience >= 1, "patience", patience, "an integer >= 1")
        check(is_number(min_delta) and min_delta >= 0, "min_delta", min_delta, "a number >= 0")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.restore_best = restore_best
        self.best, self.best_epoch, self.wait = math.inf if mode == "min" else -math.inf, 0, 0
        self.best_params: dict[str, np.ndarray] | None = None
        self.stopped_epoch: int | None = None

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which this run does not log; "
                f"it logs {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, loop.epoch, 0
            if self.restore_best:
                self.best_params = {k: v.copy() for k, v in loop.network.params.items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = loop.epoch
            raise StopTraining(self.reason())

    def reason(self) -> str:
        kept = f"; kept epoch {self.best_epoch}'s weights" if self.restore_best else ""
        return (
            f"stopped early at epoch {self.stopped_epoch}: {self.monitor} did not improve on {self.best:.6g} "
            f"(epoch {self.best_epoch}) by more than {self.min_delta:g} for {self.patience} epochs{kept}"
        )

    def on_train_end(self, loop) -> None:
        if self.restore_best and self.best_params is not None:
            loop.network.set_params(self.best_params)

    @property
    def kept_epoch(self) -> int | None:
        """The epoch whose weights the network holds after training, when this callback restores them."""
        return self.best_epoch if self.restore_best and self.best_params is not None else None

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters and, with ``restore_best``, the best weights: what a resumed run needs."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "params": self.best_params}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_params = state["params"]


def early_stopping(callbacks) -> EarlyStopping | None:
    """The ``EarlyStopping`` among ``callbacks``, if any: where there is one, its monitor and ``min_delta`` say
    which epoch is the best (the best metrics, the kept weights, the best checkpoint), not validation accuracy."""
    return next((c for c in callbacks if isinstance(c, EarlyStopping)), None)


class PrintProgress(Callback):
    """One line per epoch on stdout, and why training stopped early (``fit(verbose=True)``)."""

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        row = loop.history[-1]
        val = f"  val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f}" if "val/loss" in row else ""
        print(
            f"epoch {loop.epoch}/{loop.epochs}  loss {row['train/loss']:.4f} acc {row['train/acc']:.4f}{val}"
            f"  lr {row['lr']:.3g}  {row['epoch_time']:.1f}s",
            flush=True,
        )

    def on_train_end(self, loop) -> None:
        if loop.stopped:
            print(loop.stopped, flush=True)
