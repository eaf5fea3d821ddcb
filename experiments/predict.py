"""Classify digit images or CSV rows with a trained network: an MLflow run or model, or an ``.npz`` file.

    python experiments/predict.py --model 3f2c...e1 digit.png scan.jpg rows.csv
    python experiments/predict.py --model runs:/3f2c...e1/model --tracking-uri sqlite:///mlruns/mlflow.db seven.png
    python experiments/predict.py --model wide1024.npz seven.png

An image may be of any size and either polarity (dark ink on light paper or light on dark); it is
turned into what MNIST's networks saw (:func:`mnist_like`): white on black, cropped to the ink, the
longer side scaled to 20 pixels and placed in 28x28 so that the centre of mass is at the centre. A CSV
holds one image per row: the pixel values 0..255, optionally after a label column, optionally under a
header. Any bad input is reported as one paragraph on stderr and the exit code is 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

import nn
from nn.data import DataError, read_mnist_csv

MNIST_SIDE, DIGIT_BOX = 28, 20  # MNIST: the digit's longer side is 20 px inside a 28x28 field
INK = 0.1  # a pixel is ink above this share of the full contrast (for the bounding box)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class InputError(Exception):
    """An input, or the model, cannot be used; the message is shown to the user as it is."""


# -- images --------------------------------------------------------------------------------------


MAX_PIXELS = 25_000_000  # a 5000x5000 photo; its float64 copies stay under a gigabyte


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Grey levels in [0, 1], shape (H, W), of an image file; transparent areas become background."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise InputError(
                    f"{path}: the image is {width}x{height} pixels, more than the {MAX_PIXELS // 10**6} million this "
                    "reads (decoding it would take gigabytes); a digit needs far fewer. Scale it down or crop it."
                )
            image = ImageOps.exif_transpose(image)
            image.load()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file.") from None
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...), "
            "and not a .csv file of pixel rows."
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: the image could not be read ({err}); it may be truncated or damaged.") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
        opaque = alpha > 0.5
        # Strokes drawn on a transparent sheet: put them on a background that contrasts with them.
        ink_level = grey[opaque].mean() if opaque.any() and not opaque.all() else 0.0
        background = 0.0 if ink_level > 0.5 else 1.0
        return grey * alpha + background * (1.0 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def to_white_on_black(grey: np.ndarray) -> np.ndarray:
    """Ink at 1, background at 0: inverts dark-on-light images (judged by the border) and stretches contrast.

    The background level is the median of the one-pixel border (the mean brightness when the border is
    mixed); a light background means dark ink, so the image is inverted.
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ValueError(f"expected a 2-D grey image, got shape {grey.shape}")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    level = float(np.median(border))
    if abs(level - 0.5) < 0.1:  # a border as much ink as paper: go by the whole picture
        level = float(grey.mean())
    if level > 0.5:
        grey = 1.0 - grey
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    top = float(grey.max())
    if top - background < 0.05:
        return np.zeros_like(grey)
    return np.clip((grey - background) / (top - background), 0.0, 1.0)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre of ``image``, in pixel indices."""
    total = image.sum()
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    return float(image.sum(axis=1) @ rows / total), float(image.sum(axis=0) @ cols / total)


def mnist_like(grey: np.ndarray, side: int = MNIST_SIDE, box: int = DIGIT_BOX) -> np.ndarray:
    """MNIST's preprocessing of a digit image: float32 (side, side) in [0, 1], white digit on black.

    Steps: :func:`to_white_on_black`; crop to the bounding box of the ink; scale (anti-aliased, keeping
    the aspect ratio) so that the longer side is ``box`` pixels; paste into ``side`` x ``side`` so the
    centre of mass lands on pixel (side/2, side/2), as LeCun et al. did for MNIST. ValueError when the
    image holds no ink.
    """
    image = to_white_on_black(grey)
    ink = image > INK
    if not ink.any():
        raise ValueError("the image is blank: no digit stands out from the background")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(digit, dtype=np.float64), 0.0, 1.0)
    out = np.zeros((side, side), dtype=np.float64)
    com_row, com_col = center_of_mass(digit)
    top = int(np.clip(round(side / 2 - com_row), 0, side - digit.shape[0]))
    left = int(np.clip(round(side / 2 - com_col), 0, side - digit.shape[1]))
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return out.astype(np.float32)


def image_features(path: str | os.PathLike, input_dim: int = MNIST_SIDE * MNIST_SIDE) -> np.ndarray:
    """One image file as a model input row (input_dim,) in [0, 1].

    MNIST models take :func:`mnist_like`'s 28x28 image; a model with another square input, side s (the 8x8
    ``digits``), gets the digit scaled to fill 4s x 4s and averaged over 4x4 blocks, as those were made.
    """
    side = round(input_dim**0.5)
    if side * side != input_dim:
        raise InputError(f"{path}: the model takes {input_dim} inputs, not a square image; give it CSV rows.")
    grey = read_image(path)
    try:
        if side == MNIST_SIDE:
            return mnist_like(grey).reshape(-1)
        # scikit-learn's digits: 32x32 bitmaps filling the frame, counted in 4x4 blocks.
        image = mnist_like(grey, side=4 * side, box=4 * side)
    except ValueError as err:
        raise InputError(f"{path}: {err}.") from None
    return image.reshape(side, 4, side, 4).mean(axis=(1, 3)).reshape(-1)


# -- CSV rows ------------------------------------------------------------------------------------


@dataclass
class CsvRows:
    X: np.ndarray  # (N, input_dim) in [0, 1]
    labels: np.ndarray | None  # (N,) or None


def read_csv_rows(path: str | os.PathLike, input_dim: int = MNIST_SIDE * MNIST_SIDE) -> CsvRows:
    """Rows of ``input_dim`` pixel values 0..255, optionally after a label column (first) and under a
    header: ``nn.data.read_mnist_csv`` with the model's input size."""
    try:
        pixels, labels = read_mnist_csv(path, num_pixels=input_dim)
    except DataError as err:
        raise InputError(f"{path}: {err}") from None
    return CsvRows(X=pixels / 255.0, labels=None if labels is None else labels.astype(np.int64))


