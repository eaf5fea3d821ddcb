"""Checkpoints of a tracked run: the weights files its policy keeps, and the training state ``resume.py``
continues from (written here, read back by ``restore``).

Policies (``tracking.checkpoints.policy``): ``all`` epochs, ``every_k`` (and the last), ``best_and_last``
(by validation accuracy), ``last``, ``none`` (no resume state either).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import nn
from nn.callbacks import StopTraining
from nn.serialization import architecture, load_training_state, training_snapshot

FOLDER = "checkpoints"
RESUME_FOLDER, RESUME_STATES = "resume", ("state_a.npz", "state_b.npz")  # a run's training state, written in turn
POLICIES = ("all", "every_k", "best_and_last", "last", "none")


class Checkpoints:
    """The files of one run, handed to ``upload(folder, name, spec, params, extra)`` (the run's background
    writer, which writes them under ``scratch`` and logs them) as they are made: arrays are copied first.
    ``best_epoch``/``best_acc``: the epoch with the highest validation accuracy so far.
    """

    def __init__(self, policy: str, every: int, scratch: Path, upload: Callable, history: list[dict]) -> None:
        self.policy, self.every, self.scratch, self.upload = policy, every, scratch, upload
        best = max(history, key=lambda row: row["val/acc"], default={"val/acc": -1.0, "epoch": 0})
        self.best_acc, self.best_epoch = best["val/acc"], best["epoch"]

    @property
    def best_file(self) -> Path:
        return self.scratch / FOLDER / "best.npz"

    def after_epoch(self, loop: nn.Loop, metrics: dict[str, float]) -> None:
        """The policy's weights files for epoch ``loop.epoch`` and, but for the last epoch, the resume state."""
        epoch, policy = loop.epoch, self.policy
        last = epoch == loop.epochs
        if policy == "all" or (policy == "every_k" and epoch % self.every == 0):
            self.save(loop.network, f"epoch_{epoch:03d}.npz")
        if metrics["val/acc"] > self.best_acc:
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
        after the run's own see the epoch: ``restore`` shows it to them."""
        states, arrays = {}, {}
        for index, callback in enumerate(loop.callbacks):
            if hasattr(callback, "state_dict"):
                state = dict(callback.state_dict())
                arrays |= {f"callback{index}/{k}": v for k, v in (state.pop("params", None) or {}).items()}
                states[str(index)] = state
        record = {"epoch": loop.epoch, "history": loop.history, "callbacks": states}
        spec, params, arrays = training_snapshot(loop.network, loop.trainer.state_dict(), record, arrays)
        self.upload(RESUME_FOLDER, RESUME_STATES[loop.epoch % 2], spec, params, arrays)


def restore(state_file: Path, loop: nn.Loop) -> None:
    """Put ``loop`` back where ``save_resume_state`` left it: weights, optimizer, schedule and random state, the
    history, and each stateful callback (early stopping) as it was after seeing the state's epoch; sets
    ``loop.stopped`` when one of them ends training there."""
    saved, state, record = load_training_state(state_file)
    loop.network.set_params(saved.params)
    loop.trainer.load_state_dict(state)
    loop.history[:] = record["history"]
    loop.epoch = len(loop.history)
    states, arrays = record.get("callbacks", {}), record.get("arrays", {})
    stateful = [c for c in loop.callbacks if hasattr(c, "load_state_dict")]
    for index, callback in enumerate(loop.callbacks):
        if callback in stateful and str(index) in states:
            prefix = f"callback{index}/"
            params = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)} or None
            callback.load_state_dict(states[str(index)] | {"params": params})
    if loop.history:  # the state was written before these callbacks saw its epoch
        row = loop.history[-1]
        metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
        try:
            for callback in stateful:
                callback.on_epoch_end(loop, metrics)
        except StopTraining as stop:
            loop.stopped = str(stop)
