"""experiments/predict.py: MNIST-style preprocessing of digit images, CSV rows, model forms, and bad inputs.

Real MNIST digits (from $NNLAB_DATA_DIR; those tests skip without it) are written as PNGs at other sizes
and polarities and must come back close to the originals and be classified like them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import nn
from experiments.predict import InputError, image_features, main
from experiments.store import use_store
from nn.data import images, load_dataset
from nn.data.images import mnist_like, read_image, to_white_on_black

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "predict.py"


def need_mnist() -> Path:
    root = os.environ.get("NNLAB_DATA_DIR")
    if not root:
        pytest.skip("NNLAB_DATA_DIR is unset: these tests read real MNIST digits from $NNLAB_DATA_DIR/mnist")
    return Path(root)


@pytest.fixture(scope="module")
def mnist():
    """MNIST with 6,000 training images (stratified) and 6,000 test images."""
    return load_dataset("mnist", need_mnist(), subset=6000, seed=0)


@pytest.fixture(scope="module")
def network(mnist, tmp_path_factory):
    """784-128-10 trained for two epochs on the subset (about 95% test accuracy), saved as an .npz."""
    rng = np.random.default_rng(0)
    net = nn.mlp([784, 128, 10], rng=rng)
    net.fit(
        mnist.train.X, mnist.train.y, epochs=2, batch_size=64, rng=rng, optimizer=nn.SGD(lr=0.1, momentum=0.9),
        verbose=False,
    )  # fmt: skip
    path = nn.save(net, tmp_path_factory.mktemp("predict-model") / "mlp128.npz")
    return net, path


def digit_uint8(split, i: int) -> np.ndarray:
    return np.rint(split.X[i].reshape(28, 28) * 255).astype(np.uint8)


def write_rendered(original: np.ndarray, path: Path, size: tuple[int, int], dark_on_light: bool) -> Path:
    """The 28x28 digit resampled to ``size`` (bicubic), optionally inverted, as a PNG/JPEG."""
    image = np.asarray(Image.fromarray(original).resize(size, Image.Resampling.BICUBIC))
    if dark_on_light:
        image = 255 - image
    Image.fromarray(image).save(path)
    return path


def best_shift_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two images, allowing a one-pixel shift (MNIST's centring rounds to whole pixels)."""
    return max(
        float(np.corrcoef(np.roll(a, (dy, dx), axis=(0, 1)).ravel(), b.ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


# -- preprocessing -----------------------------------------------------------------------------------


def test_dark_on_light_is_inverted_and_light_on_dark_is_kept():
    stroke = np.zeros((40, 30))
    stroke[8:32, 12:18] = 1.0
    assert np.allclose(to_white_on_black(stroke), stroke)
    assert np.allclose(to_white_on_black(1.0 - stroke), stroke)
    grey_paper = 0.8 - 0.6 * stroke  # grey ink on grey paper: stretched to full contrast
    assert np.allclose(to_white_on_black(grey_paper), stroke)


def test_transparent_background_with_dark_strokes(tmp_path):
    rgba = np.zeros((50, 50, 4), dtype=np.uint8)  # transparent black everywhere ...
    rgba[10:40, 22:28, 3] = 255  # ... but an opaque black bar
    Image.fromarray(rgba, "RGBA").save(tmp_path / "bar.png")
    image = mnist_like(read_image(tmp_path / "bar.png"))
    assert image.max() == pytest.approx(1.0)
    assert image[0].max() == 0 and image[:, 0].max() == 0  # white bar on black, not the other way round


def test_mnist_like_box_and_centre_of_mass():
    grey = np.ones((300, 120))  # white paper
    grey[40:260, 30:70] = 0.0  # a dark, tall, off-centre bar
    image = mnist_like(grey)
    assert image.shape == (28, 28) and image.dtype == np.float32
    rows, cols = np.flatnonzero(image.max(axis=1) > 0.5), np.flatnonzero(image.max(axis=0) > 0.5)
    assert rows[-1] - rows[0] + 1 == 20  # the longer side scaled to 20 px ...
    assert 3 <= cols[-1] - cols[0] + 1 <= 5  # ... and the other by as much (40 * 20 / 220)
    com = images.center_of_mass(image)
    assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5


def test_blank_image_is_an_error(tmp_path):
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(InputError, match="blank"):
        image_features(tmp_path / "blank.png")


def test_preprocessing_recovers_real_mnist_digits(mnist, network, tmp_path):
    """PNGs of test digits at 3 other sizes, most dark-on-light, come back close to the originals."""
    net, _ = network
    renders = [((84, 84), True), ((200, 200), True), ((57, 57), False)]
    correlations, originals, recovered = [], [], []
    for i in range(30):
        original = digit_uint8(mnist.test, i)
        size, dark = renders[i % len(renders)]
        path = write_rendered(original, tmp_path / f"digit{i}.png", size, dark)
        features = image_features(path)
        assert features.shape == (784,) and 0 <= features.min() and features.max() <= 1
        correlations.append(best_shift_correlation(features.reshape(28, 28), original / 255.0))
        originals.append(original.reshape(-1) / 255.0)
        recovered.append(features)
    assert min(correlations) > 0.85, correlations
    assert np.mean(correlations) > 0.93, correlations
    same = net.predict(np.array(recovered)) == net.predict(np.array(originals))
    assert same.mean() >= 0.9
    assert np.mean(net.predict(np.array(recovered)) == mnist.test.y[:30]) >= 0.8


# -- the command -------------------------------------------------------------------------------------


def parse(stdout: str) -> dict[str, int]:
    """``name: digit   ...`` lines -> {name: digit}."""
    found = {}
    for line in stdout.strip().splitlines():
        name, rest = line.rsplit(": ", 1)
        found[name] = int(rest.split()[0])
    return found


def test_cli_predicts_images_and_csv_rows(mnist, network, tmp_path, capsys):
    net, model_path = network
    images = []
    for i in range(10):
        path = tmp_path / f"digit{i}.{'png' if i % 2 else 'jpg'}"
        write_rendered(digit_uint8(mnist.test, i), path, (112, 112), dark_on_light=i % 3 != 0)
        images.append(str(path))
    pixels = np.rint(mnist.test.X[:5] * 255).astype(int)
    frame = pd.DataFrame(pixels, columns=[f"pixel{k}" for k in range(784)])
    frame.insert(0, "label", mnist.test.y[:5])
    frame.to_csv(tmp_path / "rows.csv", index=False)  # Kaggle layout: header, label column first
    pd.DataFrame(pixels[:2]).to_csv(tmp_path / "bare.csv", index=False, header=False)  # pixels only

    code = main(["--model", str(model_path), *images, str(tmp_path / "rows.csv"), str(tmp_path / "bare.csv")])
    out = capsys.readouterr()
    assert code == 0, out.err
    predicted = parse(out.out)
    expected = net.predict(mnist.test.X[:10])
    agree = [predicted[path] == expected[i] for i, path in enumerate(images)]
    assert sum(agree) >= 9, (predicted, expected)
    for i in range(5):  # CSV rows are the very pixels: exactly the network's predictions
        assert predicted[f"{tmp_path / 'rows.csv'} row {i + 1} (label {mnist.test.y[i]})"] == expected[i]
    assert predicted[f"{tmp_path / 'bare.csv'} row 2"] == expected[1]
    line = out.out.splitlines()[0]  # the digit, then the top 3 classes with probabilities
    assert len(line.split(": ", 1)[1].split()) == 7


def test_script_runs_and_reports_a_bad_file_without_traceback(mnist, network, tmp_path):
    _, model_path = network
    good = write_rendered(digit_uint8(mnist.test, 0), tmp_path / "seven.png", (90, 90), dark_on_light=True)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(model_path), "--top", "2", str(good), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert parse(result.stdout) == {str(good): int(mnist.test.y[0])}
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...), "
        "and not a .csv file of pixel rows."
    ]


def _write_bad_input(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A bad input of ``kind`` and a phrase its error must contain."""
    if kind == "text_as_png":
        path = tmp_path / "text.png"
        path.write_text("hello")
        return path, "not an image"
    if kind == "truncated_png":
        full = tmp_path / "full.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(full)
        path = tmp_path / "truncated.png"
        path.write_bytes(full.read_bytes()[:200])
        return path, "could not be read"
    if kind == "missing":
        return tmp_path / "nowhere.png", "no such file"
    if kind == "directory":
        (tmp_path / "folder.png").mkdir()
        return tmp_path / "folder.png", "could not be read"
    if kind == "blank":
        path = tmp_path / "blank.png"
        Image.fromarray(np.zeros((30, 30), np.uint8)).save(path)
        return path, "blank"
    if kind == "csv_wrong_width":
        path = tmp_path / "narrow.csv"
        pd.DataFrame(np.zeros((2, 100), int)).to_csv(path, index=False, header=False)
        return path, "has 100 columns in its first line but a file without a label column needs 784"
    if kind == "csv_not_numbers":
        path = tmp_path / "words.csv"
        rows = np.zeros((3, 784), int).astype(str)
        rows[2, 5] = "seven"
        pd.DataFrame(rows).to_csv(path, index=False, header=False)
        return path, "non-integer value 'seven' at line 3, column 6"
    if kind == "csv_out_of_range":
        path = tmp_path / "range.csv"
        pd.DataFrame(np.full((1, 784), 300)).to_csv(path, index=False, header=False)
        return path, "0..255"
    if kind == "csv_empty":
        path = tmp_path / "empty.csv"
        path.write_text("")
        return path, "empty"
    if kind == "csv_binary":
        path = tmp_path / "binary.csv"
        path.write_bytes(bytes(range(256)) * 4)
        return path, "not a readable CSV"
    raise AssertionError(kind)


BAD_INPUTS = [
    "text_as_png",
    "truncated_png",
    "missing",
    "directory",
    "blank",
    "csv_wrong_width",
    "csv_not_numbers",
    "csv_out_of_range",
    "csv_empty",
    "csv_binary",
]


@pytest.fixture(scope="module")
def small_network_file(tmp_path_factory) -> Path:
    """An untrained 784-16-10 network: enough to exercise input errors without MNIST."""
    return nn.save(nn.mlp([784, 16, 10], rng=np.random.default_rng(0)), tmp_path_factory.mktemp("m") / "n.npz")


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_clear_error_and_exit_code_2(kind, small_network_file, tmp_path, capsys):
    path, phrase = _write_bad_input(kind, tmp_path)
    code = main(["--model", str(small_network_file), str(path)])
    out = capsys.readouterr()
    assert code == 2
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), out.err
    assert phrase in lines[0]


def test_bad_model_arguments(tmp_path, small_network_file, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(image)
    not_npz = tmp_path / "weights.npz"
    not_npz.write_text("garbage")
    cases = {
        "no-such-model.npz": "no such file, and not a run id",
        str(not_npz): "not a readable .npz file",
        "runs:/0123456789abcdef0123456789abcdef/mlp-784-10": "no MLflow store",
    }
    for model, phrase in cases.items():
        code = main(["--model", model, "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", str(image)])
        err = capsys.readouterr().err
        assert code == 2 and phrase in err and err.count("\n") == 1, err
    assert not (tmp_path / "none.db").exists()  # a mistyped store is not created


# -- MLflow runs and models --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, compose):
    """One tracked run on scikit-learn's digits through ``train(cfg)``: (store uri, run id, model id)."""
    import mlflow

    from experiments.train import train

    store = tmp_path_factory.mktemp("predict-store")
    cfg = compose(
        "dataset=digits", "model=mlp128", "train.epochs=8", f"tracking.dir={store}", "tracking.experiment=predict"
    )
    try:
        train(cfg)
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("predict").experiment_id])
    logged = client.search_logged_models([run.info.experiment_id])
    (last,) = [m for m in logged if m.tags["nnlab.checkpoint"] == "last"]  # the final model, maybe a -best one too
    return uri, run.info.run_id, last.model_id


