"""experiments/bench_speed.py builds the recipes it names and times what it says (no wall-clock assertions)."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import nn
from experiments import bench_speed


@pytest.mark.parametrize("recipe", bench_speed.RECIPES)
def test_each_recipe_builds_the_trainer_it_names(recipe):
    sizes, optimizer, options, (clip, limit), batch, dtype, dropout = bench_speed.RECIPES[recipe]
    trainer = bench_speed.make_trainer(recipe)
    dense = [layer for layer in trainer.network.layers if isinstance(layer, nn.Dense)]
    assert [layer.in_features for layer in dense] + [dense[-1].out_features] == sizes
    assert type(trainer.optimizer).__name__ == optimizer
    assert trainer.optimizer.lr == options.get("lr", 0.01) and trainer.optimizer.weight_decay == 1e-4
    assert isinstance(trainer.clipper, nn.ClipByValue if clip == "value" else nn.ClipByNorm)
    assert trainer.batch_size == batch and trainer.network.dtype == np.dtype(dtype)
    dropouts = [layer.p for layer in trainer.network.layers if isinstance(layer, nn.Dropout)]
    assert dropouts == ([dropout] if dropout else [])


@pytest.mark.parametrize("update", [False, True])
def test_step_products_multiply_at_the_step_shapes_and_update_only_for_the_limit(update, monkeypatch):
    if update and nn.kernels.numba is None:
        pytest.skip("the limit's update is the numba kernel")
    shapes = []
    original = np.matmul

    def spy(a, b, out=None):
        shapes.append((a.shape, b.shape))
        return original(a, b, out=out)

    run, momenta = bench_speed.step_products([6, 5, 3], 4, "float32", np.random.default_rng(0), update)
    monkeypatch.setattr(bench_speed.np, "matmul", spy)
    run()
    assert shapes == [((4, 6), (6, 5)), ((6, 4), (4, 5)), ((4, 5), (5, 3)), ((5, 4), (4, 3)), ((4, 3), (3, 5))]
    assert [buf.size for buf in momenta] == [30, 15]
    assert all(np.any(buf != 0) for buf in momenta) == update


def test_the_diagnostics_worker_trains_with_the_watch_train_uses():
    from nn.diagnostics import Watch

    watched, plain = bench_speed.make_trainer("wide1024", watch=True), bench_speed.make_trainer("wide1024")
    assert isinstance(watched.watch, Watch) and [name for name, _ in watched.watch.dense] == ["dense0", "dense1"]
    assert plain.watch is None


def test_ratios_are_taken_round_by_round():
    """A loop and the floor slowed alike in round 2 (the machine drifted) keep their ratio of round 1;
    the ratio of overall medians (3.0 / 2.5) would not."""
    times = {"nn": [[2.0, 2.2, 1.8], [6.0, 6.6, 5.4]], "floor": [[1.0, 1.0, 1.0], [3.0, 4.0, 3.0]]}
    assert bench_speed.seconds(times, "nn") == pytest.approx(3.8)  # (2.2 + 5.4) / 2
    assert bench_speed.ratio(times, "nn", "floor") == "2.00 (2.00-2.00)"
    assert bench_speed.ratio(times, "floor", "floor") == "1.00"
    times["nn"][1] = [3.0] * 3
    assert bench_speed.ratio(times, "nn", "floor") == "1.50 (1.00-2.00)"


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX file of uint8 ``array``, as the MNIST files are."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """$NNLAB_DATA_DIR/mnist with 256 black training images and 50 test images, every label 3: any loop that
    trains on it reaches test accuracy 1.0000, which MNIST itself never gives."""
    root = tmp_path / "data" / "mnist"
    root.mkdir(parents=True)
    for prefix, n in (("train", 256), ("t10k", 50)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.full(n, 3))
    monkeypatch.setenv("NNLAB_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run_main_table(argv: list[str], monkeypatch) -> dict:
    """``main(argv)`` with ``alternate`` replaced by a stub that runs nothing: the commands it was given."""
    given = {}

    def stub(commands, rounds):
        given.update(commands)
        return {name: [[1.0]] * rounds for name in commands}, dict.fromkeys(commands, 0.5)

    monkeypatch.setattr(bench_speed, "alternate", stub)
    assert bench_speed.main(argv) == 0
    return given


def fake_torch(tmp_path: Path, monkeypatch, importable: bool) -> None:
    """A ``torch`` module first on PYTHONPATH that imports, or one that fails to: whether or not torch is installed."""
    folder = tmp_path / "fake_torch"
    folder.mkdir()
    (folder / "torch.py").write_text("" if importable else "raise ImportError('not this torch')\n")
    monkeypatch.setenv("PYTHONPATH", str(folder))


def test_reference_loops_run_from_the_repo_on_the_data_bench_speed_reads(tiny_mnist, monkeypatch):
    """From a clone alone: the NumPy reference row runs the copy in benchmarks/reference/, and that copy reads
    the MNIST folder of bench_speed (here the tiny one), not ../data/mnist beside itself."""
    commands = run_main_table(["--epochs", "1", "--rounds", "1"], monkeypatch)
    command, env = commands["numpy reference"]
    script = Path(command[1])
    assert script == bench_speed.REPO / "benchmarks" / "reference" / "numpy_reference.py" and script.is_file()
    assert command[0] == sys.executable and command[2:] == ["1"]
    monkeypatch.delenv("NNLAB_DATA_DIR")  # the subprocess must get the data folder from the command's env
    epochs = bench_speed.run_epochs(command, env | {"PYTHONDONTWRITEBYTECODE": "1"})  # nothing written in the repo
    assert [accuracy for _, accuracy in epochs] == [1.0]


def test_reference_loops_elsewhere_get_the_data_folder_from_bench_speed(tiny_mnist, tmp_path, monkeypatch):
    """With $NNLAB_DATA_DIR unset, loops copied elsewhere (--reference-dir) would look for ../shared/data beside
    their own folder; bench_speed hands them its data folder (here the tiny one)."""
    reference = tmp_path / "elsewhere" / "reference"
    shutil.copytree(bench_speed.REPO / "benchmarks" / "reference", reference, ignore=shutil.ignore_patterns("__py*"))
    monkeypatch.delenv("NNLAB_DATA_DIR")
    monkeypatch.setattr(bench_speed, "data_dir", lambda: tiny_mnist)
    command, env = run_main_table(["--epochs", "1", "--rounds", "1", "--reference-dir", str(reference)], monkeypatch)[
        "numpy reference"
    ]
    assert command[1] == str(reference / "numpy_reference.py")
    assert [accuracy for _, accuracy in bench_speed.run_epochs(command, env)] == [1.0]


@pytest.mark.parametrize("argv", [[], ["--torch-python", sys.executable]], ids=["no-torch-python", "no-torch"])
def test_a_left_out_pytorch_row_is_said_in_one_line_with_how_to_get_it(argv, tiny_mnist, tmp_path, monkeypatch, capsys):
    fake_torch(tmp_path, monkeypatch, importable=False)
    commands = run_main_table(["--epochs", "1", "--rounds", "1", *argv], monkeypatch)
    assert "torch reference" not in commands
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "PyTorch row left out" in line]
    assert len(said) == 1 and "pip install torch==2.13.0" in said[0] and "--torch-python" in said[0]
    assert "ratio to PyTorch" not in out


def test_the_pytorch_row_runs_the_repo_copy_with_the_interpreter_given(tiny_mnist, tmp_path, monkeypatch, capsys):
    fake_torch(tmp_path, monkeypatch, importable=True)
    commands = run_main_table(["--epochs", "2", "--rounds", "1", "--torch-python", sys.executable], monkeypatch)
    command, env = commands["torch reference"]
    reference = bench_speed.REPO / "benchmarks" / "reference"
    assert command == [sys.executable, str(reference / "torch_reference.py"), "2"] and Path(command[1]).is_file()
    assert env["NNLAB_DATA_DIR"] == str(tiny_mnist)
    out = capsys.readouterr().out
    assert "left out" not in out and "ratio to PyTorch" in out


def test_a_reference_dir_without_the_loops_is_said_in_one_line(tmp_path, capsys):
    assert bench_speed.main(["--reference-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "benchmarks/reference" in out


def test_profile_says_what_it_measures_before_it_measures_it(tmp_path):
    """``--profile`` works for tens of seconds (minutes on a busy machine): its first line comes at once, not
    with the table at the end (a piped run printed nothing for 600 s)."""
    import os
    import subprocess

    if not (Path(os.environ.get("NNLAB_DATA_DIR", "/nonexistent")) / "mnist").is_dir():
        pytest.skip("the profile reads MNIST from $NNLAB_DATA_DIR")
    script = Path(bench_speed.__file__)
    process = subprocess.Popen([sys.executable, str(script), "--profile"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        first = process.stdout.readline()
        done = process.poll()
    finally:
        process.kill()
        process.wait(timeout=60)
    assert first.startswith("profiling numpy kernels: an epoch of wide1024 steps"), first
    assert done is None  # the line came while the work was still running
