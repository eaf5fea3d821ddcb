"""Objects of a run, built from its config with ``hydra.utils.instantiate``; the one place values are checked.

Every group names its class with ``_target_`` and holds its arguments, so a value is checked by the
constructor it goes to (``nn.checks.ArgumentError`` names the argument); ``parts`` turns that into a
``ConfigError`` naming the config key, before any data is read or any run is created.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

import nn
from experiments.schema import Config, ConfigError, require
from experiments.store import open_store, resolve_store
from experiments.tracking.checkpoints import POLICIES
from nn.checks import ArgumentError
from nn.data import Dataset
from nn.network import check_mlp, parameter_count

OBJECTIVES = tuple(f"{split}/{metric}" for split in ("train", "val", "test") for metric in ("acc", "loss"))


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
    """``input_dim -> hidden... -> num_classes`` MLP; the target of every ``model`` config.

    Refuses (``ConfigError`` on ``model.hidden``) a network whose weights, gradients and optimizer state
    would not fit in the memory this machine has available, before allocating any of it."""
    check_fits([input_dim, *hidden, num_classes], dtype)
    return nn.mlp(
        [input_dim, *hidden, num_classes],
        activation=activation,
        init=init,
        dropout=dropout,
        input_dropout=input_dropout,
        rng=rng,
        dtype=dtype,
    )


def check_fits(sizes: list[int], dtype, at_least: str = "") -> None:
    """``ConfigError`` on ``model.hidden`` when the weights, gradients and optimizer state of an MLP of these
    layer sizes would not fit in the memory available now (``at_least``: "at least " for a lower bound)."""
    need = 4 * np.dtype(dtype).itemsize * parameter_count(sizes)
    have = available_memory()
    require(
        have is None or need < have,
        "model.hidden",
        sizes[1:-1],
        f"small enough to fit: weights, gradients and optimizer state need {at_least}{need / 2**30:.1f} GiB and "
        f"this machine has {(have or 0) / 2**30:.1f} GiB available",
    )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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
        if isinstance(cause, TypeError):  # a value of a type the target cannot use (unknown keys are refused before)
            target = OmegaConf.select(node, "_target_")
            raise ConfigError(f"{group} ({target}): {cause}. Fix the override or the config file.") from cause
        raise
    except ArgumentError as err:
        raise ConfigError(rejected(group, node, err)) from err


RUNTIME_ARGUMENTS = ("input_dim", "num_classes", "rng", "dtype", "seed", "image_shape")  # given by the harness


@functools.lru_cache(maxsize=256)  # a sweep's trials check the same targets: inspected once per process
def arguments(target: str) -> list[str] | None:
    """The keyword arguments the ``_target_`` takes from its config (those the harness passes at run time
    aside); None when it takes any keyword (``**kwargs``) or cannot be imported."""
    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except (ImportError, ValueError, TypeError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in named and p.name not in ("self", *RUNTIME_ARGUMENTS)]


def unknown_message(where: str, unknown: list[str], valid: list[str]) -> str:
    """'Unknown key(s) ... valid keys: ...; did you mean ...?' for keys given but not taken."""
    hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, valid, n=1)) else k for k in unknown]
    return (
        f"Unknown key(s) in {where}: {', '.join(hints) or '?'}. Valid keys there: {', '.join(valid)}. "
        "Remove the key or fix its spelling."
    )


def unknown_override(config_dir: Path, arguments: list[str]) -> str | None:
    """``unknown_keys`` for the command line, before Hydra composes it: Hydra refuses an override of a key the
    config lacks (``train.epoch=3``) too, but only says to add it with ``+``. The config is composed with the
    groups chosen, the overridden keys are put in, and the result goes through ``unknown_keys``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in arguments if "=" in a and a[0] != "-"])
    except Exception:  # Hydra says what is wrong with the syntax
        return None
    ours = [o for o in overrides if not o.key_or_group.startswith(("hydra", "sweep_trial"))]
    changed = [o for o in ours if o.type == OverrideType.CHANGE and "." in o.key_or_group]
    if not changed:
        return None
    # the groups and top-level values chosen: what decides which keys exist; and where groups are found
    selections = [
        f"hydra.searchpath={o.get_value_element_as_str()}" for o in overrides if o.key_or_group == "hydra.searchpath"
    ]
    for o in ours:
        if o in changed or o.type == OverrideType.DEL:
            continue
        if o.is_sweep_override():  # a sweep over groups (experiment=r1,r2) may add keys one choice lacks
            return None
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(o.type, "")
        selections.append(f"{prefix}{o.key_or_group}={o.get_value_element_as_str()}")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=selections)
    except Exception:  # Hydra reports it when it composes
        return None
    OmegaConf.set_struct(cfg, False)
    for o in changed:  # the key matters here, not the value: "missing" fits every typed key
        try:
            OmegaConf.update(cfg, o.key_or_group, "???", force_add=True)
        except Exception:  # a key below a value (seed.x=1): Hydra says what is wrong
            return None
    return unknown_keys(cfg)


@functools.lru_cache(maxsize=1)
def root_schema() -> DictConfig:
    """The root config's schema (``experiments.schema.Config``) as a read-only node, built once per process."""
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, True)
    return schema


