"""Every private Optuna name this project uses, and nothing else: ``tests/sweeps/test_optuna_private.py``
fails naming this module when an Optuna release renames or removes one of them.

Optuna 5 has no public API for what these give: heartbeats for a storage other than RDB (the
``BaseHeartbeat`` protocol with its ``_get_stale_trial_ids``), a study's storage and id, a trial's
storage id, and the ``RDBStorage`` that a study wraps in ``_CachedStorage``.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BaseHeartbeat", "JournalFileStorage", "stale_trial_ids", "storage_of", "study_id", "trial_id", "unwrap"]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (``study._storage``)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (``study._study_id``)."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage, unlike ``number`` unique across studies (``trial._trial_id``)."""
    return trial._trial_id


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Ids of the running trials whose heartbeat stopped (``BaseHeartbeat._get_stale_trial_ids``)."""
    return storage._get_stale_trial_ids(study_id)


def unwrap(storage: BaseStorage) -> BaseStorage:
    """The storage itself: a study wraps an ``RDBStorage`` in Optuna's ``_CachedStorage`` (``._backend``)."""
    backend = getattr(storage, "_backend", None)  # (a journal storage's _backend is its file: not that)
    return backend if isinstance(backend, RDBStorage) else storage


class JournalFileStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage with heartbeats: one file per running trial, touched every interval."""

    def __init__(self, path: str | Path, heartbeat_interval: int, grace_period: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.heartbeats = self.path.with_name(self.path.name + ".heartbeats")
        self.heartbeats.mkdir(exist_ok=True)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        super().__init__(JournalFileBackend(str(self.path)))

    def record_heartbeat(self, trial_id: int) -> None:
        (self.heartbeats / str(trial_id)).touch()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = self.heartbeats / str(trial_id(trial))
            last = beat.stat().st_mtime if beat.exists() else trial.datetime_start.timestamp()
            if now - last > self.grace_period:
                stale.append(trial_id(trial))
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None  # sweeps.study.fail_stale runs ours
