"""Every dataset option trains with MLflow tracking on, its data recorded as the run's input; a run whose
training or logging raises is closed as FAILED, never FINISHED, and the command exits non-zero."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from experiments.outcome import RunFailed
from experiments.tracking import mlflow_run
from experiments.train import train
from tests.experiments.conftest import inputs_by_context

REPO = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=2", "train.progress=false", "train.divergence.check_after=3", "model=mlp128"]
QUIET = ["tracking.log_model=false", "tracking.misclassified=0"]


def fake_images(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (rows, 28, 28) and balanced labels 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(rows, 28, 28), dtype=np.uint8), (np.arange(rows) % 10).astype(np.uint8)


def write_idx_folder(folder: Path) -> list[Path]:
    """The four MNIST-named IDX files (training pair gzipped) of 200 train and 50 test images."""
    folder.mkdir(parents=True)
    paths = []
    for prefix, (images, labels) in {"train": fake_images(200, 0), "t10k": fake_images(50, 1)}.items():
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
            data = header + array.tobytes()
            path = folder / f"{prefix}-{kind}-ubyte{'.gz' if prefix == 'train' else ''}"
            path.write_bytes(gzip.compress(data) if prefix == "train" else data)
            paths.append(path)
    return paths


def write_csv(path: Path, rows: int, seed: int, labels: bool = True, header: bool = True) -> Path:
    images, y = fake_images(rows, seed)
    table = images.reshape(rows, -1).astype(np.int64)
    names = [f"pixel{i}" for i in range(784)]
    if labels:
        table, names = np.column_stack([y, table]), ["label", *names]
    np.savetxt(path, table, fmt="%d", delimiter=",", header=",".join(names) if header else "", comments="")
    if not header:  # np.savetxt writes an empty first line for header=""
        path.write_text(path.read_text().lstrip("\n"))
    return path


def dataset_option(kind: str, tmp_path: Path) -> tuple[list[str], list[Path], Path]:
    """(overrides, files read, the training source) of one dataset option on files written here."""
    if kind in ("mnist", "fashion_mnist"):
        files = write_idx_folder(tmp_path / "data" / kind)
        overrides = [f"dataset={kind}", f"dataset.root={tmp_path / 'data'}", "dataset.download=false"]
        return overrides, [files[0], files[1], files[2], files[3]], tmp_path / "data" / kind
    if kind == "digits":
        from importlib.resources import files

        digits = Path(str(files("sklearn.datasets") / "data" / "digits.csv.gz"))
        return ["dataset=digits", "dataset.subset=300"], [digits], digits
    layouts = {  # (train file, its header; test file, its header, its labels)
        "csv_digit_recognizer": ("train.csv", True, "test.csv", True, False),
        "csv_mnist_in_csv": ("mnist_train.csv", False, "mnist_test.csv", False, True),
        "csv_train_only": ("train.csv", True, None, None, None),
    }
    train_name, train_header, test_name, test_header, test_labels = layouts[kind]
    train_csv = write_csv(tmp_path / train_name, 120, 0, header=train_header)
    overrides, read = ["dataset=csv", f"dataset.train_csv={train_csv}"], [train_csv]
    if test_name is not None:
        test_csv = write_csv(tmp_path / test_name, 40, 1, labels=test_labels, header=test_header)
        overrides.append(f"dataset.test_csv={test_csv}")
        read.append(test_csv)
    return overrides, read, train_csv


KINDS = ["mnist", "fashion_mnist", "digits", "csv_digit_recognizer", "csv_mnist_in_csv", "csv_train_only"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_dataset_option_trains_tracked_with_its_input_recorded(
    kind, compose, tmp_path, mlflow_store, experiment_name
):
    overrides, files, source = dataset_option(kind, tmp_path)
    cfg = compose(*overrides, *FAST, *QUIET, *mlflow_store.overrides(experiment_name))
    train(cfg)

    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow_store.client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2]
    has_test = kind not in ("csv_digit_recognizer", "csv_train_only")
    assert ("test/acc" in run.data.metrics) == has_test
    inputs = inputs_by_context(run)
    assert set(inputs) == ({"training", "test"} if has_test else {"training"})
    recorded = inputs["training"]
    assert recorded.dataset.source_type == "local"
    assert json.loads(recorded.dataset.source)["uri"] == source.resolve().as_uri()
    tags = {tag.key: tag.value for tag in recorded.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["checksum"] == run.data.tags["dataset.checksum"] and len(tags["checksum"]) == 64
    assert tags["files"] == ", ".join(str(path.resolve()) for path in files)


def test_an_exception_while_logging_the_start_closes_the_run_failed(
    compose, monkeypatch, mlflow_store, experiment_name
):
    def refuse(self, dataset):
        raise MlflowException("the store refused the dataset")

    monkeypatch.setattr(mlflow_run.MlflowRun, "_log_dataset", refuse)
    cfg = compose("dataset=digits", "dataset.subset=300", *FAST, *QUIET, *mlflow_store.overrides(experiment_name))
    with pytest.raises(RunFailed, match="MlflowException: the store refused the dataset") as caught:
        train(cfg)

    run = mlflow_store.only_run(experiment_name)
    assert caught.value.run_id == run.info.run_id
    assert run.info.status == "FAILED"
    assert run.data.tags["nnlab.failure_reason"] == "MlflowException: the store refused the dataset"
    assert isinstance(caught.value.__cause__, MlflowException)


def test_an_exception_while_finishing_closes_the_run_failed_with_its_epochs_kept(
    compose, monkeypatch, mlflow_store, experiment_name
):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow_run.MlflowRun, "_log_results", broken)
    cfg = compose("dataset=digits", "dataset.subset=300", *FAST, *QUIET, *mlflow_store.overrides(experiment_name))
    with pytest.raises(RunFailed, match="No space left on device"):
        train(cfg)

    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FAILED"
    assert run.data.tags["nnlab.failed_epoch"] == "2"
    assert len(mlflow_store.client.get_metric_history(run.info.run_id, "val/acc")) == 2


@pytest.mark.slow
def test_the_command_exits_non_zero_with_one_paragraph_and_a_failed_run(mlflow_store, experiment_name, tmp_path):
    # The real entry point in its own process, with the dataset input refused as MLflow refused CSV sources.
    script = (
        "import runpy, sys\n"
        "from mlflow.exceptions import MlflowException\n"
        "from experiments.tracking import mlflow_run\n"
        "def refuse(self, dataset):\n"
        "    raise MlflowException('Could not find a source information resolver')\n"
        "mlflow_run.MlflowRun._log_dataset = refuse\n"
        f"sys.argv = [{str(REPO / 'experiments' / 'run.py')!r}, *sys.argv[1:]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    overrides = ["dataset=digits", *FAST, *QUIET, *mlflow_store.overrides(experiment_name)]
    env = os.environ | {"MPLBACKEND": "Agg", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script, *overrides, f"hydra.run.dir={tmp_path / 'out'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    run = mlflow_store.only_run(experiment_name)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    message = [line for line in (done.stdout + done.stderr).splitlines() if "The run failed" in line]
    assert len(message) == 1
    assert f"MLflow run {run.info.run_id} is closed as FAILED" in message[0]
    assert "Could not find a source information resolver" in message[0]
    assert run.info.status == "FAILED"


def test_dataset_source_is_the_file_uri_and_checksum_covers_the_test_file(tmp_path):
    from nn.data import load_dataset

    train_csv = write_csv(tmp_path / "mnist_train.csv", 60, 0, header=False)
    test_csv = write_csv(tmp_path / "mnist_test.csv", 20, 1, header=False)
    with_test = load_dataset("csv", train_csv=train_csv, test_csv=test_csv)
    alone = load_dataset("csv", train_csv=train_csv)
    assert with_test.source == alone.source == train_csv.resolve().as_uri()
    assert with_test.files == (train_csv.resolve(), test_csv.resolve()) and alone.files == (train_csv.resolve(),)
    assert with_test.checksum != alone.checksum
