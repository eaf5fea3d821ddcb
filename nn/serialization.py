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


def write(path: str | os.PathLike, spec: dict, params: dict[str, np.ndarray]) -> Path:
    """Write an architecture and its parameters (e.g. copies taken mid-training) as ``save`` does."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {HEADER: np.array(json.dumps(spec))} | params
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
