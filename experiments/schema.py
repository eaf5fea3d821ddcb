"""The root config's types and defaults: Hydra rejects an unknown key or a wrong type while composing.

Each default is written once. The dataclasses below hold the defaults every option shares; a group's YAML
(conf/dataset/, conf/model/, conf/tracking/) sets only what that option chooses differently, and a field
with no shared default (``dataset.name``, ``model.hidden``) is ``MISSING`` here and set by each option.
The experiment presets (conf/experiment/) are the exception: they pin their whole recipe on purpose.

No checks here: values are checked once, where their object is made (the ``nn`` constructors, the data
layer, ``experiments.build.parts``), and ``ConfigError`` then names the config key. The groups that
choose a class (optimizer, schedule, clipping, augment) are typed by their target's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class ConfigError(ValueError):
    """An invalid configuration; the message names the key, what was given, what is allowed and the fix."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError`` naming ``key=value`` and what is allowed, unless ``ok``."""
    if not ok:
        raise ConfigError(
            f"{key}={value!r} is not allowed: {key} must be {allowed}. Fix the override or the config file."
        )


@dataclass
class DatasetConf:
    _target_: str = "nn.data.load_dataset"  # called with seed and dtype
    name: str = MISSING  # mnist | fashion_mnist | digits | csv: set by each conf/dataset/ option
    # the folder holding mnist/ and fashion_mnist/ (downloaded there on first use), where relative CSV paths
    # are also looked up; null: $NNLAB_DATA_DIR, else ~/.cache/nnlab
    root: str | None = "${oc.env:NNLAB_DATA_DIR,null}"
    val_fraction: float = 0.1  # stratified share of the training examples held out for validation
    # holdout: the official test set stays untouched (digits: 20% test, then val_fraction of the rest)
    # | 80/10/10: recipe R0's split of the train set
    split: str = "holdout"
    standardize: bool = False
    subset: int | None = None  # keep this many training examples (and at most this many val/test)
    download: bool = True
    train_csv: str | None = None
    test_csv: str | None = None


@dataclass
class ModelConf:
    _target_: str = "experiments.build.network"  # called with the data set's input size and classes
    _partial_: bool = True
    hidden: list[int] = MISSING  # hidden layer widths, set by each conf/model/ option; [] is softmax regression
    activation: str = "relu"  # relu | leaky_relu | sigmoid | tanh | gelu
    init: str = "he_normal"  # he_normal | he_uniform | xavier_normal | xavier_uniform | lecun_normal | small_random
    dropout: float = 0.0  # after every hidden layer (inverted dropout, off at evaluation)
    input_dropout: float = 0.0  # on the input pixels


@dataclass
class DivergenceConf:
    check_after: int = 1  # from this epoch on, validation accuracy at chance level means divergence
    chance_margin: float = 0.02  # "at chance" = val accuracy below 1/classes + this margin


@dataclass
class TrainConf:
    epochs: int = 20
    batch_size: int | None = 128  # null: full-batch gradient descent
    objective: str = "val/acc"  # the metric train() returns for sweeps: val/acc, val/loss, test/acc, ...
    dtype: str = "float32"
    grad_norm_every: int = 10  # measure the gradient norm every this many steps
    progress: bool = True  # progress bar within each epoch (only on a terminal)
    diagnostics: bool = True  # per-layer norms, update ratios, activations and dead units, logged under watch/
    divergence: DivergenceConf = field(default_factory=DivergenceConf)


@dataclass
class LrFindConf:
    """``experiments/lr_find.py``: the learning-rate range test's sweep of rates."""

    min_lr: float = 1e-6
    max_lr: float = 10.0
    steps: int = 300


@dataclass
class CheckpointConf:
    policy: str = "best_and_last"  # all | every_k | best_and_last | last | none (all: 80 epochs of wide1024 is 260 MB)
    every: int = 5  # k, for every_k


@dataclass
class TrackingConf:
    """``tracking``: a run's MLflow logging. conf/tracking/mlflow.yaml is these defaults; tracking=none: off."""

    enabled: bool = True
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<dir>/mlflow.db with artifacts in <dir>/artifacts;
    # or a tracking server's http://host:port
    uri: str | None = None
    dir: str = "mlruns"  # local store and artifacts, made absolute against the directory the run starts in
    experiment: str = "nnlab"  # the MLflow experiment's name
    run_name: str | None = None  # null: made from the command-line overrides
    # the validation confusion matrix as an image every k epochs and at the end (each also as a table)
    confusion_every: int = 5
    checkpoints: CheckpointConf = field(default_factory=CheckpointConf)
    log_model: bool = True  # the final network, and the best epoch's, as MLflow logged models named by layer sizes
    # a name: also register the final model in MLflow's model registry (a new version each run)
    register_as: str | None = None
    system_metrics: bool = False  # MLflow's system metrics (host-wide CPU, memory, disk, network every 10 s)
    misclassified: int = 36  # test digits shown in figures/misclassified.png; 0: no grid
    parent_run_id: str | None = None  # set by sweeps: nest this run under the sweep's parent run
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags: +tracking.tags.note=baseline


@dataclass
class SweepTrialConf:
    """Which Optuna trial a run is: set per job by the ``nnlab_optuna`` sweeper so the run reports to its pruner."""

    study: str = ""  # empty: not a sweep's job
    storage: str = ""  # journal file or database URL
    number: int = -1


@dataclass
class Config:
    seed: int = 0  # decides initialization, shuffling, dropout and augmentation
    train: TrainConf = field(default_factory=TrainConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    model: ModelConf = field(default_factory=ModelConf)
    optimizer: Any = None  # conf/optimizer/: _target_ and the arguments of an nn optimizer
    schedule: Any = None
    clipping: Any = None
    augment: Any = None  # null: no augmentation
    callbacks: Any = None  # conf/callbacks/: {name: {_target_: an nn.callbacks class, its arguments}}
    tracking: TrackingConf = field(default_factory=TrackingConf)
    sweep_trial: SweepTrialConf = field(default_factory=SweepTrialConf)  # set by the sweeper on each job
    lr_find: LrFindConf = field(default_factory=LrFindConf)  # experiments/lr_find.py only


def subtract(a, b):
    """``${sub:a,b}``: a - b, as an int when whole (``${sub:${train.epochs},${schedule.epochs}}`` feeds an int key)."""
    difference = a - b
    return int(difference) if float(difference).is_integer() else difference


def register() -> None:
    """Put ``base_config`` in Hydra's ConfigStore and register the ``sub`` resolver."""
    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("sub"):
        OmegaConf.register_new_resolver("sub", subtract)


register()
