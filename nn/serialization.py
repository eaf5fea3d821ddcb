"""Save a network to one ``.npz`` holding its architecture (JSON) and weights; ``load`` rebuilds it.

Layout: ``__nnlab__`` is a JSON string ``{"format": "nnlab.network", "version": 1, "layers": [...]}``
with one ``{"type": ..., "config": {...}}`` per layer; each parameter is stored as ``"dense0.W"`` etc.
Files are written to a temporary name and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nn.layers import Dense, Dropout, Layer
from nn.network import Network

FORMAT, VERSION, HEADER = "nnlab.network", 1, "__nnlab__"
TRAINING, OPTIMIZER_PREFIX, EXTRA_PREFIX = "__training__", "optimizer/", "extra/"
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (Dense, Dropout, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax)
}


class ModelFileError(ValueError):
    """A file given to ``load`` is not a complete nnlab network."""


def architecture(network: Network) -> dict:
    """The JSON-serializable description ``load`` rebuilds a network from."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "dtype": str(network.dtype),
        "layers": [{"type": type(layer).__name__, "config": layer.config()} for layer in network.layers],
    }


def save(network: Network, path: str | os.PathLike) -> Path:
    """Write ``network`` to ``path`` (``.npz`` is appended if missing); returns the final path."""
    return write(path, architecture(network), network.params)


def write(
    path: str | os.PathLike, spec: dict, params: dict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None
) -> Path:
    """Write an architecture and its parameters (e.g. copies taken mid-training) as ``save`` does,
    plus ``extra`` arrays that ``load`` ignores."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {HEADER: np.array(json.dumps(spec))} | params | (extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike, rng: np.random.Generator | None = None) -> Network:
    """Rebuild a network saved by ``save``; ``rng`` feeds any dropout layers if training continues."""
    path = Path(path)
    fix = "Pass a file written by nn.save / Network.save (or an MLflow run's weights artifact)."
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file. {fix}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ModelFileError(
            f"{path}: not a readable .npz file ({err}); it may be truncated or of another kind. {fix}"
        ) from err
    if HEADER not in arrays:
        raise ModelFileError(
            f"{path}: an .npz without the {HEADER!r} architecture entry, so not an nnlab network. {fix}"
        )
    arrays = {k: v for k, v in arrays.items() if k != TRAINING and not k.startswith((OPTIMIZER_PREFIX, EXTRA_PREFIX))}
    try:
        spec = json.loads(str(arrays.pop(HEADER)))
        if spec.get("format") != FORMAT or spec.get("version") != VERSION:
            raise ValueError(f"format {spec.get('format')!r} version {spec.get('version')!r}")
        dtype = np.dtype(spec["dtype"])
        layers = [_build_layer(entry, rng, dtype) for entry in spec["layers"]]
        network = Network(layers)
        network.set_params(arrays)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: the architecture or weights do not fit together ({err}). {fix}") from err
    return network


def save_training_state(
    path: str | os.PathLike, network: Network, trainer_state: dict, extra: dict | None = None
) -> Path:
    """A network file that also carries what resuming training needs.

    ``trainer_state`` is ``Trainer.state_dict()`` (optimizer arrays, schedule and generator state);
    ``extra`` is any JSON-serializable record (epoch, history). ``load`` reads the file as a plain network.
    """
    return write(path, *training_snapshot(network, trainer_state, extra))


def training_snapshot(
    network: Network, trainer_state: dict, extra: dict | None = None, extra_arrays: dict | None = None
) -> tuple[dict, dict, dict]:
    """Copies of everything ``save_training_state`` writes, as ``write``'s (spec, params, extra) arguments,
    so that training can go on while another thread writes them. ``extra_arrays`` (name -> array, e.g. a
    callback's best weights) come back from ``load_training_state`` as ``extra["arrays"]``."""
    optimizer = trainer_state["optimizer"]
    record = {
        "optimizer": {"steps": optimizer["steps"], "names": optimizer["names"]},
        "schedule": trainer_state["schedule"],
        "rng": trainer_state["rng"],
        "extra": extra or {},
    }
    arrays = {OPTIMIZER_PREFIX + key: value.copy() for key, value in optimizer["arrays"].items()}
    arrays |= {EXTRA_PREFIX + key: np.array(value, copy=True) for key, value in (extra_arrays or {}).items()}
    arrays[TRAINING] = np.array(json.dumps(record))
    return architecture(network), {k: v.copy() for k, v in network.params.items()}, arrays


def load_training_state(path: str | os.PathLike) -> tuple[Network, dict, dict]:
    """(network, trainer state for ``Trainer.load_state_dict``, extra record) from ``save_training_state``."""
    network = load(path)
    with np.load(path, allow_pickle=False) as npz:
        if TRAINING not in npz.files:
            raise ModelFileError(f"{path}: a network without training state; it cannot resume training.")
        record = json.loads(str(npz[TRAINING]))
        arrays = {k[len(OPTIMIZER_PREFIX) :]: npz[k] for k in npz.files if k.startswith(OPTIMIZER_PREFIX)}
        extra_arrays = {k[len(EXTRA_PREFIX) :]: npz[k] for k in npz.files if k.startswith(EXTRA_PREFIX)}
    state = {
        "optimizer": record["optimizer"] | {"arrays": arrays},
        "schedule": record["schedule"],
        "rng": record["rng"],
    }
    return network, state, record["extra"] | {"arrays": extra_arrays}


def _build_layer(entry: dict, rng, dtype) -> Layer:
    cls = LAYER_TYPES.get(entry["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {entry['type']!r}")
    config = dict(entry["config"])
    if cls is Dense:
        return Dense(**config, rng=np.random.default_rng(0), dtype=dtype)
    if cls is Dropout:
        return Dropout(**config, rng=rng)
    return cls(**config)
