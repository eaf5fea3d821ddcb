"""A sweep's settings: the one schema of the ``nnlab_optuna`` sweeper (``hydra.sweeper.*``; the Hydra plugin
registers it, with the keys Hydra itself reads).

A sweep config (conf/sweep/<name>.yaml, ``sweep=<name>``) selects the sweeper and fills these keys;
``hydra.sweeper.<key>=...`` overrides one on the command line. Samplers and pruners are ``_target_``
nodes (``hydra/sweeper/sampler=random``, ``hydra/sweeper/pruner=hyperband``) whose other keys go
straight to the Optuna class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.schema import ConfigError, require

SAMPLERS = {  # option of hydra/sweeper/sampler: the Optuna class and its defaults here
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": 0},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": 0},  # its grid: the space, given by the sweeper
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": 0},
    "gp": {"_target_": "optuna.samplers.GPSampler", "seed": 0},  # needs PyTorch
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": 0},
}
PRUNERS = {
    "median": {"_target_": "optuna.pruners.MedianPruner"},
    "percentile": {"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner"},
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner"},
    "threshold": {"_target_": "optuna.pruners.ThresholdPruner"},
    "none": {"_target_": "optuna.pruners.NopPruner"},
}


@dataclass
class HeartbeatConf:
    interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a running trial without a heartbeat for this long is failed (its worker died)
    max_retry: int = 1  # a failed-stale trial is run again this many times (0: not retried)


@dataclass
class SweeperConf:
    study_name: str = "nnlab"
    direction: str | None = None  # maximize | minimize; null: from train.objective
    n_trials: int = 20  # the study's total budget, over restarts, workers and machines
    storage: str | None = None  # null: journal file optuna/<study_name>.log beside the SQLite store; or a database URL
    sampler: Any = MISSING
    pruner: Any = MISSING
    params: dict[str, Any] = field(default_factory=dict)  # Hydra sweep syntax; plain values are fixed
    heartbeat: HeartbeatConf = field(default_factory=HeartbeatConf)
    batch: int | None = None  # trials handed to the launcher at once; null: its n_jobs (joblib), else 1
    workers: int = 1  # > 1: this many processes here, each asking for its next trial as soon as one ends
    # workers > 1: a local MLflow server for the workers instead of the SQLite store written directly. Not
    # needed at a few workers (MLflow waits up to 20 s on SQLite's lock), so off by default.
    mlflow_server: bool = False
    dry_run: bool = False  # print the space and settings (sampler and pruner with their arguments), run nothing
    worker: int = -1  # set on the worker processes: their index
    parent_run_id: str | None = None  # set on the worker processes: the sweep's MLflow parent run
    tracking_uri: str | None = None  # set on the worker processes: the local MLflow server, if any


def settings(node: Mapping[str, Any] | None = None) -> SweeperConf:
    """The checked settings of ``node`` (the sweeper's keyword arguments) over the defaults: TPE, median pruner."""
    given = {k: v for k, v in (node or {}).items() if k != "defaults"}
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(SweeperConf), {"sampler": SAMPLERS["tpe"], "pruner": PRUNERS["median"]}, given
        )
        conf = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid sweep setting: {err}. Fix the override or the sweep config (conf/sweep/).") from err
    conf.sampler, conf.pruner = dict(conf.sampler), dict(conf.pruner)
    check(conf)
    return conf


def check(conf: SweeperConf) -> None:
    """Raise ``ConfigError`` naming the first bad setting."""
    key = "hydra.sweeper."
    require(
        bool(re.fullmatch(r"[\w.\-]+", conf.study_name)), key + "study_name", conf.study_name, "letters, digits, _.-"
    )
    require(conf.direction in (None, "maximize", "minimize"), key + "direction", conf.direction, "maximize or minimize")
    require(conf.n_trials >= 1, key + "n_trials", conf.n_trials, ">= 1")
    require(conf.workers >= 1, key + "workers", conf.workers, ">= 1")
    require(conf.batch is None or conf.batch >= 1, key + "batch", conf.batch, "null or >= 1")
    for name in ("sampler", "pruner"):
        node = getattr(conf, name)
        require(isinstance(node, dict) and bool(node.get("_target_")), key + name, node, "a mapping with a _target_")
    beat = conf.heartbeat
    require(beat.interval >= 1, key + "heartbeat.interval", beat.interval, ">= 1")
    allowed = f"longer than hydra.sweeper.heartbeat.interval ({beat.interval})"
    require(beat.grace_period > beat.interval, key + "heartbeat.grace_period", beat.grace_period, allowed)


def direction(conf: SweeperConf, objective: str) -> str:
    """The study's direction: as configured, else maximize an accuracy and minimize a loss."""
    return conf.direction or ("minimize" if objective.endswith("loss") else "maximize")


def report_metric(objective: str) -> str:
    """The per-epoch metric a trial reports to its pruner: the objective, or its validation twin (test/acc: val/acc)."""
    split, name = objective.split("/")
    return objective if split in ("train", "val") else f"val/{name}"


def default_storage(conf: SweeperConf, tracking: DictConfig) -> str:
    """``conf.storage``, or the journal file ``optuna/<study_name>.log`` (an absolute path) beside the run's
    SQLite store (``<tracking.dir>`` by default), else under ``tracking.dir`` (``store_folder``)."""
    from experiments.store import store_folder

    if conf.storage:
        return conf.storage
    return str(store_folder(tracking) / "optuna" / f"{conf.study_name}.log")