# -- models --------------------------------------------------------------------------------------


@dataclass
class Model:
    """Something that maps (N, input_dim) inputs to (N, K) class probabilities."""

    description: str
    input_dim: int
    predict_proba: object  # Callable[[np.ndarray], np.ndarray]


def model_uri(spec: str) -> str:
    """A run id -> ``runs:/<id>/model``; MLflow URIs as given."""
    return f"runs:/{spec}/model" if RUN_ID.match(spec) else spec


def load_model(spec: str, tracking_uri: str | None = None) -> Model:
    """A network from a local ``.npz`` (``nn.save``), a run id, ``runs:/``/``models:/`` URI or a model folder."""
    path = Path(spec).expanduser()
    if path.is_file():
        return _network_model(spec, path)
    if path.is_dir() and (path / "MLmodel").is_file():
        return _pyfunc_model(spec, str(path))
    uri = model_uri(spec)
    if not (RUN_ID.match(spec) or re.match(r"^[a-z][a-z0-9+.-]*:/", spec)):
        raise InputError(
            f"--model {spec}: no such file, and not a run id (32 hex digits) or an MLflow model URI "
            "(runs:/<run id>/model, models:/<model id>, models:/<name>/<version>)."
        )
    from experiments import tracking

    if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or tracking.DEFAULT_STORE.is_file():
        tracking_uri = tracking.tracking_uri(tracking_uri)
    if tracking_uri is None and uri.startswith(("runs:/", "models:/")):
        raise InputError(
            f"--model {spec}: there is no MLflow store to look it up in: ./{tracking.DEFAULT_STORE} does not exist "
            "here and MLFLOW_TRACKING_URI is unset. Pass --tracking-uri sqlite:///path/to/mlruns/mlflow.db "
            "(or http://host:port of a tracking server)."
        )
    if tracking_uri:
        from experiments.store import StoreError, open_store

        try:  # in seconds: an unreachable server, or a path where MLflow would quietly create an empty store
            open_store(tracking_uri, create=False)
        except StoreError as err:
            raise InputError(f"--tracking-uri {tracking_uri}: {err}") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        if uri.endswith(".npz"):  # a weights artifact, e.g. runs:/<id>/checkpoints/best.npz
            local = mlflow.artifacts.download_artifacts(uri)
            return _network_model(spec, Path(local))
        return _pyfunc_model(spec, uri)
    except InputError:
        raise
    except Exception as err:  # MlflowException, OSError, or whatever unpickling the model raises
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, (MlflowException, OSError)):
            message = f"{type(err).__name__}: {message}"
        raise InputError(
            f"--model {spec}: could not load {uri} from the MLflow store {tracking_uri or mlflow.get_tracking_uri()} "
            f"({message}). Check the run id in the MLflow UI or with experiments/compare.py, and that "
            "--tracking-uri names the store the run was logged to."
        ) from None


