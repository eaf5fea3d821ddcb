"""The logged MLflow model (``experiments/pyfunc.py`` logs ``experiments/digit_model.py`` as code): named by its
layer sizes, predicting like the network from pixel rows or base64 images, refusing other input briefly."""

import base64
import io
import sys
import time
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import nn
from experiments.digit_model import DigitClassifier
from experiments.pyfunc import log_model
from experiments.store import use_store
from nn.data.images import image_features


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """(N, 64) scikit-learn 8x8 digits scaled to [0, 1], float32."""
    return (load_digits().data[:50] / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def network() -> nn.Network:
    return nn.mlp([64, 16, 10], rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def logged(tmp_path_factory, network, digits):
    """(model info, seconds log_model took), logged once into a temporary SQLite store."""
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored, with the URI below, at teardown
        env.setattr(sys, "path", list(sys.path))  # loading a model prepends its code directory
        use_store(f"sqlite:///{root}/mlflow.db")
        try:
            experiment_id = mlflow.create_experiment("pyfunc", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=experiment_id), warnings.catch_warnings():
                warnings.simplefilter("error")  # no cloudpickle or type-hint warning
                start = time.perf_counter()
                info = log_model(network, digits, step=7, tags={"nnlab.checkpoint": "last"})
                seconds = time.perf_counter() - start
            yield info, seconds
        finally:
            use_store(previous)


@pytest.fixture(scope="module")
def loaded(logged):
    return mlflow.pyfunc.load_model(logged[0].model_uri)


def test_log_model_is_fast(logged):
    assert logged[1] < 5.0


def test_logged_model_is_named_by_its_layers_with_its_epoch(logged):
    model = mlflow.get_logged_model(logged[0].model_id)
    assert model.name == "mlp-64-16-10"
    assert model.tags["nnlab.checkpoint"] == "last"
    assert logged[0].signature.inputs is None  # rows or images: checked by the model, not by MLflow
    assert [c.name for c in logged[0].signature.outputs.inputs] == ["digit"] + [f"prob_{k}" for k in range(10)]


def test_loaded_model_predicts_like_the_network(loaded, network, digits):
    out = loaded.predict(digits)
    assert list(out.columns) == ["digit"] + [f"prob_{k}" for k in range(10)]
    assert out["digit"].dtype == np.int64 and out["prob_0"].dtype == np.float64
    probs = network.predict_proba(digits)
    np.testing.assert_allclose(out.filter(like="prob_").to_numpy(), probs, rtol=1e-6)
    np.testing.assert_array_equal(out["digit"].to_numpy(), probs.argmax(axis=1))


@pytest.mark.parametrize("convert", [pd.DataFrame, lambda x: x.astype(np.float64), lambda x: x.tolist()])
def test_loaded_model_accepts_dataframes_float64_and_lists(loaded, network, digits, convert):
    out = loaded.predict(convert(digits[:5]))
    np.testing.assert_allclose(out.filter(like="prob_").to_numpy(), network.predict_proba(digits[:5]), rtol=1e-6)


def test_json_serving_payload_round_trips(logged):
    payload = mlflow.models.convert_input_example_to_serving_input(np.zeros((3, 64)))
    with pytest.warns(FutureWarning):  # deprecated in favour of mlflow.models.predict, which starts a process
        out = mlflow.models.validate_serving_input(logged[0].model_uri, payload)
    assert out.shape == (3, 11)


def test_loaded_model_rejects_the_wrong_number_of_columns(loaded, digits):
    with pytest.raises(ValueError, match=r"expected rows of 64 numbers .* got an array of shape \(50, 10\)"):
        loaded.predict(digits[:, :10])


def png_base64(pixels: np.ndarray, size: int) -> str:
    """A grey (H, W) array in [0, 1] as a base64 PNG, scaled to ``size`` x ``size`` and inverted (dark ink)."""
    image = Image.fromarray(((1.0 - pixels) * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_loaded_model_classifies_base64_images_as_their_prepared_rows(loaded, network, digits):
    """A column ``image`` of PNGs (dark on light, 80x80): prepared inside the model as predict.py prepares a file."""
    encoded = [png_base64(row.reshape(8, 8), 80) for row in digits[:6]]
    out = loaded.predict(pd.DataFrame({"image": encoded}))
    rows = np.stack([image_features(base64.b64decode(text), 64) for text in encoded])
    np.testing.assert_allclose(out.filter(like="prob_").to_numpy(), network.predict_proba(rows), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict({"image": encoded[:2]})["digit"], out["digit"][:2])


@pytest.mark.parametrize(
    "bad, message",
    [("not base64!", "image 0: not valid base64"), (base64.b64encode(b"hello").decode(), "not an image Pillow")],
)
def test_loaded_model_names_a_bad_image(loaded, bad, message):
    with pytest.raises(ValueError, match=message):
        loaded.predict(pd.DataFrame({"image": [bad]}))


@pytest.fixture
def classifier(network) -> DigitClassifier:
    model = DigitClassifier()
    model.network = network
    return model


def test_predict_accepts_a_single_row_and_a_dataframe(classifier, network, digits):
    row = classifier.predict(None, digits[0])
    assert row.shape == (1, 11)
    frame = classifier.predict(None, pd.DataFrame(digits[:4], columns=[f"pixel{i}" for i in range(64)]))
    np.testing.assert_allclose(frame.filter(like="prob_").to_numpy(), network.predict_proba(digits[:4]), rtol=1e-6)


@pytest.mark.parametrize(
    "bad_input",
    [np.zeros((2, 10)), pd.DataFrame({"a": ["x", "y"]}), [["a"] * 64], np.zeros((2, 8, 8))],
    ids=["wrong-columns", "non-numeric-frame", "strings", "3-d"],
)
def test_predict_rejects_bad_input_naming_the_expected_width(classifier, bad_input):
    with pytest.raises(ValueError, match="expected rows of 64 numbers"):
        classifier.predict(None, bad_input)
