"""The Optuna study of a sweep: storage, sampler, pruner, trial budget and dead-worker detection.

Storage is an Optuna journal file by default (safe for several processes on one machine), or any
database URL that SQLAlchemy knows (PostgreSQL for workers on several machines). Both record a
heartbeat per running trial: Optuna's own for databases, and here, for journal files, which Optuna 5
does not cover, the modification time of a file per trial next to the journal. A running trial whose
heartbeat is older than the grace period is failed (with ``fail_reason``) and queued again.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import logging
import random
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.utils import get_class
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from experiments.schema import ConfigError
from experiments.store import StoreError
from sweeps.config import PRUNERS, SAMPLERS, HeartbeatConf, SweeperConf
from sweeps.optuna_private import BaseHeartbeat, JournalFileStorage, stale_trial_ids, storage_of, study_id, unwrap
from sweeps.space import Space

log = logging.getLogger("nnlab.sweeps")
OPENERS_ATTR = "nnlab.openers"  # study user attribute: how many processes have opened the study to ask
WARNED: set[str] = set()  # said once per process, however often a study is opened


def open_storage(url: str, heartbeat: HeartbeatConf | None) -> BaseStorage:
    """A journal file storage for a path, or an RDB storage for a database URL; with heartbeats unless None."""
    if "://" not in url:
        if heartbeat is None:
            return JournalStorage(JournalFileBackend(url))
        return JournalFileStorage(url, heartbeat.interval, heartbeat.grace_period)
    beats = (
        {} if heartbeat is None else {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period}
    )
    engine = {"pool_pre_ping": True} if not url.startswith("sqlite") else None
    if url.startswith("postgresql"):  # an unreachable host is said in seconds, not after the OS's minutes
        engine |= {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                return RDBStorage(url, engine_kwargs=engine, **beats)
        except ImportError as err:
            raise ConfigError(
                f"hydra.sweeper.storage={url}: its driver is missing ({err}); pip install 'psycopg[binary]'"
            ) from err
        except SQLAlchemyError as err:
            refused = refusal(url, err)
            if refused is not None:
                raise StoreError(refused) from None
            if attempt == 2:
                raise
            time.sleep(1 + random.random())  # workers creating Optuna's tables in a new database at once: one wins


CONNECT_TIMEOUT = 10  # seconds to reach a database server
REFUSALS = (  # (what the server said, the fix): said at once in one paragraph, not retried
    (r'database "([^"]+)" does not exist', "create it (createdb {0}, or CREATE DATABASE {0}; as its owner)"),
    (r'role "([^"]+)" does not exist', "create the role (createuser {0}, or CREATE ROLE {0} LOGIN) or name another"),
    (r'password authentication failed for user "([^"]+)"', "give user {0}'s password in the URL (user:pass@host)"),
    (r"(Connection refused|timeout expired|could not translate host name[^\n]*)", "start the server, or check the URL"),
)


def refusal(url: str, err: SQLAlchemyError) -> str | None:
    """The one-paragraph message for a database that refused us for good (missing database or role, a bad password,
    no server), naming it and the fix; None for other errors (worth a retry)."""
    said = str(getattr(err, "orig", None) or err)
    for pattern, fix in REFUSALS:
        found = re.search(pattern, said)
        if found:
            shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)  # no password in the message
            return (
                f"hydra.sweeper.storage={shown}: {found.group(0)}. To fix it, {fix.format(found.group(1))}; or use "
                "another hydra.sweeper.storage (null: a journal file beside the MLflow store, for one machine)."
            )
    return None


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` (only allowed inside ``optimize``): the budget stops us."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def sampler(
    node: dict[str, Any], space: Space, stream: list[int] | None = None, n_trials: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler of ``node`` (``{"_target_": "optuna.samplers.TPESampler", "seed": 0, ...}``).

    ``stream`` (``opener_stream``) is mixed into the configured seed so that no two openers of a study (workers,
    machines, restarts) draw the same points; not for the grid, whose seed numbers its points: every opener must
    share them. A TPE sampler without ``n_startup_trials`` samples ``startup_trials(n_trials)`` at random first.
    """
    kwargs = dict(node)
    cls = target_class("sampler", kwargs.pop("_target_"), optuna.samplers.BaseSampler)
    if issubclass(cls, optuna.samplers.GridSampler):
        return GridSampler(space.grid(), **(kwargs | {"seed": kwargs.get("seed") or 0}))
    if kwargs.get("seed") is not None and stream:
        kwargs["seed"] = int(np.random.SeedSequence([kwargs["seed"], *stream]).generate_state(1)[0])
    if issubclass(cls, optuna.samplers.TPESampler) and kwargs.get("n_startup_trials") is None and n_trials:
        kwargs["n_startup_trials"] = startup_trials(n_trials)
    if issubclass(cls, optuna.samplers.GPSampler):
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise ConfigError(
                "hydra/sweeper/sampler=gp needs PyTorch: Optuna's GPSampler is written in torch. "
                'pip install -e ".[gp]" (or torch), or use tpe or cmaes.'
            ) from err
    if issubclass(cls, optuna.samplers.CmaEsSampler) and not all(
        isinstance(d, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution)
        for d in space.distributions.values()
    ):
        log.warning("CMA-ES samples only numeric dimensions; the categorical ones are sampled at random")
    return construct("sampler", cls, kwargs, SAMPLERS)


