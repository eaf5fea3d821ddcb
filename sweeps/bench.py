"""The same sweep with and without pruning, on one and two workers: ``python -m sweeps.bench``.

Each configuration runs ``python -m sweeps.run`` as a user would, in a fresh temporary store, and
the table gives its wall time, trials by state and best value, with ratios to the baseline (no
pruning, one worker). Defaults: lr x momentum x L2 for 784-1024-10 on a 5,000-image MNIST subset
(``--dataset digits`` works offline).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from sweeps.run import BLAS_VARIABLES

CONFIGS = {  # name: (pruner overrides, workers, BLAS threads of a single worker: None leaves them to BLAS)
    "no pruning, 1 worker": (["sweep.pruner.name=none"], 1, None),
    "no pruning, 1 worker, 1 BLAS thread": (["sweep.pruner.name=none"], 1, 1),
    "median pruning, 1 worker": ([], 1, None),
    "no pruning, 2 workers": (["sweep.pruner.name=none"], 2, None),
    "median pruning, 2 workers": ([], 2, None),
}


def run(name: str, base: list[str], pruner: list[str], workers: int, threads: int | None, root: Path) -> dict:
    """One configuration in its own store; its wall time and the study's outcome."""
    store = root / name.replace(",", "").replace(" ", "_")
    study_name = store.name
    args = [*base, *pruner, f"sweep.workers={workers}", f"tracking.dir={store}", f"sweep.study_name={study_name}"]
    env = os.environ | (dict.fromkeys(BLAS_VARIABLES, str(threads)) if threads else {})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sweeps.run", *args], capture_output=True, text=True, env=env)
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
    return {
        "config": name,
        "seconds": seconds,
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "epochs": epochs,
        "best": max(complete) if complete else float("nan"),
    }


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        "| configuration | wall time (s) | time ratio | trials per hour | complete | pruned | failed | epochs trained "
        "| best val/acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trials = r["complete"] + r["pruned"] + r["failed"]
        lines.append(
            f"| {r['config']} | {r['seconds']:.0f} | {r['seconds'] / base['seconds']:.2f} | "
            f"{trials / r['seconds'] * 3600:.0f} | {r['complete']} | "
            f"{r['pruned']} | {r['failed']} | {r['epochs']} | {r['best']:.4f} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("overrides", nargs="*", help="more overrides for every configuration")
    args = parser.parse_args(argv)
    base = [f"sweep={args.sweep}", f"sweep.n_trials={args.trials}", f"train.epochs={args.epochs}"]
    base += [f"dataset={args.dataset}", f"model={args.model}", "train.progress=false"]
    base += [f"dataset.subset={args.subset}"] if args.dataset != "digits" else []
    base += ["sweep.pruner.n_startup_trials=3", "sweep.pruner.n_warmup_steps=1", "sweep.sampler.n_startup_trials=4"]
    base += [] if args.tracking else ["tracking=none"]
    base += args.overrides
    print(f"{os.cpu_count()} cores; every configuration: {' '.join(base)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnlab-bench-") as tmp:
        for name in args.configs:
            pruner, workers, threads = CONFIGS[name]
            rows.append(run(name, base, pruner, workers, threads, Path(tmp)))
            load = os.getloadavg()[0]  # other work on the machine skews the times: say how busy it was
            print(f"{name}: {rows[-1]['seconds']:.0f} s (load average {load:.1f} at the end)", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
