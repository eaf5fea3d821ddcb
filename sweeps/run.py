"""The sweep driver: ``python -m sweeps.run sweep=lr_momentum_l2 sweep.n_trials=20 sweep.workers=2 train.epochs=10``.

Arguments are Hydra overrides of the training config (``conf/config.yaml``) and of the sweep
(``sweep=<name>`` from conf/sweep/, ``sweep.<key>=...``); arguments in sweep syntax
(``optimizer.lr='tag(log,interval(1e-4,1))'``) add search dimensions or replace the sweep's own.
Rerunning the same command resumes the study. With ``sweep.workers=N`` it runs N worker processes,
each with cores // N BLAS threads; more workers join from other machines by running the same command
against the same database (``sweep.storage=postgresql://...``) and MLflow store (``tracking.uri``).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import hydra
import optuna
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments.schema import ConfigError, validate
from experiments.tracking import flatten
from sweeps import config as sweep_config
from sweeps import trial as trial_module
from sweeps.config import SweepConf
from sweeps.optuna_private import storage_of, trial_id
from sweeps.parent import Parent
from sweeps.space import Space, parse
from sweeps.study import Heartbeat, ask, budget, budget_lock, open_storage, open_study, remaining, retry, running

log = logging.getLogger("nnlab.sweeps")

CONF = Path(__file__).resolve().parents[1] / "conf"
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def compose(overrides: list[str]) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides``, as ``experiments/run.py`` would get it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra.compose(config_name="config", overrides=overrides)


def split(arguments: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(overrides of the sweep, overrides of training, search dimensions in sweep syntax)."""
    parser = OverridesParser.create()
    sweep, training, dimensions = [], [], []
    for argument in arguments:
        if argument.startswith("sweep="):
            argument = "+" + argument
        override = parser.parse_override(argument)
        key = override.get_key_element().lstrip("+~")
        if key == "sweep" or key.startswith("sweep."):
            sweep.append(argument)
        elif override.is_sweep_override():
            dimensions.append(argument)
        else:
            training.append(argument)
    return sweep, training, dimensions


class Sweep:
    """Everything the driver and its workers share: settings, space, storage, the training overrides."""

    def __init__(self, arguments: list[str]) -> None:
        sweep_overrides, self.training, dimensions = split(arguments)
        self.cfg = compose(sweep_overrides + self.training)
        validate(self.cfg)
        self.conf: SweepConf = sweep_config.settings(self.cfg.get("sweep"))
        # a plain override of a key the sweep samples or fixes takes it out of the space: the command line wins
        self.space: Space = parse(flatten(self.conf.params), self.training + dimensions)[0]
        if not self.space.distributions:
            raise ConfigError("the sweep has no search dimension: give sweep=<name> or key=interval(...) and such")
        if self.space.fixed:  # what every trial shares, checked before the first one
            self.cfg = compose(sweep_overrides + self.training + self.space.fixed)
            validate(self.cfg)
        self.objective = self.cfg.train.objective
        self.direction = sweep_config.direction(self.conf, self.objective)
        self.storage_url = sweep_config.default_storage(self.conf, self.cfg.tracking.dir)
        self.n_trials = budget(self.conf, self.space)

    def study(self, worker: int = 0) -> optuna.Study:
        storage = open_storage(self.storage_url, self.conf.heartbeat)
        return open_study(self.conf, storage, self.space, self.direction, worker)

    def trial_config(self, params: dict) -> DictConfig:
        return compose(self.training + self.space.overrides(params))


def work(sweep: Sweep, worker: int = 0, parent_run_id: str | None = None, tracking_uri: str | None = None) -> int:
    """Ask for trials and run them until the budget is used; returns how many this worker ran.

    When the budget is used but other workers' trials still run, it waits: one of them may have died,
    and its trial is then failed after the grace period and queued again.
    """
    study = sweep.study(worker)
    tracking = OmegaConf.merge(sweep.cfg.tracking, {"uri": tracking_uri} if tracking_uri else {})
    parent = Parent(tracking, sweep.conf.study_name, parent_run_id) if parent_run_id else None
    on_failed = parent.fail_child if parent else None
    ran = 0
    while True:
        trials = ask(study, sweep.n_trials, sweep.conf.heartbeat, on_failed)
        if not trials:
            if not running(study):
                return ran
            log.info("budget used; waiting for trials %s of other workers", running(study))
            time.sleep(sweep.conf.heartbeat.interval)
            continue
        ran += 1
        run_one(sweep, study, trials[0], parent_run_id, tracking_uri)