@pytest.mark.slow
def test_run_id_and_model_uris_give_the_same_predictions(digits_run, tmp_path, capsys):
    import mlflow

    uri, run_id, model_id = digits_run
    digits = load_dataset("digits", seed=0)
    paths = []
    for i in range(6):  # digits drawn large, dark on light
        raw = np.rint(digits.test.X[i].reshape(8, 8) * 255).astype(np.uint8)
        path = tmp_path / f"d{i}.png"
        Image.fromarray(255 - raw).resize((80, 80), Image.Resampling.BICUBIC).save(path)
        paths.append(str(path))
    use_store(uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    expected = pyfunc.predict(pd.DataFrame(np.array([image_features(p, 64) for p in paths])))["digit"].tolist()
    assert np.mean(np.array(expected) == digits.test.y[:6]) >= 0.5  # the drawings still look like digits
    for model in (
        run_id,
        f"runs:/{run_id}/mlp-64-128-10-e8",  # the final model: its layers and epoch
        f"models:/{model_id}",
        f"runs:/{run_id}/checkpoints/last.npz",
    ):
        code = main(["--model", model, "--tracking-uri", uri, *paths])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert [parse(out.out)[p] for p in paths] == expected, model


def test_unknown_run_id_is_a_clear_error(digits_run, tmp_path, capsys):
    uri, _, _ = digits_run
    image = tmp_path / "x.png"
    Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(image)
    code = main(["--model", "0123456789abcdef0123456789abcdef", "--tracking-uri", uri, str(image)])
    err = capsys.readouterr().err
    assert code == 2
    assert "not found" in err and "--tracking-uri" in err and err.count("\n") == 1, err
