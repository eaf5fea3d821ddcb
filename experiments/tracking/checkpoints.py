"""Checkpoints of a tracked run: the weights files its policy keeps, and the training state ``resume.py``
continues from (written here, read back by ``restore``).

Policies (``tracking.checkpoints.policy``): ``all`` epochs, ``every_k`` (and the last), ``best_and_last``
(by validation accuracy), ``last``, ``none`` (no resume state either).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import nn
from nn.serialization import architecture, load_training_state, training_snapshot

log = logging.getLogger("nnlab")

FOLDER = "checkpoints"
RESUME_FOLDER, RESUME_STATES = "resume", ("state_a.npz", "state_b.npz")  # a run's training state, written in turn
POLICIES = ("all", "every_k", "best_and_last", "last", "none")


class Checkpoints:
    """The files of one run, handed to ``upload(folder, name, spec, params, extra)`` (the run's background
    writer, which writes them under ``scratch`` and logs them) as they are made: arrays are copied first.
    ``best_epoch``/``best_acc``: the best epoch so far and its validation accuracy; the best is early stopping's
    (``stopper``: its monitor and ``min_delta``) where the run has it, else the highest validation accuracy.
    """

    def __init__(
        self,
        policy: str,
        every: int,
        scratch: Path,
        upload: Callable,
        history: list[dict],
        stopper: nn.callbacks.EarlyStopping | None = None,
    ) -> None:
        self.policy, self.every, self.scratch, self.upload, self.stopper = policy, every, scratch, upload, stopper
        if stopper is not None and stopper.best_epoch:  # a resumed run: early stopping's state is restored
            best = next(row for row in history if row["epoch"] == stopper.best_epoch)
        else:
            best = max(history, key=lambda row: row["val/acc"], default={"val/acc": -1.0, "epoch": 0})
        self.best_acc, self.best_epoch = best["val/acc"], best["epoch"]

    def improves(self, metrics: dict[str, float]) -> bool:
        """Whether this epoch's ``metrics`` make it the best so far. Called before early stopping sees them
        (the run's callbacks come first), so its ``improved`` compares with the best before this epoch."""
        if self.stopper is not None:
            return self.stopper.monitor in metrics and self.stopper.improved(metrics[self.stopper.monitor])
        return metrics["val/acc"] > self.best_acc

    @property
    def best_file(self) -> Path:
        return self.scratch / FOLDER / "best.npz"

    def after_epoch(self, loop: nn.Loop, metrics: dict[str, float]) -> None:
        """The policy's weights files for epoch ``loop.epoch`` and, but for the last epoch, the resume state."""
        epoch, policy = loop.epoch, self.policy
        last = epoch == loop.epochs
        if policy == "all" or (policy == "every_k" and epoch % self.every == 0):
            self.save(loop.network, f"epoch_{epoch:03d}.npz")
        if self.improves(metrics):
            if policy == "best_and_last":
                self.save(loop.network, "best.npz")
            self.best_acc, self.best_epoch = metrics["val/acc"], epoch
        if policy in ("best_and_last", "last") or (policy == "every_k" and last):
            self.save(loop.network, "last.npz")
        if policy != "none" and not last:
            self.save_resume_state(loop)

    def save(self, network: nn.Network, name: str) -> None:
        spec, params = architecture(network), {k: v.copy() for k, v in network.params.items()}
        self.upload(FOLDER, name, spec, params, None)

    def save_resume_state(self, loop: nn.Loop) -> None:
        """Everything ``restore`` needs to continue after this epoch, in ``resume/`` in one of two files used in
        turn, so that a kill while one is being written leaves the other intact. Written before the callbacks
        after the run's own see the epoch: ``restore`` has them shown it. Each stateful callback's state is
        keyed by its place among the stateful ones (early stopping: 0)."""
        states, arrays = {}, {}
        for index, callback in enumerate(stateful(loop.callbacks)):
            state = dict(callback.state_dict())
            arrays |= {f"callback{index}/{k}": v for k, v in (state.pop("params", None) or {}).items()}
            states[str(index)] = state
        record = {"epoch": loop.epoch, "history": loop.history, "callbacks": states}
        spec, params, arrays = training_snapshot(loop.network, loop.trainer.state_dict(), record, arrays)
        self.upload(RESUME_FOLDER, RESUME_STATES[loop.epoch % 2], spec, params, arrays)


def restore(state_file: Path, loop: nn.Loop) -> None:
    """Put ``loop`` back where ``save_resume_state`` left it: weights, optimizer, schedule and random state, the
    history, and each stateful callback (early stopping) as it was; the loop shows them the state's epoch when
    it runs (``loop.unseen``), which may stop training there."""
    saved, state, record = load_training_state(state_file)
    loop.network.set_params(saved.params)
    loop.trainer.load_state_dict(state)
    loop.history[:] = record["history"]
    loop.epoch = len(loop.history)
    states, arrays = record.get("callbacks", {}), record.get("arrays", {})
    callbacks = stateful(loop.callbacks)
    for index, callback in enumerate(callbacks):
        if str(index) in states:
            prefix = f"callback{index}/"
            params = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)} or None
            callback.load_state_dict(states[str(index)] | {"params": params})
    if len(states) > len(callbacks):
        log.warning("the resume state holds %d callbacks' states, this run has %d", len(states), len(callbacks))
    loop.unseen = callbacks  # the state was written before they saw its epoch


def stateful(callbacks: list) -> list:
    """The callbacks with a state to save and restore (early stopping): in the order of the loop's list."""
    return [c for c in callbacks if hasattr(c, "state_dict") and hasattr(c, "load_state_dict")]