def startup_trials(n_trials: int) -> int:
    """TPE's random trials before it models the space, for a budget of ``n_trials``: a quarter of the budget,
    3 to 10 (Optuna's fixed 10 is most of a 12-trial sweep; ``sweeps.bench`` measured a quarter)."""
    return min(10, max(3, n_trials // 4))


def pruner(node: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner of ``node`` (``{"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, ...}``)."""
    kwargs = dict(node)
    cls = target_class("pruner", kwargs.pop("_target_"), optuna.pruners.BasePruner)
    return construct("pruner", cls, kwargs, PRUNERS)


def target_class(kind: str, target: str, base: type) -> type:
    try:
        cls = get_class(target)
    except Exception as err:
        cls = None
        cause = err
    else:
        cause = None
    options = ", ".join(SAMPLERS if kind == "sampler" else PRUNERS)
    if cls is None or not issubclass(cls, base):
        raise ConfigError(
            f"hydra.sweeper.{kind}._target_={target!r} is not allowed: it must name an Optuna {kind} class "
            f"(or choose hydra/sweeper/{kind}=<{options}>). Fix the override or the sweep config."
        ) from cause
    return cls


def construct(kind: str, cls: type, kwargs: dict[str, Any], options: dict[str, dict]) -> Any:
    """``cls(**kwargs)``, leaving out with a warning the keys that only the other known ``kind``s take (left
    from the sweep's config after ``hydra/sweeper/{kind}=...`` on the command line); others are errors."""
    accepted = set(inspect.signature(cls).parameters)
    known = set().union(*(inspect.signature(get_class(o["_target_"])).parameters for o in options.values()))
    for key in [k for k in kwargs if k not in accepted and k in known]:
        message = f"hydra.sweeper.{kind}.{key} is ignored: {cls.__name__} does not take it"
        if message not in WARNED:
            log.warning(message)
            WARNED.add(message)
        kwargs.pop(key)
    try:
        with warnings.catch_warnings():  # QMCSampler, PatientPruner, some CmaEsSampler arguments: "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"hydra.sweeper.{kind} ({cls.__name__}): {err}. Fix the override or the sweep config."
        ) from err


def grid_size(conf: SweeperConf, space: Space) -> int | None:
    """The number of points of the grid sampler's grid; None for any other sampler."""
    sampler_class = target_class("sampler", conf.sampler["_target_"], optuna.samplers.BaseSampler)
    if not issubclass(sampler_class, optuna.samplers.GridSampler):
        return None
    size = 1
    for values in space.grid().values():
        size *= len(values)
    return size


def budget(conf: SweeperConf, space: Space) -> int:
    """``n_trials``, or fewer when the grid sampler's grid is smaller."""
    size = grid_size(conf, space)
    return conf.n_trials if size is None else min(conf.n_trials, size)


def open_study(
    conf: SweeperConf, storage: BaseStorage, space: Space, direction: str, n_trials: int | None = None
) -> optuna.Study:
    """Create the study, or load it to resume, with its pruner and a sampler whose random stream is this
    opener's own (``opener_stream``); ``n_trials`` sizes TPE's random start (``startup_trials``)."""
    study = optuna.create_study(storage=storage, study_name=conf.study_name, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {conf.study_name} exists with direction {study.direction.name.lower()}, not {direction}: "
            "choose another hydra.sweeper.study_name."
        )
    study.sampler = sampler(conf.sampler, space, opener_stream(study), n_trials or conf.n_trials)
    study.pruner = pruner(conf.pruner)
    return study


def opener_stream(study: optuna.Study) -> list[int]:
    """What makes this opener's sampler stream its own: its number among the study's openers, counted in the
    study under ``budget_lock``, so that two processes or machines opening it at once get different numbers.
    The first opener gets [] (the configured seed as it is: a sweep run in one process is reproducible), the
    n-th [n] (a rerun of that sweep too); where no lock serializes the count (a database other than SQLite or
    PostgreSQL), a random number is added after the first."""
    storage = storage_of(study)
    with budget_lock(storage, study.study_name):
        index = int(study.user_attrs.get(OPENERS_ATTR, 0))
        study.set_user_attr(OPENERS_ATTR, index + 1)
    if index == 0:
        return []
    return [index] if serialized(storage) else [index, uuid.uuid4().int % 2**32]


def serialized(storage: BaseStorage) -> bool:
    """Whether ``budget_lock`` serializes the processes using ``storage`` (a file lock or an advisory lock)."""
    storage = unwrap(storage)
    if isinstance(storage, JournalFileStorage):
        return True
    return isinstance(storage, RDBStorage) and (
        storage.url.startswith("sqlite:///") or storage.engine.dialect.name == "postgresql"
    )


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget: all but the failed ones that were queued again (``retry``)."""
    retried = set().union(*(t.system_attrs.get("retry_history", []) for t in trials))
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in retried)]


def retry(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> bool:
    """Queue a failed trial again with its parameters and system attributes (a grid sampler's point), as
    Optuna's ``RetryHeartbeatStaleTrialCallback`` does, but not its user attributes (``fail_reason``);
    False once it has been retried ``max_retry`` times."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return False
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )
    return True


def remaining(study: optuna.Study, n_trials: int) -> int:
    """Trials still to ask for: the budget less the counted ones; queued (WAITING) trials are asked for too."""
    return to_run(study.get_trials(deepcopy=False), n_trials)


def to_run(trials: list[FrozenTrial], n_trials: int) -> int:
    """``remaining`` of these trials."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(n_trials - len(counted(trials)), 0) + waiting


@dataclass(frozen=True)
class Progress:
    """A study's trials against its budget, counted as ``remaining`` counts them: every trial uses the budget
    but a failed one that was queued again (``retried``; its queued copy counts instead)."""

    trials: int
    complete: int
    pruned: int
    failed: int
    retried: int  # of the failed ones
    running: int
    waiting: int
    budget: int
    to_run: int

    @property
    def used(self) -> bool:
        """Nothing to ask for and nothing running (a running trial's worker may have died: it may run again)."""
        return self.to_run == 0 and self.running == 0

    def __str__(self) -> str:
        states = [f"{self.complete} complete", f"{self.pruned} pruned", f"{self.failed} failed"]
        states[-1] += f", {self.retried} of them retried" if self.retried else ""
        states += [f"{self.running} running"] if self.running else []
        states += [f"{self.waiting} queued"] if self.waiting else []
        return (
            f"{self.trials} trial{'s' if self.trials != 1 else ''} in the study ({', '.join(states)}), "
            f"budget {self.budget}, {self.to_run} to run"
        )


def progress(study: optuna.Study, n_trials: int) -> Progress:
    """The study's trials by state and what is left of budget ``n_trials``, from one read of its trials."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    failed = sum(s == TrialState.FAIL for s in states)
    return Progress(
        trials=len(trials),
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=failed,
        retried=failed - sum(t.state == TrialState.FAIL for t in counted(trials)),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        budget=n_trials,
        to_run=to_run(trials, n_trials),
    )


def ask(
    study: optuna.Study,
    n_trials: int,
    heartbeat: HeartbeatConf,
    on_failed: Callable[[FrozenTrial], None] | None = None,
    count: int = 1,
) -> list[optuna.Trial]:
    """Up to ``count`` new trials within the budget (none when it is used), after failing stale ones."""
    with budget_lock(storage_of(study), study.study_name), warnings.catch_warnings():
        # we run the heartbeat thread ourselves (Heartbeat), as Study.optimize would
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        fail_stale(study, heartbeat.max_retry, on_failed)
        return [study.ask() for _ in range(min(count, remaining(study, n_trials)))]


def running(study: optuna.Study) -> list[int]:
    """Numbers of the trials running now (in any worker)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


@contextlib.contextmanager
def budget_lock(storage: BaseStorage, study_name: str) -> Iterator[None]:
    """Serialize "count, then ask" across workers so that the budget is met exactly.

    A file lock for a journal file or SQLite database, a PostgreSQL advisory lock for PostgreSQL;
    other databases go unlocked (a parallel sweep may run a trial or two more than the budget).
    """
    storage = unwrap(storage)
    if isinstance(storage, JournalFileStorage):
        lock_path = storage.path.with_name(storage.path.name + ".budget.lock")
    elif isinstance(storage, RDBStorage) and storage.url.startswith("sqlite:///"):
        lock_path = Path(storage.url.removeprefix("sqlite:///") + f".{study_name}.lock")
    else:
        lock_path = None
    if lock_path is not None:
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": f"nnlab:{study_name}"})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": f"nnlab:{study_name}"})
                connection.commit()
    else:
        yield


def fail_stale(
    study: optuna.Study, max_retry: int, on_failed: Callable[[FrozenTrial], None] | None = None
) -> list[int]:
    """Fail the running trials whose heartbeat stopped (a dead worker), with a reason, and queue them again.

    Returns the numbers of the trials failed here (another worker may fail some first).
    """
    storage = storage_of(study)
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return []
    grace = getattr(unwrap(storage), "grace_period", None) or 2 * storage.get_heartbeat_interval()  # Optuna's default
    reason = f"worker lost: no heartbeat for more than {grace} s"
    failed = []
    for trial_id in stale_trial_ids(storage, study_id(study)):
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        trial = storage.get_trial(trial_id)
        log.warning("trial %d failed: %s", trial.number, reason)
        failed.append(trial.number)
        retry(study, trial, max_retry)
        if on_failed is not None:
            on_failed(trial)
    return failed


class Heartbeat:
    """A thread recording a running trial's heartbeat every interval (a no-op for storages without heartbeats)."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as err:  # a missed beat must not kill the trial
                log.warning("heartbeat of trial id %d failed: %s", self.trial_id, err)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if isinstance(self.storage, JournalFileStorage):
            (self.storage.heartbeats / str(self.trial_id)).unlink(missing_ok=True)