FREE_FORM = ("tracking.tags",)  # nodes that take any key
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def unknown_keys(node: DictConfig, schema: DictConfig | None = None, where: str = "") -> str | None:
    """The one check of config keys: the message for the first node holding a key that nothing takes, else
    None. A typed node takes its schema's keys (``experiments.schema``), a node with a ``_target_`` its
    target's arguments, a free-form node (``tracking.tags``) any key. ``schema`` defaults to the root's."""
    if schema is None and not where:
        schema = root_schema()
    valid = None
    if isinstance(schema, DictConfig) and len(schema):
        valid = [str(k) for k in schema]
    elif "_target_" in node:
        valid = arguments(OmegaConf.select(node, "_target_"))
    if valid is not None:
        unknown = [str(k) for k in node if str(k) not in valid and str(k) not in HYDRA_KEYS]
        if unknown:
            return unknown_message(where.rstrip(".") or "the root config", unknown, valid)
    for key, child in node.items_ex(resolve=False):
        if isinstance(child, DictConfig) and f"{where}{key}" not in FREE_FORM:
            typed = schema.get(key) if isinstance(schema, DictConfig) and key in schema else None
            message = unknown_keys(child, typed if isinstance(typed, DictConfig) else None, f"{where}{key}.")
            if message:
                return message
    return None


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
    callbacks: list  # nn.callbacks.Callback objects of the callbacks group (early_stopping)


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
        check_fits([1, *model.hidden, 1], cfg.train.dtype, "at least ")  # the data's sizes come with the data
    make_augmenter = None
    if cfg.get("augment") is not None:
        call("augment", cfg.augment)  # checks the values now; the image shape comes with the data
        make_augmenter = call("augment", cfg.augment, _partial_=True)
    callbacks = [call(f"callbacks.{name}", node) for name, node in (cfg.get("callbacks") or {}).items()]
    return Parts(make_network, optimizer, schedule, clipper, make_augmenter, callbacks)


def augmenter(parts: Parts, dataset: Dataset) -> nn.Augmenter | None:
    """The batch augmenter for this dataset's image shape, or None when augmentation is off."""
    return None if parts.make_augmenter is None else parts.make_augmenter(image_shape=list(dataset.image_shape))


@dataclass
class Setup:
    """What every command that trains starts from (``train``, ``lr_find``)."""

    parts: Parts
    dataset: Dataset
    network: nn.Network
    rng: np.random.Generator  # the run's one generator: it made the weights, it shuffles and draws dropout


def setup(cfg: DictConfig) -> Setup:
    """Check the config and build its parts, check the store (unless ``tracking=none``), read the data, make
    the network: each step raises its one-paragraph error (``ConfigError``, ``StoreError``, ``DataError``)
    before the next, and before anything is tracked."""
    built = parts(cfg)
    if cfg.tracking.enabled:
        open_store(resolve_store(cfg.tracking)[0])
    dtype = np.dtype(cfg.train.dtype)
    dataset = load_dataset(cfg.dataset, cfg.seed, dtype)
    rng = np.random.default_rng(cfg.seed)
    network = built.make_network(
        input_dim=dataset.train.X.shape[1], num_classes=dataset.num_classes, rng=rng, dtype=dtype
    )
    return Setup(built, dataset, network, rng)


DATASETS: dict[tuple, Dataset] | None = None  # while ``reusing_datasets``: the data sets read, by config and seed


@contextlib.contextmanager
def reusing_datasets() -> Iterator[None]:
    """Within it, a data set read once (same config, seed, dtype and working folder) is handed out again instead
    of read again: a sweep's trials in one process share it (MNIST's 0.3 s a trial). Training never writes to
    a data set's arrays."""
    global DATASETS
    outer, DATASETS = DATASETS, {} if DATASETS is None else DATASETS
    try:
        yield
    finally:
        DATASETS = outer


def load_dataset(node: DictConfig, seed: int, dtype: np.dtype) -> Dataset:
    """The data set of ``node`` (split with ``seed``), read, or reused inside ``reusing_datasets``."""
    if DATASETS is None:
        return call("dataset", node, seed=seed, dtype=dtype)
    key = (OmegaConf.to_yaml(node, resolve=True), seed, str(dtype), str(Path.cwd()))
    if key not in DATASETS:
        DATASETS.clear()  # one at a time: a sweep over data sets would otherwise hold them all
        DATASETS[key] = call("dataset", node, seed=seed, dtype=dtype)
    return DATASETS[key]


def check_settings(cfg: DictConfig) -> None:
    """The keys (``unknown_keys``), and the values of ``train``, ``seed`` and ``tracking``, which configure the
    loop rather than an object."""
    message = unknown_keys(cfg)
    if message:
        raise ConfigError(message)
    train, tracking = cfg.train, cfg.tracking
    schedule = cfg.get("schedule")
    if schedule is not None and schedule.get("_target_") == "nn.Warmup":
        require(
            schedule.epochs < train.epochs,
            "schedule.epochs",
            schedule.epochs,
            f"shorter than the run (train.epochs={train.epochs}): the warm-up leaves no epochs for the next schedule",
        )
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
    allowed = f"one of {', '.join(POLICIES)}"
    require(policy in POLICIES, "tracking.checkpoints.policy", policy, allowed)
    require(tracking.checkpoints.every >= 1, "tracking.checkpoints.every", tracking.checkpoints.every, ">= 1")
