"""Structured-config schemas: every config group option is typed by one of these dataclasses.

Hydra checks keys and types while composing; ``validate(cfg)`` then builds the dataclasses
(``OmegaConf.to_object``), whose ``__post_init__`` checks values, so that a negative learning rate
or unsorted milestones stop a run before any data is read or anything is tracked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key, what was given and what is allowed."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(
            f"{key}={value!r} is not allowed: {key} must be {allowed}. Fix the override or the config file."
        )


# ---------------------------------------------------------------------------- dataset, model, train
@dataclass
class DatasetConf:
    _target_: str = "nn.data.load_dataset"
    name: str = "mnist"  # mnist | fashion_mnist | digits | csv
    root: str | None = None  # folder holding mnist/ and fashion_mnist/; None: $NNLAB_DATA_DIR, else ~/.cache/nnlab
    val_fraction: float = 0.1
    split: str = "holdout"  # holdout: official test set untouched | 80/10/10: recipe R0's split of the train set
    standardize: bool = False
    subset: int | None = None  # keep this many training examples (and at most this many val/test)
    download: bool = True
    train_csv: str | None = None
    test_csv: str | None = None

    def __post_init__(self) -> None:
        names = ("mnist", "fashion_mnist", "digits", "csv")
        require(self.name in names, "dataset.name", self.name, f"one of {', '.join(names)}")
        require(0 < self.val_fraction < 1, "dataset.val_fraction", self.val_fraction, "in (0, 1)")
        splits = ("holdout", "80/10/10", "r0")
        require(self.split in splits, "dataset.split", self.split, f"one of {', '.join(splits)}")
        require(self.subset is None or self.subset >= 10, "dataset.subset", self.subset, "null or >= 10")
        require(
            self.name != "csv" or bool(self.train_csv),
            "dataset.train_csv",
            self.train_csv,
            "a CSV path when dataset=csv",
        )


@dataclass
class ModelConf:
    _target_: str = "experiments.build.network"
    _partial_: bool = True
    hidden: list[int] = field(default_factory=lambda: [1024])  # hidden layer widths; [] is softmax regression
    activation: str = "relu"  # relu | leaky_relu | sigmoid | tanh | gelu
    init: str = "he_normal"  # he_normal | he_uniform | xavier_normal | xavier_uniform | lecun_normal | small_random

    def __post_init__(self) -> None:
        from nn.activations import ACTIVATIONS
        from nn.initializers import INITIALIZERS

        require(all(h >= 1 for h in self.hidden), "model.hidden", self.hidden, "a list of positive widths")
        require(self.activation in ACTIVATIONS, "model.activation", self.activation, f"one of {', '.join(ACTIVATIONS)}")
        require(self.init in INITIALIZERS, "model.init", self.init, f"one of {', '.join(INITIALIZERS)}")


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
    divergence: DivergenceConf = field(default_factory=DivergenceConf)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        require(self.batch_size is None or self.batch_size >= 1, "train.batch_size", self.batch_size, "null or >= 1")
        objectives = tuple(f"{s}/{m}" for s in ("train", "val", "test") for m in ("acc", "loss"))
        require(self.objective in objectives, "train.objective", self.objective, f"one of {', '.join(objectives)}")
        require(self.dtype in ("float32", "float64"), "train.dtype", self.dtype, "float32 or float64")
        require(self.grad_norm_every >= 1, "train.grad_norm_every", self.grad_norm_every, ">= 1")


# ---------------------------------------------------------------------------- optimizers
@dataclass
class OptimizerConf:
    _target_: str = "nn.SGD"
    _partial_: bool = True  # weight_decay comes from regularization.l2 when the run builds it
    lr: float = 0.01

    def __post_init__(self) -> None:
        require(self.lr > 0, "optimizer.lr", self.lr, "a positive number")


@dataclass
class SGDConf(OptimizerConf):
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "in [0, 1)")
        require(0 <= self.dampening < 1, "optimizer.dampening", self.dampening, "in [0, 1)")
        require(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optimizer.nesterov",
            self.nesterov,
            "false unless optimizer.momentum > 0 and optimizer.dampening = 0",
        )


@dataclass
class AdamConf(OptimizerConf):
    _target_: str = "nn.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optimizer.betas",
            self.betas,
            "two numbers in [0, 1)",
        )
        require(self.eps > 0, "optimizer.eps", self.eps, "a positive number")


@dataclass
class RMSpropConf(OptimizerConf):
    _target_: str = "nn.RMSprop"
    lr: float = 1e-3
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.alpha < 1, "optimizer.alpha", self.alpha, "in [0, 1)")
        require(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "in [0, 1)")
        require(self.eps > 0, "optimizer.eps", self.eps, "a positive number")


# ---------------------------------------------------------------------------- schedules
@dataclass
class ConstantConf:
    _target_: str = "nn.Constant"


@dataclass
class StepConf:
    _target_: str = "nn.StepDecay"
    step_size: int = 10
    gamma: float = 0.1

    def __post_init__(self) -> None:
        require(self.step_size >= 1, "schedule.step_size", self.step_size, ">= 1")
        require(0 < self.gamma <= 1, "schedule.gamma", self.gamma, "in (0, 1]")


@dataclass
class MultiStepConf:
    _target_: str = "nn.MultiStepDecay"
    milestones: list[int] = field(default_factory=lambda: [30, 50, 65])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        m = list(self.milestones)
        require(
            m == sorted(set(m)) and all(x >= 1 for x in m),
            "schedule.milestones",
            m,
            "strictly increasing epochs >= 1, e.g. [30, 50, 65]",
        )
        require(0 < self.gamma <= 1, "schedule.gamma", self.gamma, "in (0, 1]")


@dataclass
class ExponentialConf:
    _target_: str = "nn.ExponentialDecay"
    gamma: float = 0.95

    def __post_init__(self) -> None:
        require(0 < self.gamma <= 1, "schedule.gamma", self.gamma, "in (0, 1]")


@dataclass
class CosineConf:
    _target_: str = "nn.CosineAnnealing"
    T_max: int = 20  # the configs set it to ${train.epochs}
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        require(self.T_max >= 1, "schedule.T_max", self.T_max, ">= 1")
        require(self.eta_min >= 0, "schedule.eta_min", self.eta_min, ">= 0")


@dataclass
class WarmupConf:
    _target_: str = "nn.Warmup"
    epochs: float = 2.0  # linear warm-up length, in epochs (per step)
    start_factor: float = 0.1
    after: Any = field(default_factory=CosineConf)

    def __post_init__(self) -> None:
        require(self.epochs > 0, "schedule.epochs", self.epochs, "> 0")
        require(0 <= self.start_factor <= 1, "schedule.start_factor", self.start_factor, "in [0, 1]")


@dataclass
class PlateauConf:
    _target_: str = "nn.ReduceOnPlateau"
    factor: float = 0.5
    patience: int = 3
    min_lr: float = 1e-5
    threshold: float = 1e-4

    def __post_init__(self) -> None:
        require(0 < self.factor < 1, "schedule.factor", self.factor, "in (0, 1)")
        require(self.patience >= 0, "schedule.patience", self.patience, ">= 0")
        require(self.min_lr >= 0, "schedule.min_lr", self.min_lr, ">= 0")


# ---------------------------------------------------------------------------- regularization, clipping
@dataclass
class AugmentConf:
    _target_: str = "nn.Augmenter"
    shift: float = 2.0  # pixels
    rotation: float = 10.0  # degrees
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    shear: float = 0.0  # degrees
    elastic_alpha: float = 0.0  # RMS elastic displacement in pixels (Simard's 34 at sigma 4 is about 1.4); 0: off
    elastic_sigma: float = 4.0
    probability: float = 1.0  # share of each batch that is augmented

    def __post_init__(self) -> None:
        for key in ("shift", "rotation", "scale", "shear", "elastic_alpha"):
            require(getattr(self, key) >= 0, f"regularization.augment.{key}", getattr(self, key), ">= 0")
        require(0 <= self.probability <= 1, "regularization.augment.probability", self.probability, "in [0, 1]")


@dataclass
class RegularizationConf:
    l2: float = 0.0  # weight decay, coupled L2 (decoupled for AdamW)
    decay_bias: bool = False  # decay biases too
    dropout: float = 0.0  # after every hidden layer
    input_dropout: float = 0.0  # on the input pixels
    augment: AugmentConf | None = None  # null: no augmentation

    def __post_init__(self) -> None:
        require(self.l2 >= 0, "regularization.l2", self.l2, ">= 0")
        require(0 <= self.dropout < 1, "regularization.dropout", self.dropout, "in [0, 1)")
        require(0 <= self.input_dropout < 1, "regularization.input_dropout", self.input_dropout, "in [0, 1)")


@dataclass
class NoClipConf:
    _target_: str = "nn.NoClip"


@dataclass
class ValueClipConf:
    _target_: str = "nn.ClipByValue"
    value: float = 5.0

    def __post_init__(self) -> None:
        require(self.value > 0, "clipping.value", self.value, "a positive number")


@dataclass
class NormClipConf:
    _target_: str = "nn.ClipByNorm"
    max_norm: float = 1.0

    def __post_init__(self) -> None:
        require(self.max_norm > 0, "clipping.max_norm", self.max_norm, "a positive number")


# ---------------------------------------------------------------------------- tracking, root
@dataclass
class CheckpointConf:
    policy: str = "best_and_last"  # all | every_k | best_and_last | last | none
    every: int = 5  # k, for every_k

    def __post_init__(self) -> None:
        policies = ("all", "every_k", "best_and_last", "last", "none")
        require(self.policy in policies, "tracking.checkpoints.policy", self.policy, f"one of {', '.join(policies)}")
        require(self.every >= 1, "tracking.checkpoints.every", self.every, ">= 1")


@dataclass
class TrackingConf:
    enabled: bool = True
    uri: str | None = None  # null: sqlite:///<dir>/mlflow.db; or a tracking server's http://host:port
    dir: str = "mlruns"  # local store and artifacts, made absolute against the directory the run starts in
    experiment: str = "nnlab"
    run_name: str | None = None  # null: made from the command-line overrides
    confusion_every: int = 5  # log the validation confusion matrix as an image every k epochs (JSON every epoch)
    checkpoints: CheckpointConf = field(default_factory=CheckpointConf)
    log_model: bool = True  # the final network as an MLflow pyfunc model
    misclassified: int = 36  # test digits shown in the misclassified grid; 0: no grid
    parent_run_id: str | None = None  # nest this run under another (a sweep's parent run)
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags, e.g. a sweep's trial number

    def __post_init__(self) -> None:
        require(bool(self.experiment), "tracking.experiment", self.experiment, "a non-empty name")
        require(self.confusion_every >= 1, "tracking.confusion_every", self.confusion_every, ">= 1")
        require(self.misclassified >= 0, "tracking.misclassified", self.misclassified, ">= 0 (0: no grid)")


@dataclass
class SweepTrialConf:
    """Which Optuna trial a run is: set per job by the ``nnlab_optuna`` sweeper so the run reports to its pruner."""

    study: str = ""  # empty: not a sweep's job
    storage: str = ""  # journal file or database URL
    number: int = -1


@dataclass
class Config:
    seed: int = 0
    train: TrainConf = field(default_factory=TrainConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    model: ModelConf = field(default_factory=ModelConf)
    optimizer: Any = None
    schedule: Any = None
    regularization: RegularizationConf = field(default_factory=RegularizationConf)
    clipping: Any = None
    tracking: TrackingConf = field(default_factory=TrackingConf)
    sweep: Any = None  # +sweep=<name>: an Optuna sweep (conf/sweep/), read by sweeps/ and the nnlab_optuna sweeper
    sweep_trial: SweepTrialConf = field(default_factory=SweepTrialConf)  # set by the sweeper on each job


SCHEMAS = {
    "optimizer": {"sgd": SGDConf, "adam": AdamConf, "adamw": AdamConf, "rmsprop": RMSpropConf},
    "schedule": {
        "constant": ConstantConf,
        "step": StepConf,
        "multistep": MultiStepConf,
        "exponential": ExponentialConf,
        "cosine": CosineConf,
        "warmup": WarmupConf,
        "plateau": PlateauConf,
    },
    "clipping": {"none": NoClipConf, "value": ValueClipConf, "norm": NormClipConf},
}


def subtract(a, b):
    """``${sub:a,b}``: a - b, as an int when whole (``${sub:${train.epochs},${schedule.epochs}}`` feeds an int key)."""
    difference = a - b
    return int(difference) if float(difference).is_integer() else difference


def register() -> None:
    """Put the schemas in Hydra's ConfigStore: ``base_config`` and ``schema/<group>/<name>``."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    if not OmegaConf.has_resolver("sub"):
        OmegaConf.register_new_resolver("sub", subtract)


def validate(cfg: DictConfig) -> Config:
    """Check every value of a composed config; raises ``ConfigError`` naming the first bad key."""
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid configuration: {err}. Fix the override or the config file.") from err


register()