def run_one(
    sweep: Sweep, study: optuna.Study, trial: optuna.Trial, parent_run_id: str | None, tracking_uri: str | None
) -> None:
    """One trial, told to the study whatever happens; Ctrl-C fails it, queues it again and propagates."""
    with Heartbeat(storage_of(study), trial_id(trial)):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            params = sweep.space.suggest(trial)
            log.info("trial %d: %s", trial.number, " ".join(sweep.space.overrides(params)))
            cfg = sweep.trial_config(params)
            if tracking_uri:
                cfg.tracking.uri = tracking_uri
            value = trial_module.run(cfg, trial, parent_run_id, sweep.training + sweep.space.overrides(params))
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (KeyboardInterrupt); queued again")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            retry(study, storage_of(study).get_trial(trial_id(trial)), max_retry=sys.maxsize)
            raise
        except Exception as err:
            if not isinstance(err, trial_module.Pruned):
                log.exception("trial %d raised", trial.number)
            trial_module.conclude(study, trial, error=err)
        else:
            trial_module.conclude(study, trial, value)


def spawn_workers(
    arguments: list[str], count: int, parent_run_id: str | None, tracking_uri: str | None
) -> list[subprocess.Popen]:
    """``count`` worker processes of the same sweep, each with cores // count BLAS threads."""
    cores = len(os.sched_getaffinity(0))
    threads = str(max(1, cores // count))
    env = os.environ | dict.fromkeys(BLAS_VARIABLES, threads)
    log.info("%d workers with %s BLAS thread(s) each", count, threads)
    workers = []
    for index in range(count):
        command = [sys.executable, "-m", "sweeps.run", *arguments, f"--worker={index}"]
        command += [f"--parent={parent_run_id}"] if parent_run_id else []
        command += [f"--tracking-uri={tracking_uri}"] if tracking_uri else []
        workers.append(subprocess.Popen(command, env=env, cwd=os.getcwd()))
    return workers


def drive(arguments: list[str]) -> optuna.Study:
    """Open the study and its MLflow parent run, run the workers, summarize; returns the study."""
    from contextlib import nullcontext

    from sweeps.server import local_server

    sweep = Sweep(arguments)
    conf, tracking = sweep.conf, sweep.cfg.tracking
    study = sweep.study()
    study.set_user_attr(trial_module.PRUNER_ATTR, conf.pruner)
    study.set_user_attr("nnlab.overrides", sweep.training)
    done = len(study.get_trials(deepcopy=False))
    log.info("study %s in %s: %d of %d trials so far", conf.study_name, sweep.storage_url, done, sweep.n_trials)
    if conf.workers > 1 and sweep.storage_url.startswith("sqlite"):
        log.warning("several workers on a SQLite study storage may fail with 'database is locked': use a journal file")
    with budget_lock(storage_of(study), conf.study_name):  # drivers started at once on two machines share one parent
        parent = Parent(tracking, conf.study_name) if tracking.enabled else None
    if parent is not None:
        parent.describe(conf, sweep.space, sweep.storage_url, sweep.training)
    finished = False
    try:
        if conf.workers == 1:
            work(sweep, 0, parent and parent.run_id)
        else:
            server = conf.mlflow_server and not tracking.uri
            root = Path(tracking.dir).expanduser().resolve()
            context = (
                local_server(parent.uri, (root / "artifacts").as_uri(), root / "optuna")
                if parent is not None and server
                else nullcontext(None)
            )
            with context as server:
                workers = spawn_workers(arguments, conf.workers, parent and parent.run_id, server and server.uri)
                try:
                    if server is not None:
                        server.wait_ready()  # while the workers start
                    codes = [w.wait() for w in workers]
                except KeyboardInterrupt:
                    codes = [w.wait() for w in workers]  # they got the Ctrl-C too
                    raise
                except RuntimeError:  # the server did not start
                    for w in workers:
                        w.terminate()
                    raise
                if any(codes):
                    log.error("worker exit codes: %s", codes)
        finished = remaining(study, sweep.n_trials) == 0  # the storage reads what the workers wrote
    finally:
        if parent is not None:
            parent.summarize(study, sweep.objective)
            parent.close(finished)
    summary(study, sweep)
    return study


def summary(study: optuna.Study, sweep: Sweep) -> None:
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    log.info("study %s: %d trials (%s)", study.study_name, len(states), counts)
    if any(s == "complete" for s in states):
        best = study.best_trial
        log.info("best: trial %d, %s = %.4f, %s", best.number, sweep.objective, best.value, best.params)
    log.info("report: python -m sweeps.report --study %s --storage %s", study.study_name, sweep.storage_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.run", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: sweep=<name>, sweep.n_trials=20, train.epochs=5")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the driver on its worker processes
    parser.add_argument("--parent", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if args.worker is not None:
            work(Sweep(args.overrides), args.worker, args.parent, args.tracking_uri)
        else:
            drive(args.overrides)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted: rerun the same command to resume the study")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
