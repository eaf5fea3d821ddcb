"""A trial that runs again continues its own MLflow run: the run an earlier job of it left unfinished (its
SLURM job preempted, timed out or killed and requeued; or a trial failed when its process died, queued again
and run by a later sweep command), from the last epoch whose training state that job saved.

The run is found by its tags, ``nnlab.study`` and ``nnlab.trial`` (the trial's number, or the number of a
failed trial this one runs again), under the sweep's parent run. Training then goes on as ``resume.py``
continues a run: weights, optimizer, schedule and random streams restored, bit-identical to a trial that did
not stop. A run without a saved state (stopped in its first epoch, or ``tracking.checkpoints.policy=none``) is
left as it ended, and the trial starts a new one.

A SLURM job's preemption signal is held until the end of the batch under way (``PreemptionPoint``): submitit's
handler, which requeues the job and exits, would otherwise run wherever the signal lands, in the middle of an
import or of a write to the store.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from experiments.callbacks import Callback
from experiments.runs import RunError, latest_training_state
from experiments.store import resolve_store
from experiments.tracking import tags as T
from experiments.train import Resume
from sweeps.optuna_private import storage_of, trial_id

log = logging.getLogger("nnlab.sweeps")


def continuation(cfg: DictConfig, trial: optuna.Trial, folder: Path) -> Resume | None:
    """How to continue the run an earlier job of ``trial`` left (its state downloaded into ``folder``), or None
    when there is none to continue. The run is retagged as this trial's and its ``nnlab.requeues`` counted up."""
    if not cfg.tracking.enabled or cfg.tracking.checkpoints.policy == "none":
        return None
    client = MlflowClient(resolve_store(cfg.tracking)[0])
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return None
    earlier = storage_of(trial.study).get_trial(trial_id(trial)).system_attrs.get("retry_history", [])
    for number in [trial.number, *reversed(earlier)]:  # the newest attempt first
        conditions = [
            f"tags.`{T.STUDY}` = '{trial.study.study_name}'",
            f"tags.`{T.TRIAL}` = '{number}'",
            "attributes.status != 'FINISHED'",
        ]
        if cfg.tracking.parent_run_id:
            conditions.append(f"tags.`mlflow.parentRunId` = '{cfg.tracking.parent_run_id}'")
        runs = client.search_runs(
            [experiment.experiment_id], " and ".join(conditions), order_by=["attributes.start_time DESC"]
        )
        if runs:
            return resumable(client, runs[0], trial, cfg.tracking.run_name, folder)
    return None


def resumable(client: MlflowClient, run, trial: optuna.Trial, run_name: str, folder: Path) -> Resume | None:
    """``run`` continued from its newest readable training state, or None when it saved none."""
    run_id = run.info.run_id
    try:
        state_file, epoch = latest_training_state(client, run_id, folder)
    except RunError:
        log.info("trial %d: its earlier run %s saved no training state; a new run starts", trial.number, run_id)
        return None
    requeues = int(run.data.tags.get(T.REQUEUES, "0")) + 1
    client.set_tag(run_id, T.REQUEUES, str(requeues))
    if run.data.tags.get(T.TRIAL) != str(trial.number):  # a failed trial's run, continued by its retry
        client.set_tag(run_id, T.TRIAL, str(trial.number))
        client.set_tag(run_id, "mlflow.runName", run_name)
    log.info("trial %d continues MLflow run %s after epoch %d (continued %d time(s))", trial.number, run_id, epoch,
             requeues)  # fmt: skip
    return Resume(run_id, state_file)


class PreemptionPoint(Callback):
    """Where a held preemption signal (``hold``) takes effect: at the end of a batch or epoch, after the epoch's
    state is saved; the signal's own handler then runs (submitit's: requeue and exit). One that comes after the
    last epoch is dropped: the job ends with its trial."""

    held: list[tuple[signal.Handlers, int]] = []  # (the handler, the signal) of a signal that came

    @classmethod
    def hold(cls, signum: int) -> None:
        """From now on ``signum`` is held for a ``PreemptionPoint`` to deliver (a job's first act)."""
        handler = signal.getsignal(signum)
        signal.signal(signum, lambda number, frame: cls.held.append((handler, number)))

    def on_batch_end(self, loop, step: int, num_batches: int, loss: float) -> None:
        self.deliver()

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        self.deliver()

    def deliver(self) -> None:
        if self.held:
            handler, number = self.held.pop()
            log.info("the job's preemption signal, held until the end of this batch, takes effect")
            handler(number, None)
