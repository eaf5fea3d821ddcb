"""A sweep's settings: the ``sweep`` node of the composed config (``+sweep=<name>``, see conf/sweep/)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.schema import ConfigError, require


@dataclass
class HeartbeatConf:
    interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a running trial without a heartbeat for this long is failed (its worker died)
    max_retry: int = 1  # a failed-stale trial is run again this many times (0: not retried)


@dataclass
class SweepConf:
    study_name: str = "nnlab"
    direction: str | None = None  # maximize | minimize; null: from train.objective
    n_trials: int = 20  # the study's total budget, over restarts and workers
    workers: int = 1  # worker processes on this machine
    storage: str | None = None  # null: journal file <tracking.dir>/optuna/<study_name>.log; or a database URL
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    params: dict[str, Any] = field(default_factory=dict)  # Hydra sweep syntax; plain values are fixed
    heartbeat: HeartbeatConf = field(default_factory=HeartbeatConf)
    # workers > 1: run a local MLflow server for the workers instead of having them write the SQLite store
    # directly. Not needed at a few workers (MLflow waits up to 20 s on SQLite's lock), so off by default.
    mlflow_server: bool = False

    def __post_init__(self) -> None:
        require(
            bool(re.fullmatch(r"[\w.\-]+", self.study_name)),
            "sweep.study_name",
            self.study_name,
            "letters, digits, _.-",
        )
        require(
            self.direction in (None, "maximize", "minimize"), "sweep.direction", self.direction, "maximize or minimize"
        )
        require(self.n_trials >= 1, "sweep.n_trials", self.n_trials, ">= 1")
        require(self.workers >= 1, "sweep.workers", self.workers, ">= 1")
        require("name" in self.sampler, "sweep.sampler", self.sampler, "a mapping with a name")
        require("name" in self.pruner, "sweep.pruner", self.pruner, "a mapping with a name")
        require(self.heartbeat.interval >= 1, "sweep.heartbeat.interval", self.heartbeat.interval, ">= 1")
        require(
            self.heartbeat.grace_period > self.heartbeat.interval,
            "sweep.heartbeat.grace_period",
            self.heartbeat.grace_period,
            "longer than sweep.heartbeat.interval",
        )


def register() -> None:
    """``schema/sweep/default`` in Hydra's ConfigStore: the conf/sweep/ files build on it."""
    ConfigStore.instance().store(group="schema/sweep", name="default", node=SweepConf)


def settings(node: Any) -> SweepConf:
    """The validated sweep settings of ``node`` (``cfg.sweep``; None for defaults); raises ``ConfigError``.

    Interpolations such as ``${train.epochs}`` are resolved against the root config first.
    """
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SweepConf), node or {})
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid sweep configuration: {err}") from err


def direction(conf: SweepConf, objective: str) -> str:
    """The study's direction: as configured, else maximize an accuracy and minimize a loss."""
    return conf.direction or ("minimize" if objective.endswith("loss") else "maximize")


def report_metric(objective: str) -> str:
    """The per-epoch metric a trial reports to its pruner: the objective, or its validation twin (test/acc: val/acc)."""
    split, name = objective.split("/")
    return objective if split in ("train", "val") else f"val/{name}"


def default_storage(conf: SweepConf, tracking_dir: str) -> str:
    """``conf.storage``, or the journal file ``<tracking.dir>/optuna/<study_name>.log`` as an absolute path."""
    if conf.storage:
        return conf.storage
    return str(Path(tracking_dir).expanduser().resolve() / "optuna" / f"{conf.study_name}.log")


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


register()
