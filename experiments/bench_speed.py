"""Speed benchmark: nn's training loop against the plain NumPy reference (and PyTorch), in one run.

    python experiments/bench_speed.py [--epochs 3] [--rounds 2] [--torch-python PATH] [--tracking]

Runs ``../shared/bench/numpy_reference.py`` and the same recipe through ``nn.Trainer`` (wide1024:
784-1024-10, SGD momentum 0.9, lr 0.01, L2 1e-4, clipping to [-5, 5], batch 128, float32) in
alternating subprocesses, so that both see the same machine load, and prints the median seconds per
training epoch of each and their ratio. ``--torch-python`` names a Python that has torch, to time
``torch_reference.py`` too. ``--tracking`` also times whole epochs of ``experiments/train.py`` with
MLflow tracking on and with ``tracking=none`` (training, validation and logging included).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("NNLAB_BENCH_DIR", REPO.parent / "shared" / "bench"))
EPOCH_LINE = re.compile(r"^(\w+) epoch (\d+) ([\d.]+)s test_acc ([\d.]+)", re.M)


def nn_worker(epochs: int) -> None:
    """The reference recipe through nn, printing lines in the reference scripts' format."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    import nn
    from nn.data import load_idx_pair

    root = Path(os.environ.get("NNLAB_DATA_DIR", REPO.parent / "shared" / "data")) / "mnist"
    x_train, y_train = load_idx_pair(root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    x_test, y_test = load_idx_pair(root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 255
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    rng = np.random.default_rng(0)
    net = nn.mlp([784, 1024, 10], init="he_normal", rng=rng)
    optimizer = nn.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4, decay_bias=True)
    trainer = nn.Trainer(net, optimizer, clipper=nn.ClipByValue(5.0), batch_size=128, rng=rng)
    for epoch in range(epochs):
        result = trainer.train_epoch(x_train, y_train, epoch)
        accuracy = net.evaluate(x_test, y_test)[1]
        print(f"nn epoch {epoch} {result.seconds:.3f}s test_acc {accuracy:.4f}", flush=True)


def run_epochs(command: list[str], env: dict | None = None) -> list[tuple[float, float]]:
    """Run one benchmark subprocess; (seconds, test accuracy) per epoch."""
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return [(float(m[2]), float(m[3])) for m in EPOCH_LINE.findall(out)]


def tracking_epochs(tracking: str, epochs: int, store: Path) -> list[float]:
    """Wall seconds between consecutive epoch log lines of experiments/run.py (train + eval + logging)."""
    command = [
        sys.executable, str(REPO / "experiments" / "run.py"), f"tracking={tracking}", f"train.epochs={epochs}",
        f"tracking.dir={store}", "tracking.checkpoints.policy=best_and_last", f"hydra.run.dir={store}/hydra",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamps = []
    for line in process.stdout:
        if re.search(r"epoch \d+/\d+ +train loss", line):
            stamps.append(time.perf_counter())
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return [b - a for a, b in zip(stamps, stamps[1:])]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-python", help="a Python interpreter with torch installed")
    parser.add_argument("--tracking", action="store_true", help="also measure MLflow tracking overhead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        nn_worker(args.epochs)
        return 0
    if not (BENCH / "numpy_reference.py").is_file():
        print(f"no reference loop at {BENCH}; set NNLAB_BENCH_DIR to the folder holding numpy_reference.py")
        return 2
    commands = {
        "numpy reference": [sys.executable, str(BENCH / "numpy_reference.py"), str(args.epochs)],
        "nn": [sys.executable, __file__, "--worker", "--epochs", str(args.epochs)],
    }
    if args.torch_python:
        commands["torch reference"] = [args.torch_python, str(BENCH / "torch_reference.py"), str(args.epochs)]
    times: dict[str, list[float]] = {name: [] for name in commands}
    accuracy: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name, command in commands.items():
            epochs = run_epochs(command)
            times[name] += [seconds for seconds, _ in epochs]
            accuracy[name] = epochs[-1][1]
            print(f"round {round_ + 1}: {name:16s} " + " ".join(f"{s:.2f}s" for s, _ in epochs), flush=True)
    print(f"\nmedian seconds per training epoch over {args.rounds} x {args.epochs} epochs (wide1024, batch 128):")
    base = median(times["numpy reference"])
    for name in commands:
        print(
            f"  {name:16s} {median(times[name]):6.3f} s   ratio to numpy reference {median(times[name]) / base:.3f}"
            f"   test acc after {args.epochs} epochs {accuracy[name]:.4f}"
        )
    if args.tracking:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            walls: dict[str, list[float]] = {"mlflow": [], "none": []}
            for _ in range(args.rounds):
                for tracking in walls:
                    walls[tracking] += tracking_epochs(tracking, args.epochs + 1, Path(tmp))
        on, off = median(walls["mlflow"]), median(walls["none"])
        print(f"\nwhole epochs of experiments/run.py (train + validation + logging), median over {args.rounds} rounds:")
        print(f"  tracking=mlflow {on:.3f} s   tracking=none {off:.3f} s   overhead ratio {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
