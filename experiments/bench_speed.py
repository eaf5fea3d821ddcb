"""Speed benchmark: nn's training step against its matrix-product floor, the NumPy reference and PyTorch.

    python experiments/bench_speed.py [--epochs 3] [--rounds 3] [--torch-python PATH] [--reference-dir DIR]
    python experiments/bench_speed.py --profile      # per-part times of one step
    python experiments/bench_speed.py --recipes      # other optimizers, clipping, dropout, depth, batch, float64
    python experiments/bench_speed.py --harness      # whole epochs of run.py, evaluation, peak memory

The recipe is wide1024 (784-1024-10, SGD momentum 0.9, lr 0.01, L2 1e-4, clipping to [-5, 5], batch
128, float32) on MNIST. The **floor** is the step's matrix products alone, at the same shapes, for an
epoch's worth of steps: no loop can train faster with this BLAS. Every loop runs in its own subprocess,
all of them in turn, ``--rounds`` times, so that each sees the same machine load. The table gives the
median seconds per training epoch and each ratio taken round by round (this loop's epochs over the
floor's, or PyTorch's, in the same round): their median and range. nn runs with
NumPy's element-wise updates (``NNLAB_KERNELS=numpy``) and, when numba is installed, with the fused
kernels of ``nn.kernels``.

The reference loops, a plain NumPy loop and the same recipe in PyTorch, ship in ``benchmarks/reference/``
(the default of ``--reference-dir``); they read the MNIST files this script reads (``$NNLAB_DATA_DIR/mnist``,
else ``../shared/data/mnist`` beside the clone). The PyTorch row needs ``--torch-python``: the interpreter of
a virtual environment of its own with ``pip install torch==2.13.0`` (the project does not depend on torch);
without one the table leaves the row out and says so.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "benchmarks" / "reference"  # numpy_reference.py, torch_reference.py and their mnist_io.py
TORCH_HINT = (
    "to add it: python -m venv DIR && DIR/bin/pip install torch==2.13.0, then rerun with --torch-python DIR/bin/python"
)
EPOCH_LINE = re.compile(r"^(\w+) epoch (\d+) ([\d.]+)s test_acc ([\d.]+)", re.M)
RECIPES = {  # name -> (layer sizes, optimizer, its options, clipping, batch size, dtype, dropout)
    "wide1024": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 128, "float32", 0.0),
    "adam": ([784, 1024, 10], "Adam", {"lr": 1e-3}, ("value", 5.0), 128, "float32", 0.0),
    "adamw": ([784, 1024, 10], "AdamW", {"lr": 1e-3}, ("value", 5.0), 128, "float32", 0.0),
    "rmsprop": ([784, 1024, 10], "RMSprop", {"lr": 1e-3}, ("value", 5.0), 128, "float32", 0.0),
    "clip_norm": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("norm", 1.0), 128, "float32", 0.0),
    "dropout": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 128, "float32", 0.5),
    "deep800": ([784, 800, 800, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 128, "float32", 0.0),
    "batch32": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 32, "float32", 0.0),
    "batch512": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 512, "float32", 0.0),
    "float64": ([784, 1024, 10], "SGD", {"momentum": 0.9}, ("value", 5.0), 128, "float64", 0.0),
}
KERNELS = ("numpy", "numba")


# -- workers: each prints one line per epoch, "<name> epoch <i> <seconds>s test_acc <accuracy>" ----------------
def data_dir() -> Path:
    """The folder holding mnist/: ``$NNLAB_DATA_DIR``, else ``../shared/data`` beside the clone."""
    return Path(os.environ.get("NNLAB_DATA_DIR") or REPO.parent / "shared" / "data")


def load_mnist(dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from nn.data import load_idx_pair

    root = data_dir() / "mnist"
    x_train, y_train = load_idx_pair(root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    x_test, y_test = load_idx_pair(root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
    scale = np.dtype(dtype).type(255)
    return (
        x_train.reshape(len(x_train), -1).astype(dtype) / scale,
        y_train.astype(np.int64),
        x_test.reshape(len(x_test), -1).astype(dtype) / scale,
        y_test.astype(np.int64),
    )


def make_trainer(recipe: str, seed: int = 0, watch: bool = False):
    """The recipe's network and ``nn.Trainer``, seeded as ``numpy_reference.py`` is; with ``watch``, the
    per-layer diagnostics ``train()`` collects (``train.diagnostics=true``, its default)."""
    import nn
    from nn.diagnostics import Watch

    sizes, optimizer, options, (clip, limit), batch, dtype, dropout = RECIPES[recipe]
    rng = np.random.default_rng(seed)
    net = nn.mlp(sizes, init="he_normal", dropout=dropout, rng=rng, dtype=np.dtype(dtype))
    options = {"lr": 0.01, "weight_decay": 1e-4, "decay_bias": True} | options
    clipper = nn.ClipByValue(limit) if clip == "value" else nn.ClipByNorm(limit)
    return nn.Trainer(
        net,
        getattr(nn, optimizer)(**options),
        clipper=clipper,
        batch_size=batch,
        rng=rng,
        watch=Watch(net) if watch else None,
    )


def nn_worker(recipe: str, epochs: int, watch: bool = False) -> None:
    """Epochs of ``nn.Trainer``; with ``watch``, each epoch's time includes its diagnostics as ``train()``
    logs them (the Watch's samples, then activations over 1,000 held-out images)."""
    from experiments.callbacks import DIAGNOSTICS_SAMPLE
    from nn.diagnostics import activations

    x_train, y_train, x_test, y_test = load_mnist(RECIPES[recipe][5])
    make_trainer(recipe, seed=1).train_epoch(x_train[:512], y_train[:512], 0)  # loads compiled kernels, wakes BLAS
    trainer = make_trainer(recipe, watch=watch)
    for epoch in range(epochs):
        result = trainer.train_epoch(x_train, y_train, epoch)
        seconds = result.seconds
        if watch:
            start = time.perf_counter()
            trainer.watch.epoch_metrics() | activations(trainer.network, x_test[:DIAGNOSTICS_SAMPLE])
            seconds += time.perf_counter() - start
        accuracy = trainer.network.evaluate(x_test, y_test)[1]
        print(f"nn epoch {epoch} {seconds:.4f}s test_acc {accuracy:.4f}", flush=True)


def step_products(sizes: list[int], batch: int, dtype: str, rng: np.random.Generator, update: bool = False):
    """A function running one training step's matrix products at these shapes: per layer ``x @ W``,
    ``x.T @ dz`` and, but for the first layer, ``dz @ W.T``; and the momentum buffers it updates.

    With ``update``, each weight matrix is then updated by the fused SGD-momentum kernel: the least
    memory traffic of any update (read the gradient, weights and momentum once, write weights and
    momentum once). Its tiny learning rate keeps the weights, and so the products, as they are."""
    from nn import kernels

    layers = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        shapes = [(batch, fan_in), (fan_in, fan_out), (batch, fan_out)]
        x, w, dz = (rng.random(shape).astype(dtype) for shape in shapes)
        layers.append((x, w, dz, np.empty((batch, fan_out), dtype), np.zeros_like(w), np.empty_like(x)))
    momenta = [np.zeros(layer[1].size, dtype) for layer in layers]
    t = np.dtype(dtype).type
    sgd = (t(1e-9), t(0.9), t(1), False, t(1e-4), t(1), t(np.inf))  # lr, momentum, keep, nesterov, decay, clip

    def run() -> None:
        for i, (x, w, dz, z, gw, gx) in enumerate(layers):
            np.matmul(x, w, out=z)
            np.matmul(x.T, dz, out=gw)
            if i > 0:
                np.matmul(dz, w.T, out=gx)
        if update:
            for (_, w, _, _, gw, _), buf in zip(layers, momenta):
                kernels.sgd(w.reshape(-1), gw.reshape(-1), buf, *sgd)

    return run, momenta


def floor_worker(recipe: str, epochs: int, update: bool = False) -> None:
    sizes, *_, batch, dtype, _ = RECIPES[recipe]
    (run, _), steps = step_products(sizes, batch, dtype, np.random.default_rng(0), update), -(-60000 // batch)
    for _ in range(steps // 10):
        run()
    for epoch in range(epochs):
        start = time.perf_counter()
        for _ in range(steps):
            run()
        print(f"floor epoch {epoch} {time.perf_counter() - start:.4f}s test_acc 0", flush=True)


# -- the driver ------------------------------------------------------------------------------------------------
def run_epochs(command: list[str], env: dict | None = None) -> list[tuple[float, float]]:
    """Run one benchmark subprocess; (seconds, test accuracy) per epoch."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return [(float(m[2]), float(m[3])) for m in EPOCH_LINE.findall(done.stdout)]


def kernel_choices() -> list[str]:
    from nn import kernels

    return list(KERNELS) if kernels.numba is not None else ["numpy"]


def worker_command(kind: str, recipe: str, epochs: int) -> list[str]:
    return [sys.executable, __file__, "--worker", kind, "--recipe", recipe, "--epochs", str(epochs)]


def alternate(commands: dict[str, tuple[list[str], dict | None]], rounds: int) -> tuple[dict, dict]:
    """Each command once per round, in turn: {name: [[seconds per epoch] per round]}, {name: last test accuracy}."""
    times: dict[str, list[list[float]]] = {name: [] for name in commands}
    accuracy: dict[str, float] = {}
    for round_ in range(rounds):
        for name, (command, env) in commands.items():
            epochs = run_epochs(command, env)
            times[name].append([seconds for seconds, _ in epochs])
            accuracy[name] = epochs[-1][1]
            print(f"round {round_ + 1}: {name:26s} " + " ".join(f"{s:.3f}s" for s, _ in epochs), flush=True)
    return times, accuracy


def seconds(times: dict, name: str) -> float:
    """Median seconds per epoch of ``name`` over all rounds."""
    return statistics.median(s for round_ in times[name] for s in round_)


def ratio(times: dict, name: str, base: str) -> str:
    """``name``'s time over ``base``'s, taken in each round (the medians of its epochs): the median, and the
    range over the rounds. The machine's speed drifts between rounds; within one it holds better."""
    if name == base:
        return "1.00"
    ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(times[name], times[base])]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def nn_commands(recipe: str, epochs: int) -> dict[str, tuple[list[str], dict]]:
    return {
        f"nn ({kernels} kernels)": (worker_command("nn", recipe, epochs), os.environ | {"NNLAB_KERNELS": kernels})
        for kernels in kernel_choices()
    }


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
    return ", ".join(
        f"{b['internal_api']} {b['version']} ({b.get('architecture')} kernel, {b['num_threads']} threads)" for b in blas
    )


def markdown(rows: list[dict]) -> str:
    """``experiments.compare.to_markdown`` of the rows, imported here: the timed workers run this file without
    pandas or MLflow."""
    import pandas as pd

    from experiments.compare import to_markdown

    return to_markdown(pd.DataFrame(rows))


def torch_missing(torch_python: str | None) -> str | None:
    """None if ``torch_python`` can import torch; else the one line saying why the PyTorch row is left out."""
    if not torch_python:
        return f"PyTorch row left out: no --torch-python given; {TORCH_HINT}"
    try:
        done = subprocess.run([torch_python, "-c", "import torch"], capture_output=True, timeout=120)
        if done.returncode == 0:
            return None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"PyTorch row left out: {torch_python} cannot import torch; {TORCH_HINT}"


def reference_commands(args) -> tuple[dict[str, tuple[list[str], dict]], str | None]:
    """The reference loops' commands, reading this script's MNIST folder; and why PyTorch's is left out, if it is."""
    env = os.environ | {"NNLAB_DATA_DIR": str(data_dir())}
    folder, epochs = Path(args.reference_dir), str(args.epochs)
    commands = {"numpy reference": ([sys.executable, str(folder / "numpy_reference.py"), epochs], env)}
    missing = torch_missing(args.torch_python)
    if missing is None:
        commands["torch reference"] = ([args.torch_python, str(folder / "torch_reference.py"), epochs], env)
    return commands, missing


def main_table(args) -> None:
    commands = {"floor (products alone)": (worker_command("floor", "wide1024", args.epochs), None)}
    if "numba" in kernel_choices():
        commands["limit (products + update)"] = (worker_command("limit", "wide1024", args.epochs), None)
    commands |= nn_commands("wide1024", args.epochs)
    references, missing = reference_commands(args)
    commands |= references
    times, accuracy = alternate(commands, args.rounds)
    floor, torch = "floor (products alone)", "torch reference"
    print(f"\nwide1024, batch 128, float32; {args.rounds} rounds x {args.epochs} epochs; ratios taken round by round")
    print(f"BLAS: {blas_description()}")
    print(f"{missing}\n" if missing else "")
    rows = []
    for name in commands:
        row = {"loop": name, "s per epoch": f"{seconds(times, name):.3f}", "ratio to floor": ratio(times, name, floor)}
        row |= {"ratio to PyTorch": ratio(times, name, torch)} if torch in commands else {}
        row["test acc"] = "" if name.startswith(("floor", "limit")) else f"{accuracy[name]:.4f}"
        rows.append(row)
    print(markdown(rows), end="")


def diagnostics_table(args) -> None:
    """What ``train.diagnostics`` costs: epochs with and without the per-layer statistics, alternating."""
    commands = {
        "nn": (worker_command("nn", "wide1024", args.epochs), None),
        "nn + diagnostics": (worker_command("watched", "wide1024", args.epochs), None),
    }
    times, _ = alternate(commands, args.rounds)
    print(f"\nwide1024, batch 128; {args.rounds} rounds x {args.epochs} epochs, alternating")
    rows = [
        {"loop": name, "s per epoch": f"{seconds(times, name):.3f}", "ratio": ratio(times, name, "nn")}
        for name in commands
    ]
    print(markdown(rows), end="")


def recipes_table(args) -> None:
    rows = []
    for recipe in RECIPES:
        loops = nn_commands(recipe, args.epochs)
        times, _ = alternate({"floor": (worker_command("floor", recipe, args.epochs), None)} | loops, args.rounds)
        cells = {f"{name} s (ratio)": f"{seconds(times, name):.3f} ({ratio(times, name, 'floor')})" for name in loops}
        rows.append({"recipe": recipe, "floor s": f"{seconds(times, 'floor'):.3f}"} | cells)
        print(f"{recipe}: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items() if k != "recipe"), flush=True)
    print(markdown(rows), end="")


def profile(args) -> None:
    """Per-part times of a step of the recipe, timed per call over an epoch's steps, in this process."""
    from nn import kernels
    from nn.losses import SoftmaxCrossEntropy

    x_train, y_train, *_ = load_mnist("float32")
    for mode in kernel_choices():
        print(f"profiling {mode} kernels: an epoch of wide1024 steps, then the products alone ...", flush=True)
        kernels.ENABLED = mode == "numba"
        trainer = make_trainer("wide1024")
        net, optimizer, clipper, loss = trainer.network, trainer.optimizer, trainer.clipper, SoftmaxCrossEntropy()
        parts = dict.fromkeys(["batch gather", "forward", "loss", "backward", "clip plan", "optimizer step"], 0.0)
        order, steps = trainer.rng.permutation(len(x_train)), len(x_train) // 128
        for step in range(steps):
            stamps = [time.perf_counter()]
            idx = order[step * 128 : (step + 1) * 128]
            xb, yb = x_train[idx], y_train[idx]
            stamps.append(time.perf_counter())
            logits = net.forward(xb, training=True)
            stamps.append(time.perf_counter())
            loss.forward(logits, yb)
            grad = loss.backward()
            stamps.append(time.perf_counter())
            net.backward(grad)
            stamps.append(time.perf_counter())
            _, clip = clipper.plan(net.grads, measure=step % 10 == 0)
            stamps.append(time.perf_counter())
            optimizer.step(net.params, net.grads, 0.01, clip)
            stamps.append(time.perf_counter())
            if step >= 20:
                for name, start, end in zip(parts, stamps, stamps[1:]):
                    parts[name] += end - start
        products, _ = step_products([784, 1024, 10], 128, "float32", np.random.default_rng(0))
        start = time.perf_counter()
        for _ in range(steps - 20):
            products()
        floor = (time.perf_counter() - start) / (steps - 20) * 1e3
        per_step = {name: seconds / (steps - 20) * 1e3 for name, seconds in parts.items()}
        lines = [f"{mode} kernels: ms per step (floor, the products alone: {floor:.3f} ms)"]
        lines += [f"  {name:16s} {ms:7.3f}" for name, ms in per_step.items()]
        total = sum(per_step.values())
        lines.append(f"  {'total':16s} {total:7.3f}   ratio to floor {total / floor:.2f}")
        print("\n".join(lines) + "\n", flush=True)


def harness(args) -> None:
    """Whole epochs of experiments/run.py against its training pass; evaluation against its products; memory."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, str(REPO / "experiments" / "run.py"), "clipping=value", "schedule=constant",
            "optimizer.lr=0.01", "optimizer.weight_decay=1e-4", f"train.epochs={args.epochs + 1}",
            "train.progress=false",
            f"tracking.dir={tmp}", "tracking.experiment=bench", f"hydra.run.dir={tmp}/hydra",
        ]  # fmt: skip
        walls, passes = [], []
        for _ in range(args.rounds):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            stamps = []
            for line in process.stdout:
                found = re.search(r"epoch \d+/\d+ +train loss .* ([\d.]+)s$", line.strip())
                if found:
                    stamps.append(time.perf_counter())
                    passes.append(float(found[1]))
            if process.wait() != 0:
                raise RuntimeError(f"{' '.join(command)} failed")
            walls += [b - a for a, b in zip(stamps, stamps[1:])]
            passes.pop(-len(stamps))  # the first epoch has no wall time before it
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    wall, train_pass = statistics.median(walls), statistics.median(passes)
    print(f"\nexperiments/run.py (wide1024 recipe, tracking on), median over {len(walls)} epochs:")
    print(f"  whole epoch {wall:.3f} s   training pass {train_pass:.3f} s   ratio {wall / train_pass:.3f}")
    print(f"  peak resident memory of the run: {peak_mib:.0f} MiB")

    *_, x_test, y_test = load_mnist("float32")
    network = make_trainer("wide1024").network
    w1, w2 = network.params["dense0.W"], network.params["dense1.W"]
    hidden = np.random.default_rng(0).random((4096, 1024), dtype=np.float32)
    products, whole = [], []
    for _ in range(5 * args.rounds):
        start = time.perf_counter()
        for lo in range(0, len(x_test), 4096):  # the forward products of Network.evaluate's batches of 4096
            batch = x_test[lo : lo + 4096]
            np.matmul(batch, w1)
            np.matmul(hidden[: len(batch)], w2)
        products.append(time.perf_counter() - start)
        start = time.perf_counter()
        network.evaluate(x_test, y_test)
        whole.append(time.perf_counter() - start)
    seconds, floor = statistics.median(whole), statistics.median(products)
    print(
        f"  evaluation of the 10k test set {seconds * 1e3:.1f} ms, its products {floor * 1e3:.1f} ms, "
        f"ratio {seconds / floor:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--torch-python", help="a Python interpreter with torch installed (pip install torch==2.13.0 in its own venv)"
    )
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=REFERENCE,
        help="the folder of numpy_reference.py and torch_reference.py (default: the repo's benchmarks/reference)",
    )
    parser.add_argument("--profile", action="store_true", help="per-part times of one step")
    parser.add_argument("--recipes", action="store_true", help="every other recipe as a ratio to its floor")
    parser.add_argument("--harness", action="store_true", help="whole epochs of run.py, evaluation, peak memory")
    parser.add_argument("--diagnostics", action="store_true", help="epochs with and without train.diagnostics")
    parser.add_argument("--worker", choices=["nn", "watched", "floor", "limit"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="wide1024", choices=list(RECIPES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker in ("nn", "watched"):
            nn_worker(args.recipe, args.epochs, watch=args.worker == "watched")
        else:
            floor_worker(args.recipe, args.epochs, update=args.worker == "limit")
        return 0
    if args.profile:
        profile(args)
    elif args.recipes:
        recipes_table(args)
    elif args.harness:
        harness(args)
    elif args.diagnostics:
        diagnostics_table(args)
    elif not (args.reference_dir / "numpy_reference.py").is_file():
        print(f"no numpy_reference.py in {args.reference_dir}; the repo's copies are in {REFERENCE} (the default)")
        return 2
    else:
        main_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
