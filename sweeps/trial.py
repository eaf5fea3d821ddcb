"""One trial: ``train(cfg)`` reporting to the study's pruner every epoch, and its outcome told to the study.

``run_job`` is the task the ``nnlab_optuna`` sweeper's launcher runs for each job: the trial named by
``cfg.sweep_trial``, rebuilt from storage, in whatever process the launcher gives it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, open_dict
from optuna.trial import TrialState

from experiments.callbacks import Callback
from experiments.outcome import Pruned
from experiments.tracking import tags as T
from sweeps.config import report_metric
from sweeps.optuna_private import storage_of, study_id, trial_id

log = logging.getLogger("nnlab.sweeps")

PRUNER_ATTR = "nnlab.pruner"  # study user attribute: the pruner's options, for jobs in other processes
OVERRIDES_ATTR = "overrides"  # trial user attribute: the overrides it ran with (sweeps.rerun runs them again)
IN_SWEEP_PROCESS = False  # set by the engine: jobs run in its process, which waits for MLflow's uploads at its end


class Reporter(Callback):
    """A trial's callback: report the metric every epoch, raise ``Pruned`` when the pruner says so, but for
    the run's last epoch ``epochs``: a trial that has trained to its end completes with its value (Hyperband's
    top rung would otherwise prune finished trials and drop their results)."""

    def __init__(self, trial: optuna.Trial, metric: str, epochs: int | None = None) -> None:
        self.trial, self.metric, self.epochs = trial, metric, epochs

    def on_train_start(self, loop) -> None:
        """A continued run's epochs (``sweeps.continuation``) that this trial has not reported: a retried trial's."""
        reported = storage_of(self.trial.study).get_trial(trial_id(self.trial)).intermediate_values
        for row in loop.history:
            value = row.get(self.metric)
            if row["epoch"] not in reported and value is not None and math.isfinite(value):
                self.trial.report(value, row["epoch"])

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        epoch = loop.epoch
        if epoch == 1 and self.run_id is not None:
            self.trial.set_user_attr("mlflow_run_id", self.run_id)
        value = metrics.get(self.metric)
        if value is None:  # not finite this epoch: nothing to report
            return
        self.trial.report(value, epoch)
        if epoch != self.epochs and self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            raise Pruned(f"{pruner} pruned the trial at epoch {epoch} ({self.metric} = {value:.4f})")


def run(
    cfg: DictConfig, trial: optuna.Trial, parent_run_id: str | None = None, overrides: list[str] | None = None
) -> float:
    """``train(cfg)`` as trial ``trial``: its MLflow run tagged and nested, reporting every epoch.

    Returns the objective (NaN for a diverged run, whose reason goes to the trial's ``fail_reason``);
    raises ``Pruned`` when pruned and whatever else ``train`` raises (its run already closed).
    """
    from experiments.outcome import RunFailed
    from experiments.tracking.naming import short_setting
    from experiments.train import train
    from sweeps.continuation import PreemptionPoint, continuation

    study_name = trial.study.study_name
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    with open_dict(cfg):
        cfg.tracking.tags[T.STUDY] = study_name
        cfg.tracking.tags[T.TRIAL] = str(trial.number)
        if overrides is not None:  # under Hydra, the run takes them from the job
            cfg.tracking.tags[T.OVERRIDES] = " ".join(overrides)
    if parent_run_id:
        cfg.tracking.parent_run_id = parent_run_id
    shown = " ".join(short_setting(key, value) for key, value in trial.params.items())
    preset = f" ({cfg.tracking.run_name})" if cfg.tracking.run_name else ""  # a preset's name, after the trial's
    cfg.tracking.run_name = f"#{trial.number} {shown}{preset}"  # under the parent run "sweep <study>"
    try:
        with tempfile.TemporaryDirectory(prefix="nnlab-trial-") as folder:  # an earlier job's state, if any
            resume = continuation(cfg, trial, Path(folder))  # a requeued or re-run trial goes on with its run
            reporter = Reporter(trial, report_metric(cfg.train.objective), cfg.train.epochs)
            result = train(cfg, callbacks=[reporter, PreemptionPoint()], resume=resume)
    except RunFailed as err:
        if err.run_id:
            trial.set_user_attr("mlflow_run_id", err.run_id)
        raise
    if result.run_id:  # also for a run that ends before its first epoch's report
        trial.set_user_attr("mlflow_run_id", result.run_id)
    trial.set_user_attr("epochs", len(result.history))
    trial.set_user_attr("train_seconds", sum(row.get("epoch_time", 0.0) for row in result.history))  # sweeps.bench
    if result.status == T.PRUNED:
        raise Pruned(result.reason)
    if result.status == T.DIVERGED:
        trial.set_user_attr("fail_reason", result.reason)
    return result.objective


def run_job(cfg: DictConfig) -> float:
    """A multirun job of the ``nnlab_optuna`` sweeper: ``run`` as the trial ``cfg.sweep_trial`` names."""
    spec = cfg.sweep_trial
    study = load_study(spec.study, spec.storage)
    number = storage_of(study).get_trial_id_from_study_id_trial_number(study_id(study), spec.number)
    ended = storage_of(study).get_trial(number)
    if ended.state.is_finished():  # a job requeued after its trial's end (a late preemption signal)
        log.info("trial %d already ended %s: nothing to run", spec.number, ended.state.name)
        return ended.value if ended.value is not None else math.nan
    try:
        return run(cfg, optuna.Trial(study, number))
    finally:
        if not IN_SWEEP_PROCESS:  # a launcher's process may end with the job: its run is closed first
            from experiments.tracking.mlflow_run import wait_for_uploads

            wait_for_uploads()


@functools.lru_cache(maxsize=8)
def load_study(name: str, url: str) -> optuna.Study:
    """The study of a job, with the sweep's pruner (kept in the study's user attributes); cached per process."""
    from sweeps.study import open_storage, pruner

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None))
    study.pruner = pruner(study.user_attrs.get(PRUNER_ATTR, {"_target_": "optuna.pruners.NopPruner"}))
    return study


def conclude(
    study: optuna.Study, trial: optuna.Trial, value: Any = None, error: BaseException | None = None
) -> TrialState:
    """Tell the study how ``trial`` ended: COMPLETE, PRUNED, or FAIL with ``fail_reason`` (NaN or an exception)."""
    if isinstance(error, Pruned):
        trial.set_user_attr("prune_reason", str(error))
        state, values = TrialState.PRUNED, None
    elif error is not None:
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
        state, values = TrialState.FAIL, None
    elif not (isinstance(value, int | float) and math.isfinite(value)):
        stored = storage_of(study).get_trial(trial_id(trial)).user_attrs  # a job elsewhere may have set the reason
        if "fail_reason" not in stored:
            trial.set_user_attr("fail_reason", f"the objective is {value!r}, not a finite number")
        state, values = TrialState.FAIL, None
    else:
        state, values = TrialState.COMPLETE, float(value)
    study.tell(trial, values, state=state)
    attrs = storage_of(study).get_trial(trial_id(trial)).user_attrs
    reason = attrs.get("fail_reason") or attrs.get("prune_reason") or ""
    log.info("trial %d %s%s", trial.number, state.name, f" ({values:.4f})" if values is not None else f": {reason}")
    return state
