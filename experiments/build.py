"""Objects of a run, built from its config with ``hydra.utils.instantiate``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

import nn
from experiments.schema import ConfigError
from nn.data import Dataset


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


def call(config: DictConfig, **kwargs):
    """``instantiate(config, **kwargs)``, re-raising a ``ValueError`` (``DataError`` included) of the target itself.

    Hydra wraps whatever a target raises in ``InstantiationException``, which would hide ``DataError`` from
    the command line's handler and constructor errors from the ``except ValueError`` below.
    """
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise


@dataclass
class Parts:
    """Everything a run trains with, built before any data is read or anything is tracked."""

    make_network: object  # partial: (input_dim, num_classes, dropout, input_dropout, rng, dtype) -> Network
    optimizer: nn.Optimizer
    schedule: nn.Schedule
    clipper: object
    augment_config: DictConfig | None


def parts(cfg: DictConfig) -> Parts:
    """Instantiate the optimizer, schedule and clipper; constructor errors become ``ConfigError``."""
    reg = cfg.regularization
    try:
        optimizer = call(cfg.optimizer)(weight_decay=reg.l2, decay_bias=reg.decay_bias)
        schedule = call(cfg.schedule)
        clipper = call(cfg.clipping)
        make_network = call(cfg.model)
    except ValueError as err:
        raise ConfigError(f"invalid configuration: {err}. Fix the override or the config file.") from err
    return Parts(make_network, optimizer, schedule, clipper, reg.augment)


def augmenter(augment_config: DictConfig | None, dataset: Dataset) -> nn.Augmenter | None:
    """The batch augmenter for this dataset's image shape, or None when augmentation is off."""
    if augment_config is None:
        return None
    try:
        return call(augment_config, image_shape=list(dataset.image_shape))
    except ValueError as err:
        raise ConfigError(f"invalid regularization.augment: {err}. Fix the override or the config file.") from err