def _network_model(spec: str, path: Path) -> Model:
    try:
        network = nn.load(path)
    except nn.serialization.ModelFileError as err:
        raise InputError(f"--model {spec}: {err}") from None
    return Model(f"{spec} ({network.input_dim} inputs)", network.input_dim, network.predict_proba)


def _pyfunc_model(spec: str, uri: str) -> Model:
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise InputError(f"--model {spec}: the MLflow model has no input signature, so its input size is unknown.")
    input_dim = len(schema.inputs)

    def predict_proba(x: np.ndarray) -> np.ndarray:
        frame = model.predict(pd.DataFrame(np.asarray(x, dtype=np.float64)))
        return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()

    return Model(f"{spec} ({uri}, {input_dim} inputs)", input_dim, predict_proba)


# -- command line --------------------------------------------------------------------------------


def format_prediction(name: str, probs: np.ndarray, top: int, label: int | None = None) -> str:
    """``seven.png: 7   7 0.982  1 0.011  9 0.004`` (the digit, then the ``top`` classes and probabilities)."""
    order = np.argsort(-probs, kind="stable")[:top]
    shown = "  ".join(f"{k} {probs[k]:.3f}" for k in order)
    label_text = f" (label {label})" if label is not None else ""
    return f"{name}{label_text}: {int(order[0])}   {shown}"


def predict_inputs(model: Model, inputs: Sequence[str], top: int) -> tuple[list[str], list[str]]:
    """(lines to print, error paragraphs) for every input."""
    lines, errors = [], []
    for item in inputs:
        try:
            if item.lower().endswith(".csv"):
                rows = read_csv_rows(item, model.input_dim)
                probs = model.predict_proba(rows.X)
                for i, p in enumerate(probs):
                    label = None if rows.labels is None else int(rows.labels[i])
                    lines.append(format_prediction(f"{item} row {i + 1}", p, top, label))
            else:
                probs = model.predict_proba(image_features(item, model.input_dim)[None, :])
                lines.append(format_prediction(item, probs[0], top))
        except InputError as err:
            errors.append(str(err))
        except Exception as err:  # noqa: BLE001 - one odd file must not hide the others' predictions
            errors.append(f"{item}: could not be classified ({type(err).__name__}: {err}).")
    return lines, errors


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python experiments/predict.py",
        description="Predict the digit in image files (PNG, JPEG, ... of any size, either polarity) or CSV rows "
        "(784 pixel values 0..255, optional label column and header) with a trained network.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="an MLflow run id, runs:/<run id>/model, models:/<model id>, runs:/<run id>/checkpoints/best.npz, "
        "a local MLflow model folder, or an .npz written by nn.save",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store for run ids and URIs (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)",
    )
    parser.add_argument("--top", type=int, default=3, help="how many classes to list with probabilities (default 3)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_CSV", help="image files and/or .csv files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = load_model(args.model, args.tracking_uri)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines, errors = predict_inputs(model, args.inputs, max(1, args.top))
    for line in lines:
        print(line)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
