"""The same sweep with and without pruning, on one and two workers: ``python -m sweeps.bench``.

Each configuration runs ``python experiments/run.py -m sweep=<name>`` as a user would, in a fresh temporary store, and
the table gives its wall time, trials by state and best value, with ratios to the baseline (no
pruning, one worker), how busy its trial slots were (the trials' summed durations over wall time x
slots: a slot idles while its process starts, between trials and while a batch waits for its
slowest trial), the share of wall time x slots spent in training passes (the epochs' ``epoch_time``:
the rest is the fixed cost of processes, trials, validation and tracking) and the machine's load
average while it ran (the benchmark's own work included). The sweep's own sampler and pruner are used,
as ``conf/sweep/<name>.yaml`` sets them.

``--seeds 0 1 2`` instead compares the sweep's pruning with none over those sampler seeds, one pair of runs a
seed: each seed's best value pruned and unpruned, the epochs each trained, and their means, the measure
by which each config's pruner and sampler settings were chosen (docs/sweeps.md).
Defaults: lr x momentum x L2 for 784-1024-10 on a 5,000-image MNIST subset (``--dataset digits``
works offline).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pandas as pd

from experiments.compare import to_markdown
from sweeps.engine import BLAS_VARIABLES

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"

CONFIGS = {  # name: (overrides, BLAS threads of a single process: None leaves them to BLAS, trial slots)
    "no pruning, 1 process": (["hydra/sweeper/pruner=none"], None, 1),
    "no pruning, 1 process, 1 BLAS thread": (["hydra/sweeper/pruner=none"], 1, 1),
    "pruning, 1 process": ([], None, 1),
    "no pruning, 2 workers": (["hydra/sweeper/pruner=none", "hydra.sweeper.workers=2"], None, 2),
    "pruning, 2 workers": (["hydra.sweeper.workers=2"], None, 2),
    "pruning, joblib 2 jobs": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], None, 2),
    "pruning, submitit_local 2 jobs": (["hydra/launcher=submitit_local", "hydra.sweeper.batch=2"], None, 2),
}
PAIR = ("no pruning, 1 process", "pruning, 1 process")  # what --seeds compares


class LoadSampler:
    """The 1-minute load average, sampled every second while a configuration runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(name: str, base: list[str], overrides: list[str], threads: int | None, slots: int, root: Path) -> dict:
    """One configuration in its own store; its wall time, the study's outcome, slot use and load."""
    store = root / name.replace(",", "").replace(" ", "_")
    study_name = store.name
    args = [*base, *overrides, f"tracking.dir={store}", f"tracking.uri=sqlite:///{store / 'mlflow.db'}"]
    args += [f"hydra.sweeper.study_name={study_name}", f"hydra.sweep.dir={store / 'multirun'}"]
    env = os.environ | (dict.fromkeys(BLAS_VARIABLES, str(threads)) if threads else {})
    start = time.perf_counter()
    with LoadSampler() as load:
        done = subprocess.run([sys.executable, str(RUN), "-m", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store / "optuna" / f"{study_name}.log"))
    )
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    states = [t.state for t in trials]
    complete = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    epochs = sum(max(t.intermediate_values, default=0) for t in trials)
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    training = sum(t.user_attrs.get("train_seconds", 0.0) for t in trials)
    return {
        "config": name,
        "seconds": seconds,
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "epochs": epochs,
        "best": max(complete) if complete else float("nan"),
        "slots busy": busy / (seconds * slots),
        "training": training / (seconds * slots),
        "load": sum(load.samples) / len(load.samples),
    }


def table(rows: list[dict]) -> str:
    """The configurations as a Markdown table, with ratios to the first."""
    frame = pd.DataFrame(rows)
    trials = frame["complete"] + frame["pruned"] + frame["failed"]
    return to_markdown(
        pd.DataFrame(
            {
                "configuration": frame["config"],
                "wall time (s)": frame["seconds"].round().astype(int),
                "time ratio": frame["seconds"].div(frame["seconds"].iloc[0]).map("{:.2f}".format),
                "trials per hour": (trials / frame["seconds"] * 3600).round().astype(int),
                "complete": frame["complete"],
                "pruned": frame["pruned"],
                "failed": frame["failed"],
                "epochs trained": frame["epochs"],
                "slots busy": frame["slots busy"].map("{:.0%}".format),
                "training share": frame["training"].map("{:.0%}".format),
                "load average during": frame["load"].map("{:.1f}".format),
                "best val/acc": frame["best"].map("{:.4f}".format),
            }
        )
    )


