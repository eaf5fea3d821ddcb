"""The sweep engine behind the ``nnlab_optuna`` Hydra sweeper (``python experiments/run.py -m sweep=digits_smoke``).

The plugin (``hydra_plugins/nnlab_optuna_sweeper/``) is the front Hydra imports on every run; it loads
this module, and with it Optuna, only when a sweep starts, and hands it Hydra's settings, context and
command line.

``SweepEngine`` owns the Optuna study (space, storage, budget, sampler, pruner, heartbeats, retries) and the
sweep's MLflow parent run, and hands each batch of trials to Hydra's launcher as jobs: the basic launcher
runs them one after another in this process, ``hydra/launcher=joblib`` in parallel processes,
``hydra/launcher=submitit_local`` / ``submitit_slurm`` as cluster jobs. A job learns which trial it is
from ``sweep_trial.{study,storage,number}``; the launcher runs ``sweeps.trial.run_job`` in place of the
app's task, so ``train`` reports to the trial's pruner through a callback, in-process or not.

A launcher runs a batch to its end before the next starts, so a pruned trial's slot idles until then.
``hydra.sweeper.workers=N`` instead starts N processes of this same command, each running trials one
after another from the shared study: a slot is refilled as soon as its trial ends. More machines join
by running the same command against the same database (``hydra.sweeper.storage=postgresql://...``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import build
from experiments.exits import BAD_INPUT, FAILED, leave
from experiments.outcome import Pruned
from experiments.schema import ConfigError
from experiments.store import sqlite_path, store_folder
from experiments.tracking.mlflow_run import wait_for_uploads
from experiments.tracking.naming import flatten
from sweeps import trial as trial_module
from sweeps.config import default_storage, direction
from sweeps.config import settings as sweeper_settings
from sweeps.optuna_private import storage_of, trial_id
from sweeps.parent import TRACKING_ATTR, Parent
from sweeps.server import local_server
from sweeps.space import parse, to_text
from sweeps.study import (
    Heartbeat,
    ask,
    budget,
    budget_lock,
    grid_size,
    open_storage,
    open_study,
    progress,
    pruner,
    remaining,
    retry,
    running,
    sampler,
    startup_trials,
)
from sweeps.trial import OVERRIDES_ATTR, PRUNER_ATTR, conclude, run_job

log = logging.getLogger("nnlab.sweeps")

BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


class SweepEngine:
    """What ``NnlabOptunaSweeper`` does: built from its settings (``hydra.sweeper.*``), set up with Hydra's
    context, then ``sweep`` runs the study to its budget."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        with refusals():
            self.conf = sweeper_settings(settings)
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        # each job trains as its trial (run_job, not the app's task), reporting to the trial's pruner
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=run_job
        )

    def batch_size(self) -> int:
        """Trials launched together: ``hydra.sweeper.batch``, else the launcher's ``n_jobs`` (joblib), else one."""
        if self.conf.batch:
            return self.conf.batch
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1)
        return len(os.sched_getaffinity(0)) if n_jobs is None or n_jobs < 1 else int(n_jobs)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        with refusals():
            return self.run_sweep(arguments)

    def run_sweep(self, arguments: list[str]) -> list[JobReturn]:
        cfg, conf = self.config, self.conf
        space, rest = parse(flatten(conf.params), arguments)
        if not space.distributions:
            raise ConfigError(
                "the sweep has no search dimension: choose sweep=<name> (conf/sweep/) or give key=interval(...) "
                "or key=choice(...) on the command line"
            )
        self.check_fixed_values([*space.fixed, *rest])
        url = default_storage(conf, cfg.tracking)
        n_trials = budget(conf, space)
        if conf.dry_run:
            print(preview(conf, space, rest, url, n_trials, cfg, self.batch_size()))
            return []
        study = open_study(
            conf, open_storage(url, conf.heartbeat), space, direction(conf, cfg.train.objective), n_trials
        )
        tracking = OmegaConf.merge(cfg.tracking, {"uri": conf.tracking_uri} if conf.tracking_uri else {})
        if conf.worker >= 0:  # one of the processes that `workers > 1` started: the driver owns the parent run
            parent = Parent(tracking, conf.study_name, conf.parent_run_id) if conf.parent_run_id else None
            return self.run_trials(study, space, rest, url, n_trials, parent, batch=1)
        so_far = progress(study, n_trials)
        log.info("Optuna study %s in %s: %s", conf.study_name, url, so_far)
        report = f"{python_command()} -m sweeps.report --study {conf.study_name} --storage {shlex.quote(url)}"
        if so_far.used:  # a rerun of a finished sweep: no trial to run, no parent run or report to redo
            log.info("%s; report: %s", budget_used(conf, space, n_trials), report)
            return []
        study.set_user_attr(PRUNER_ATTR, conf.pruner)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; optuna-dashboard shows the name
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([cfg.train.objective])
        with budget_lock(storage_of(study), conf.study_name):  # one parent run, however many sweepers start at once
            parent = Parent(tracking, conf.study_name) if cfg.tracking.enabled else None
        if parent is not None:
            parent.describe(conf, space, url, rest)
            study.set_user_attr(TRACKING_ATTR, {"uri": parent.uri, "experiment": tracking.experiment})
        returns: list[JobReturn] = []
        finished, worker_codes = False, []
        try:
            if conf.workers > 1:
                worker_codes = self.run_workers(parent)
            else:
                returns = self.run_trials(study, space, rest, url, n_trials, parent, self.batch_size())
            finished = remaining(study, n_trials) == 0
        finally:
            wait_for_uploads()  # the trials' runs closed in the background, before the parent sums them up
            if parent is not None:
                parent.summarize(study, cfg.train.objective)
                others = running(study)  # another machine's trials: the parent stays open for them
                if others:
                    log.info("the parent run stays RUNNING: trials %s of other processes run", others)
                else:
                    parent.close(finished)
        summary(study, cfg.train.objective, n_trials)
        log.info("report: %s", report)
        if any(worker_codes) and not finished:
            log.error("the workers exited with %s before the budget was used; see their messages above", worker_codes)
            sys.exit(FAILED)
        return returns

    def check_fixed_values(self, shared: list[str]) -> None:
        """Build what every trial builds from the values they share (the command line's and the sweep's fixed
        ones), so that a bad one (``optimizer.weight_decay=-1``) stops the sweep with its ``ConfigError``
        before a study, a parent run or any trial exists, instead of failing every trial."""
        try:
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(shared))
        except Exception as err:  # a group option or value that does not compose: every trial would fail so
            raise ConfigError(f"the values every trial shares do not compose: {err}".replace("\n", " ")) from None
        with open_dict(job):
            del job["hydra"]
        build.parts(job)

    def run_trials(self, study, space, rest, url, n_trials, parent, batch) -> list[JobReturn]:
        """Ask for ``batch`` trials at a time and launch them until the budget is used.

        When the budget is used but trials of other processes still run, it waits: one of them may have
        died, and its trial is then failed after the grace period and queued again.
        """
        if batch > 1:  # the launcher's worker processes start after this: divide the BLAS threads between them
            threads = str(max(1, len(os.sched_getaffinity(0)) // batch))
            os.environ.update(dict.fromkeys(BLAS_VARIABLES, threads))
        log.info("%d trial(s) at a time through %s", batch, type(self.launcher).__name__)
        trial_module.IN_SWEEP_PROCESS = True  # jobs run here leave their runs' uploads to finish in the background
        try:
            with build.reusing_datasets():  # the trials run here read their data set once
                return self.launch_until_used(study, space, rest, url, n_trials, parent, batch)
        finally:
            wait_for_uploads()

    def launch_until_used(self, study, space, rest, url, n_trials, parent, batch) -> list[JobReturn]:
        conf = self.conf
        returns: list[JobReturn] = []
        clock = Clock(n_trials, batch)
        while True:
            trials = ask(study, n_trials, conf.heartbeat, parent and parent.fail_child, count=batch)
            if not trials:
                others = running(study)
                if not others:
                    return returns
                log.info("budget used; waiting for trials %s of other processes", others)
                time.sleep(min(conf.heartbeat.interval, 2))
                continue
            jobs = []
            for trial in trials:
                sampled = space.overrides(space.suggest(trial))
                spec = {"study": conf.study_name, "storage": url, "number": trial.number}
                job = rest + sampled + [f"sweep_trial.{k}={to_text(v)}" for k, v in spec.items()]
                trial.set_user_attr(OVERRIDES_ATTR, rest + sampled)  # what sweeps.rerun runs it again with
                job += [f"tracking.parent_run_id={parent.run_id}"] if parent else []
                job += [f"tracking.uri={conf.tracking_uri}"] if conf.tracking_uri else []
                jobs.append(job + [f"hydra.sweep.subdir={trial.number}"])  # the job's folder: its trial number
                log.info("trial %d: %s", trial.number, " ".join(sampled))
            with contextlib.ExitStack() as beats:
                for trial in trials:
                    beats.enter_context(Heartbeat(storage_of(study), trial_id(trial)))
                try:
                    results = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
                except KeyboardInterrupt:
                    requeue(study, trials, KeyboardInterrupt("interrupted; queued again"))  # a rerun resumes them
                    raise
                except Exception as err:  # the launcher could not start them (sbatch refused): none of them ran
                    requeue(study, trials, err)
                    raise ConfigError(launch_failed(self.launcher, [t.number for t in trials], err)) from None
            for trial, result in zip(trials, results):
                value, error = job_outcome(result)
                conclude(study, trial, value, error)
            returns.extend(results)
            clock.log(study)

    def run_workers(self, parent) -> list[int]:
        """``workers`` processes of this command, each running trials one after another, with cores // workers
        BLAS threads each; with ``mlflow_server``, they log through a local MLflow server."""
        conf, cfg = self.conf, self.config
        threads = str(max(1, len(os.sched_getaffinity(0)) // conf.workers))
        env = os.environ | dict.fromkeys(BLAS_VARIABLES, threads)
        arguments = [*cfg.hydra.overrides.hydra, *cfg.hydra.overrides.task]
        server = conf.mlflow_server and parent is not None and sqlite_path(parent.uri) is not None
        root = store_folder(cfg.tracking)
        context = (
            local_server(parent.uri, (root / "artifacts").as_uri(), root / "optuna")
            if server
            else contextlib.nullcontext(None)
        )
        log.info("%d workers with %s BLAS thread(s) each", conf.workers, threads)
        with context as server:
            if server is not None:
                server.wait_ready()  # workers give an unreachable server only experiments.store.SERVER_TIMEOUT
            processes = []
            for index in range(conf.workers):
                command = [sys.executable, "-m", "experiments.run", "-m", *arguments, f"hydra.sweeper.worker={index}"]
                command += [f"hydra.sweeper.parent_run_id={parent.run_id}"] if parent else []
                command += [f"hydra.sweeper.tracking_uri={server.uri}"] if server else []
                processes.append(subprocess.Popen(command, env=env, cwd=os.getcwd()))
            try:
                codes = [p.wait() for p in processes]
            except KeyboardInterrupt:
                codes = [p.wait() for p in processes]  # they got the Ctrl-C too
                raise
        if any(codes):
            log.error("worker exit codes: %s", codes)
        return codes


class Clock:
    """The sweep's expected remaining time, logged after each batch: the mean wall time of this process's
    batches so far times the batches its trials left to run need (other processes and machines sharing the
    study shorten it; pruning makes later trials shorter or longer as it starts and stops cutting)."""

    def __init__(self, n_trials: int, batch: int) -> None:
        self.n_trials, self.batch, self.start, self.batches = n_trials, batch, time.monotonic(), 0

    def log(self, study: optuna.Study) -> None:
        self.batches += 1
        elapsed = time.monotonic() - self.start
        left = remaining(study, self.n_trials)
        if left == 0:
            return
        seconds = elapsed / self.batches * math.ceil(left / self.batch)
        end = time.strftime("%H:%M", time.localtime(time.time() + seconds))
        log.info("%d trial(s) to run: about %s more (until about %s), at %.0f s a trial so far",
                 left, duration(seconds), end, elapsed / (self.batches * self.batch))  # fmt: skip


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def preview(conf, space, rest: list[str], url: str, n_trials: int, cfg: DictConfig, batch: int) -> str:
    """What ``hydra.sweeper.dry_run=true`` prints instead of running: the space, the values every trial
    shares, and the settings (budget, sampler and pruner with the arguments they will get, storage, launcher)."""
    study_sampler, study_pruner = sampler(conf.sampler, space, n_trials=n_trials), pruner(conf.pruner)  # checked
    sampler_args = {k: v for k, v in conf.sampler.items() if k != "_target_"}
    if isinstance(study_sampler, optuna.samplers.TPESampler) and sampler_args.get("n_startup_trials") is None:
        sampler_args["n_startup_trials"] = startup_trials(n_trials)
    pruner_args = {k: v for k, v in conf.pruner.items() if k != "_target_"}
    lines = [f"sweep {conf.study_name}: {n_trials} trials, {direction(conf, cfg.train.objective)} "
             f"{cfg.train.objective}, storage {url}", "search space:"]  # fmt: skip
    lines += [f"  {key}: {describe(dist)}" for key, dist in space.distributions.items()]
    lines += ["fixed for every trial:"] + [f"  {value}" for value in [*space.fixed, *rest]]
    for name, chosen, given in (("sampler", study_sampler, sampler_args), ("pruner", study_pruner, pruner_args)):
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        lines += [f"{name}: {type(chosen).__name__} {shown} (Optuna's defaults for the rest)"]
    launcher = cfg.hydra.launcher.get("_target_", "?").rsplit(".", 1)[-1]
    runs = f"{conf.workers} worker processes" if conf.workers > 1 else f"{batch} at a time through {launcher}"
    tracked = f"MLflow on (tracking.experiment={cfg.tracking.experiment})" if cfg.tracking.enabled else "MLflow off"
    lines += [f"trials: {runs}; {tracked}", "(a dry run: nothing was created; run it without hydra.sweeper.dry_run)"]
    return "\n".join(lines)


def describe(dist: optuna.distributions.BaseDistribution) -> str:
    """A distribution as a reader wants it: ``float in [0.001, 0.5], log scale``, ``one of [a, b]``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"one of {list(dist.choices)}"
    kind = "float" if isinstance(dist, optuna.distributions.FloatDistribution) else "int"
    step = f", step {dist.step}" if dist.step not in (None, 1) or (kind == "float" and dist.step) else ""
    return f"{kind} in [{dist.low:g}, {dist.high:g}]{', log scale' if dist.log else ''}{step}"


def job_outcome(result: JobReturn) -> tuple[Any, BaseException | None]:
    """A launched job's (value, exception). Hydra's public accessor re-raises a failed job's exception after
    writing "Error executing job with overrides ..." to stderr; a pruned trial is no error, so its line is dropped."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return result.return_value, None
    except BaseException as err:  # every failed job is concluded
        if not isinstance(err, Pruned):
            sys.stderr.write(said.getvalue())
        return None, err


@contextlib.contextmanager
def refusals():
    """A bad sweep setting or store ends the command with its one-paragraph message and exit code 2
    (``experiments.exits``)."""
    try:
        yield
    except BAD_INPUT as err:
        leave(err)


def requeue(study: optuna.Study, trials: list[optuna.Trial], error: BaseException) -> None:
    """``trials`` failed with ``error`` and queued again: the same sweep command runs them."""
    for trial in trials:
        conclude(study, trial, error=error)
        retry(study, storage_of(study).get_trial(trial_id(trial)), max_retry=sys.maxsize)


def launch_failed(launcher, numbers: list[int], err: Exception) -> str:
    """What a sweep says when its launcher could not start trials ``numbers``."""
    cause = " ".join(str(err).split())[:600]
    return (
        f"{type(launcher).__name__} could not start trial(s) {', '.join(map(str, numbers))}: {type(err).__name__}: "
        f"{cause}. They are queued again and the sweep stopped. Fix the launcher's settings (hydra.launcher.*) or "
        "what it needs on this machine (for SLURM: sbatch and sinfo must reach the cluster's controller), then run "
        "the same command again to go on."
    )


def python_command() -> str:
    """How to run this Python in a printed command: ``python`` when that is the one first on PATH (an active
    virtual environment), else its path (``.venv/bin/python experiments/run.py ...`` with none active)."""
    found = shutil.which("python")
    here = os.path.dirname(os.path.abspath(sys.executable))
    if found is not None and os.path.dirname(os.path.abspath(found)) == here:
        return "python"
    return shlex.quote(sys.executable)


def budget_used(conf, space, n_trials: int) -> str:
    """What a rerun of a sweep whose budget is used says: that, and how to run more."""
    size = grid_size(conf, space)
    if size is not None and size <= conf.n_trials:
        return f"all {size} points of the grid are run: nothing to run. To run more, add values to its dimensions"
    return (
        f"the budget of {n_trials} trials is used: nothing to run. To run more, raise it "
        f"(hydra.sweeper.n_trials=<more than {n_trials}>) in the same command"
    )


def summary(study, objective: str, n_trials: int) -> None:
    from sweeps.report import edges

    log.info("study %s: %s", study.study_name, progress(study, n_trials))
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = study.best_trial
        log.info("best: trial %d, %s = %.4f, %s", best.number, objective, best.value, best.params)
        for flag in edges(best):
            log.warning("best trial at the edge: %s", flag)
