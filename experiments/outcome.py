"""How a run ended: the state and reason recorded for an error, and the errors that leave training.

One mapping, used by the MLflow run (what it records) and by ``train`` (what it returns or raises): a
divergence (``nn.Diverged``, ``StuckAtChance``) is ``diverged``, ``Pruned`` is ``pruned``, Ctrl-C and
SIGTERM are ``killed``, and so is a ``SystemExit`` (a requeued SLURM job's), any other error is ``crashed``.
"""

from __future__ import annotations

import errno

import nn
from experiments.store import first_line, root_cause
from experiments.tracking.tags import CRASHED, DIVERGED, KILLED, PRUNED


class Pruned(Exception):
    """Raised by a callback to stop the run early; its message is the run's reason."""


class StuckAtChance(RuntimeError):
    """Validation accuracy stayed at chance level: the run diverged without a non-finite loss."""


def divergence_advice(clipper) -> str:
    """What to change after a divergence: the learning rate, and clipping unless the run already clips."""
    if isinstance(clipper, nn.ClipByValue):
        return f"Lower optimizer.lr, or clip tighter than clipping.value={clipper.value:g}."
    if isinstance(clipper, nn.ClipByNorm):
        return f"Lower optimizer.lr, or clip tighter than clipping.max_norm={clipper.max_norm:g}."
    return "Lower optimizer.lr, or add clipping=value or clipping=norm."


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, a cluster scheduler), raised by the entry points' handler and
    handled as Ctrl-C."""


class RunFailed(RuntimeError):
    """Training or tracking raised: the run (``run_id``, None when untracked) is closed as FAILED.

    ``str()`` is the reason recorded on the run; the original exception is the ``__cause__``."""

    def __init__(self, run_id: str | None, reason: str, unclosed: str | None = None) -> None:
        super().__init__(reason)
        self.run_id, self.unclosed = run_id, unclosed

    def explain(self) -> str:
        """The one-paragraph message a command prints for this failure."""
        if self.run_id and self.unclosed:
            where = (
                f"The store refused to record the end of MLflow run {self.run_id} too ({self.unclosed}); the next "
                "run on this host that opens the store closes it as FAILED."
            )
        elif self.run_id:
            where = (
                f"MLflow run {self.run_id} is closed as FAILED with this reason (tag nnlab.failure_reason); "
                "everything logged before the failure is kept."
            )
        else:
            where = "No MLflow run was left open."
        return f"The run failed: {self}. {where}"


def interruption(err: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"


def failure_reason(err: BaseException) -> str:
    """The reason recorded for a run that raised: the error's first line and its root cause's, or for a full
    disk what to do about it."""
    root = root_cause(err)
    if (isinstance(root, OSError) and root.errno == errno.ENOSPC) or "disk is full" in str(root):
        return (
            f"a disk is full ({first_line(root)}). Free space on it, or point tracking.dir (the MLflow store) and "
            "hydra.run.dir (the outputs) at a disk with room"
        )
    return first_line(err) if root is err else f"{first_line(err)} (from {first_line(root)})"


def outcome(error: BaseException, loop: nn.Loop) -> tuple[str, str]:
    """The state (``experiments.tracking.tags``) and reason of a run that ``error`` ended in ``loop.epoch``."""
    if isinstance(error, nn.Diverged):  # nn counts epochs from 0 and says "the learning rate": name the keys
        watch = loop.trainer.watch
        because = f" ({watch.explain(first_epoch=1)})" if watch is not None else ""
        return DIVERGED, (
            f"training diverged: loss is {error.loss} at epoch {loop.epoch}, step {error.step}{because}. "
            f"{divergence_advice(loop.trainer.clipper)}"
        )
    if isinstance(error, StuckAtChance):
        return DIVERGED, str(error)
    if isinstance(error, Pruned):
        return PRUNED, str(error)
    if isinstance(error, KeyboardInterrupt):
        return KILLED, interruption(error)
    if isinstance(error, SystemExit):  # submitit's exit after requeueing a preempted or timed-out SLURM job
        return KILLED, f"the process exited in training (code {error.code}): its SLURM job was preempted or timed out"
    if isinstance(error, Exception):
        return CRASHED, failure_reason(error)
    return CRASHED, f"{type(error).__name__}: {error}"
