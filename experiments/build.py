"""Objects of a run, built from its config with ``hydra.utils.instantiate``; the one place values are checked.

Every group names its class with ``_target_`` and holds its arguments, so a value is checked by the
constructor it goes to (``nn.checks.ArgumentError`` names the argument); ``parts`` turns that into a
``ConfigError`` naming the config key, before any data is read or any run is created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import nn
from experiments.schema import ConfigError, require
from nn.checks import ArgumentError
from nn.data import Dataset
from nn.network import check_mlp

OBJECTIVES = tuple(f"{split}/{metric}" for split in ("train", "val", "test") for metric in ("acc", "loss"))
CHECKPOINT_POLICIES = ("all", "every_k", "best_and_last", "last", "none")


def network(
    input_dim: int,
    num_classes: int,
    hidden: list[int],
    activation: str,
    init: str,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    rng: np.random.Generator | None = None,
    dtype=np.float32,
) -> nn.Network:
    """``input_dim -> hidden... -> num_classes`` MLP; the target of every ``model`` config."""
    return nn.mlp(
        [input_dim, *hidden, num_classes],
        activation=activation,
        init=init,
        dropout=dropout,
        input_dropout=input_dropout,
        rng=rng,
        dtype=dtype,
    )


def key_of(node: DictConfig, group: str, name: str) -> str:
    """The dotted config key of argument ``name`` within ``group`` (``schedule.after.T_max`` when nested)."""
    if name in node:
        return f"{group}.{name}"
    for key, child in node.items():
        if isinstance(child, DictConfig) and name in child:
            return f"{group}.{key}.{name}"
    return f"{group}.{name}"


@contextlib.contextmanager
def naming(group: str, node: DictConfig) -> Iterator[None]:
    """Re-raise what a target rejects as ``ConfigError`` naming the key of ``group``; ``DataError`` passes through.

    Hydra wraps whatever a target raises in ``InstantiationException``; the target's own error is its cause.
    """
    try:
        yield
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ArgumentError):
            raise ConfigError(rejected(group, node, cause)) from cause
        if isinstance(cause, ValueError):  # DataError: a missing or malformed file
            raise cause from None
        if isinstance(cause, TypeError):  # an argument the target does not take
            raise ConfigError(
                f"{group} ({OmegaConf.select(node, '_target_')}): {cause}. "
                f"Remove the key or check its spelling (python experiments/run.py --cfg job shows the {group} node)."
            ) from cause
        raise
    except ArgumentError as err:
        raise ConfigError(rejected(group, node, err)) from err


def rejected(group: str, node: DictConfig, err: ArgumentError) -> str:
    key = key_of(node, group, err.name)
    return f"{key}={err.value!r} is not allowed: {key} must be {err.allowed}. Fix the override or the config file."


def call(group: str, node: DictConfig, **kwargs):
    """``instantiate(node, **kwargs)`` with the errors of ``naming(group, node)``."""
    with naming(group, node):
        return instantiate(node, **kwargs)


@dataclass
class Parts:
    """Everything a run trains with, built before any data is read or anything is tracked."""

    make_network: partial  # (input_dim, num_classes, rng, dtype) -> Network
    optimizer: nn.Optimizer
    schedule: nn.Schedule
    clipper: nn.clipping.Clipper
    make_augmenter: partial | None  # (image_shape) -> Augmenter; None: no augmentation


def parts(cfg: DictConfig) -> Parts:
    """Build the optimizer, schedule and clipper, check the model, augmentation, training and tracking
    settings; raises ``ConfigError`` naming the first bad key."""
    check_settings(cfg)
    optimizer = call("optimizer", cfg.optimizer)
    schedule = call("schedule", cfg.schedule)
    clipper = call("clipping", cfg.clipping)
    make_network = call("model", cfg.model)
    with naming("model", cfg.model):
        model = cfg.model
        check_mlp(list(model.hidden), model.activation, model.init, model.dropout, model.input_dropout)
    make_augmenter = None
    if cfg.get("augment") is not None:
        call("augment", cfg.augment)  # checks the values now; the image shape comes with the data
        make_augmenter = call("augment", cfg.augment, _partial_=True)
    return Parts(make_network, optimizer, schedule, clipper, make_augmenter)


def augmenter(parts: Parts, dataset: Dataset) -> nn.Augmenter | None:
    """The batch augmenter for this dataset's image shape, or None when augmentation is off."""
    return None if parts.make_augmenter is None else parts.make_augmenter(image_shape=list(dataset.image_shape))


def check_settings(cfg: DictConfig) -> None:
    """The values of ``train``, ``seed`` and ``tracking``, which configure the loop rather than an object."""
    train, tracking = cfg.train, cfg.tracking
    require(cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    require(train.epochs >= 1, "train.epochs", train.epochs, ">= 1")
    require(train.batch_size is None or train.batch_size >= 1, "train.batch_size", train.batch_size, "null or >= 1")
    require(train.objective in OBJECTIVES, "train.objective", train.objective, f"one of {', '.join(OBJECTIVES)}")
    require(train.dtype in ("float32", "float64"), "train.dtype", train.dtype, "float32 or float64")
    require(train.grad_norm_every >= 1, "train.grad_norm_every", train.grad_norm_every, ">= 1")
    require(train.divergence.check_after >= 1, "train.divergence.check_after", train.divergence.check_after, ">= 1")
    require(bool(tracking.experiment), "tracking.experiment", tracking.experiment, "a non-empty name")
    require(tracking.confusion_every >= 1, "tracking.confusion_every", tracking.confusion_every, ">= 1")
    require(tracking.misclassified >= 0, "tracking.misclassified", tracking.misclassified, ">= 0 (0: no grid)")
    policy = tracking.checkpoints.policy
    allowed = f"one of {', '.join(CHECKPOINT_POLICIES)}"
    require(policy in CHECKPOINT_POLICIES, "tracking.checkpoints.policy", policy, allowed)
    require(tracking.checkpoints.every >= 1, "tracking.checkpoints.every", tracking.checkpoints.every, ">= 1")
