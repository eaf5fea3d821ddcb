"""``mlflow models serve`` of a model logged by a training run, asked over HTTP to classify real MNIST digits.

A short run on MNIST (a 2,000-image subset, two epochs; scikit-learn's digits when $NNLAB_DATA_DIR is
unset) logs its network as a pyfunc model; the served model must answer ``/invocations`` with the
network's own predictions, in the ``inputs`` and ``dataframe_split`` formats, classify PNG files of
real test digits sent as base64, and answer a malformed request with a short message.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nn
from nn.data import load_dataset

from .conftest import free_port, group_alive, train_tracked

pytestmark = pytest.mark.slow  # a server or a browser

SAMPLES = 200


def serve_command(model_uri: str, port: int) -> list[str]:
    """The README's ``mlflow models serve`` command (the venv's console script), on ``port``."""
    mlflow = Path(sys.executable).with_name("mlflow")
    head = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    return [*head, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1"] + [
        "--port",
        str(port),
    ]


def post(url: str, payload: dict, timeout: float = 60.0) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store URI, final model's URI, run id, test images X, labels y): one short tracked run and test images
    it never saw."""
    from mlflow.tracking import MlflowClient

    store = tmp_path_factory.mktemp("serving-store")
    root = os.environ.get("NNLAB_DATA_DIR")
    if root:
        dataset = ["dataset=mnist", "dataset.subset=2000", "train.epochs=2"]
        test = load_dataset("mnist", root, subset=2000, seed=0).test
    else:  # still a real server and real digits, offline
        dataset = ["dataset=digits", "train.epochs=10"]
        test = load_dataset("digits", seed=0).test
    run_id = train_tracked(
        *dataset, "model=mlp128", "train.progress=false", f"tracking.dir={store}", "tracking.experiment=serving"
    )
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri)
    logged = client.search_logged_models([client.get_run(run_id).info.experiment_id])
    (last,) = [m for m in logged if m.tags["nnlab.checkpoint"] == "last"]
    return uri, f"models:/{last.model_id}", run_id, test.X[:SAMPLES].astype(np.float64), test.y[:SAMPLES]


@pytest.fixture(scope="module")
def served(trained, start_server, tmp_path_factory):
    """The run's model served on a free port: (base URL, the network's own probabilities, labels)."""
    from mlflow.tracking import MlflowClient

    uri, model_uri, run_id, X, y = trained
    port = free_port()
    server = start_server("mlflow-models-serve", serve_command(model_uri, port), port, env={"MLFLOW_TRACKING_URI": uri})
    # Meanwhile: the weights the run ended with, straight from its checkpoint artifact.
    weights = MlflowClient(uri).download_artifacts(run_id, "checkpoints/last.npz", str(tmp_path_factory.mktemp("w")))
    probs = nn.load(weights).predict_proba(X)
    seconds = server.wait_ready("/ping")
    print(f"mlflow models serve answered /ping after {seconds:.1f} s")
    yield server.url, X, probs, y
    pgid = server.process.pid
    server.stop()
    assert not group_alive(pgid), "processes of the model server's group outlived stop()"


def predictions(body: dict) -> tuple[np.ndarray, np.ndarray]:
    """(digits, probabilities) from the scoring server's ``{"predictions": [{"digit":..., "prob_0":...}, ...]}``."""
    rows = body["predictions"]
    digits = np.array([row["digit"] for row in rows])
    probs = np.array([[row[f"prob_{k}"] for k in range(10)] for row in rows])
    return digits, probs


def test_invocations_inputs_format(served):
    url, X, probs, y = served
    status, body = post(url + "/invocations", {"inputs": X.tolist()})
    assert status == 200, body
    digits, served_probs = predictions(body)
    np.testing.assert_array_equal(digits, probs.argmax(axis=1))  # the network's own predictions
    np.testing.assert_allclose(served_probs, probs, atol=1e-5)
    accuracy = float(np.mean(digits == y))
    print(f"served model: {accuracy:.1%} of {len(y)} test images right")
    assert accuracy >= 0.8


def test_invocations_dataframe_split_format(served):
    url, X, probs, _ = served
    status, body = post(url + "/invocations", {"dataframe_split": {"data": X[:20].tolist()}})
    assert status == 200, body
    digits, _ = predictions(body)
    np.testing.assert_array_equal(digits, probs[:20].argmax(axis=1))


def png_base64(pixels: np.ndarray, size: int) -> str:
    """A test digit (D,) in [0, 1] as a PNG the way a person would send one: dark ink on white, ``size`` pixels."""
    side = round(len(pixels) ** 0.5)
    grey = np.rint((1.0 - pixels.reshape(side, side)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_invocations_classify_png_images_sent_as_base64(served):
    """PNGs of real test digits, 3x their size and inverted: prepared inside the model, classified right."""
    url, X, _, y = served
    n = 40
    images = [png_base64(row, 3 * round(len(row) ** 0.5)) for row in X[:n]]
    payload = {"dataframe_split": {"columns": ["image"], "data": [[image] for image in images]}}
    status, body = post(url + "/invocations", payload)
    assert status == 200, body
    digits, _ = predictions(body)
    accuracy = float(np.mean(digits == y[:n]))
    print(f"served model on PNGs: {accuracy:.1%} of {n} test digits right")
    assert accuracy >= 0.75
    status, body = post(url + "/invocations", {"inputs": {"image": images[:1]}})  # the other JSON form
    assert status == 200 and predictions(body)[0][0] == digits[0], body


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"inputs": [[0.5] * 10] * 2}, "expected rows of"),
        ({"dataframe_split": {"columns": ["image"], "data": [["not a png"]]}}, "image 0: not valid base64"),
    ],
    ids=["wrong-width", "not-an-image"],
)
def test_invocations_reject_bad_input_with_a_short_message(served, payload, expected):
    url, X, _, _ = served
    status, body = post(url + "/invocations", payload)
    assert status == 400, body
    message = body.get("message", "")
    assert expected in message and f"rows of {X.shape[1]} numbers" in message, message
    assert len(json.dumps(body)) < 600, body  # MLflow quotes the request, then our sentence: no schema dump