def pruning_table(rows: list[dict]) -> str:
    """Per seed, the best value and epochs without and with pruning; then their means and the verdict."""
    frame = pd.DataFrame(rows)
    wide = frame.pivot(index="seed", columns="config", values=["best", "epochs", "seconds"])
    off, on = PAIR
    table = pd.DataFrame(
        {
            "sampler seed": wide.index,
            "best, no pruning": wide["best"][off].map("{:.4f}".format),
            "best, pruning": wide["best"][on].map("{:.4f}".format),
            "difference (points)": (100 * (wide["best"][on] - wide["best"][off])).map("{:+.2f}".format),
            "epochs, no pruning": wide["epochs"][off],
            "epochs, pruning": wide["epochs"][on],
            "epoch ratio": (wide["epochs"][on] / wide["epochs"][off]).map("{:.2f}".format),
            "time ratio": (wide["seconds"][on] / wide["seconds"][off]).map("{:.2f}".format),
        }
    )
    gap = 100 * (wide["best"][off].mean() - wide["best"][on].mean())
    ratio = wide["epochs"][on].sum() / wide["epochs"][off].sum()
    verdict = (
        f"mean best: {wide['best'][off].mean():.4f} without pruning, {wide['best'][on].mean():.4f} with "
        f"({gap:.2f} points lower; goal <= 0.2) at {ratio:.2f} of the epochs (goal <= 0.6)\n"
    )
    return to_markdown(table) + verdict


def trial_cost(trials: int, root: Path) -> str:
    """The fixed cost of a sweep's trial with MLflow on: ``trials`` 1-epoch digits trials in this process, as
    ``sweeps.trial`` runs them (tagged, their runs closed by the artifact thread), against the same with
    ``tracking=none``; then the time to drain what the artifact thread still had to do."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from experiments.tracking import mlflow_run
    from experiments.train import train

    def config(tracked: bool):
        base = ["dataset=digits", "model=mlp128", "train.epochs=1", "train.progress=false", f"tracking.dir={root}"]
        with initialize_config_dir(config_dir=str(RUN.parents[1] / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=base + ([] if tracked else ["tracking=none"]))
        with open_dict(cfg):
            cfg.tracking.tags.update({"nnlab.study": "bench", "nnlab.trial": "0"})
        return cfg

    seconds = {}
    for tracked in (False, True):
        cfg = config(tracked)
        train(cfg)  # the store, imports and caches: not a trial's cost
        getattr(mlflow_run, "wait_for_uploads", lambda: None)()
        start = time.perf_counter()
        for _ in range(trials):
            train(cfg)
        seconds[tracked] = (time.perf_counter() - start) / trials
    start = time.perf_counter()
    getattr(mlflow_run, "wait_for_uploads", lambda: None)()
    drain = (time.perf_counter() - start) / trials
    return (
        f"a 1-epoch digits trial, {trials} in a row, load average {os.getloadavg()[0]:.2f}: "
        f"{seconds[False]:.3f} s with tracking=none, {seconds[True]:.3f} s with MLflow: a fixed cost of "
        f"{seconds[True] - seconds[False]:.3f} s a trial; the artifact thread then needed {drain:.3f} s a trial more\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="lr_momentum_l2")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--subset", type=int, default=5000, help="MNIST training images (ignored for digits)")
    parser.add_argument("--model", default="wide1024")
    parser.add_argument("--tracking", action="store_true", help="track every trial in MLflow (slower, as in real use)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
                        help="the configurations to run, by name (default: all)")  # fmt: skip
    parser.add_argument("--trial-cost", type=int, metavar="N", help="instead: the fixed cost of N digits trials")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="compare pruning with none over these sampler seeds instead")  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", help="more overrides for every configuration (before --configs/--seeds)"
    )
    args = parser.parse_args(argv)
    if args.trial_cost:
        with tempfile.TemporaryDirectory(prefix="nnlab-bench-") as tmp:
            print(trial_cost(args.trial_cost, Path(tmp)), end="")
        return 0
    base = [f"sweep={args.sweep}", f"hydra.sweeper.n_trials={args.trials}", f"train.epochs={args.epochs}"]
    base += [f"dataset={args.dataset}", f"model={args.model}", "train.progress=false"]
    base += [f"dataset.subset={args.subset}"] if args.dataset != "digits" else []
    base += [] if args.tracking else ["tracking=none"]
    base += args.overrides
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; every configuration: {' '.join(base)}",
          flush=True)  # fmt: skip
    runs = [(name, seed) for seed in args.seeds for name in PAIR] if args.seeds else [(n, None) for n in args.configs]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnlab-bench-") as tmp:
        for name, seed in runs:
            overrides, threads, slots = CONFIGS[name]
            overrides = overrides + ([f"hydra.sweeper.sampler.seed={seed}"] if seed is not None else [])
            label = name if seed is None else f"{name}, seed {seed}"
            rows.append(run(label, base, overrides, threads, slots, Path(tmp)) | {"seed": seed, "config": name})
            print(f"{label}: {rows[-1]['seconds']:.0f} s (load average {rows[-1]['load']:.1f} during it)", flush=True)
    if args.seeds:
        print(pruning_table(rows), end="")
    else:
        print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
