"""Classify digit images or CSV rows with a trained network: an MLflow run or model, or an ``.npz`` file.

    python experiments/predict.py --model 3f2c...e1 digit.png scan.jpg rows.csv
    python experiments/predict.py --model models:/m-5d1a... --tracking-uri sqlite:///mlruns/mlflow.db seven.png
    python experiments/predict.py --model wide1024.npz seven.png

An image may be of any size and either polarity (dark ink on light paper or light on dark); it is
turned into what MNIST's networks saw (``nn.data.images.mnist_like``): white on black, cropped to the
ink, the longer side scaled to 20 pixels and placed in 28x28 so that the centre of mass is at the centre. A CSV
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

import nn
from nn.data import DataError, images, read_mnist_csv
from nn.data.images import MNIST_SIDE

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class InputError(Exception):
    """An input, or the model, cannot be used; the message is shown to the user as it is."""


# -- images --------------------------------------------------------------------------------------


def image_features(path: str | os.PathLike, input_dim: int = MNIST_SIDE * MNIST_SIDE) -> np.ndarray:
    """One image file as a model input row (input_dim,): ``nn.data.images.image_features``."""
    try:
        return images.image_features(path, input_dim)
    except images.ImageError as err:
        message = str(err).replace("WebP...).", "WebP...), and not a .csv file of pixel rows.")
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None


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
    """A run id -> ``models:/<id of the run's final logged model>``; MLflow URIs as given."""
    if not RUN_ID.match(spec):
        return spec
    import mlflow

    from experiments.tracking.tags import CHECKPOINT

    run = mlflow.get_run(spec)  # MlflowException "not found" for an unknown id
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{spec}' AND tags.`{CHECKPOINT}` = 'last'",
        output_format="list",
    )
    if not models:
        raise InputError(
            f"--model {spec}: the run has no logged model (it was run with tracking.log_model=false, or did not "
            f"finish); use one of its weight files instead: --model runs:/{spec}/checkpoints/last.npz"
        )
    return f"models:/{models[0].model_id}"


def load_model(spec: str, tracking_uri: str | None = None) -> Model:
    """A network from a local ``.npz`` (``nn.save``), a run id, ``runs:/``/``models:/`` URI or a model folder."""
    path = Path(spec).expanduser()
    if path.is_file():
        return _network_model(spec, path)
    if path.is_dir() and (path / "MLmodel").is_file():
        return _pyfunc_model(spec, str(path))
    if not (RUN_ID.match(spec) or re.match(r"^[a-z][a-z0-9+.-]*:/", spec)):
        raise InputError(
            f"--model {spec}: no such file, and not a run id (32 hex digits) or an MLflow model URI "
            "(models:/<model id>, models:/<registered name>/<version>, runs:/<run id>/checkpoints/best.npz)."
        )
    from experiments import store

    named = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    tracking_uri = store.tracking_uri(tracking_uri)
    if not named and not store.DEFAULT_STORE.is_file():
        tracking_uri = None  # no store named and none here: looking must not create an empty one
    if tracking_uri is None and (RUN_ID.match(spec) or spec.startswith(("runs:/", "models:/"))):
        raise InputError(
            f"--model {spec}: there is no MLflow store to look it up in: ./{store.DEFAULT_STORE} does not exist "
            "here and MLFLOW_TRACKING_URI is unset. Pass --tracking-uri sqlite:///path/to/mlruns/mlflow.db "
            "(or http://host:port of a tracking server)."
        )
    if tracking_uri:
        try:  # in seconds: an unreachable server, or a path where MLflow would quietly create an empty store
            store.open_store(tracking_uri, create=False)
        except store.StoreError as err:
            raise InputError(f"--tracking-uri {tracking_uri}: {err}") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if tracking_uri:
        store.use_store(tracking_uri)
    uri = spec
    try:
        uri = model_uri(spec)
        if uri.endswith(".npz"):  # a weights artifact, e.g. runs:/<id>/checkpoints/best.npz
            local = mlflow.artifacts.download_artifacts(uri)
            return _network_model(spec, Path(local))
        return _pyfunc_model(spec, uri)
    except InputError:
        raise
    except Exception as err:  # MlflowException, OSError, or whatever unpickling the model raises
        raise InputError(
            f"--model {spec}: could not load {uri} from the MLflow store {tracking_uri or mlflow.get_tracking_uri()} "
            f"({store.first_line(err)}). Check the run id in the MLflow UI or with experiments/compare.py, and that "
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
    network = getattr(model.unwrap_python_model(), "network", None)
    if network is None:
        raise InputError(f"--model {spec}: not a model logged by nnlab (experiments/digit_model.py).")
    input_dim = network.input_dim

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
        help="an MLflow run id (its final model), models:/<model id>, models:/<name>/<version>, "
        "runs:/<run id>/checkpoints/best.npz, "
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
