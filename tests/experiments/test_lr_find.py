"""``python experiments/lr_find.py``: the range test of a configuration, logged to MLflow, and its suggestion
on digits within 3x of the best of a 5-point learning-rate grid trained as ``run.py`` trains."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.lr_find import find_lr
from experiments.train import train

REPO = Path(__file__).resolve().parents[2]
DIGITS = ["dataset=digits", "model=mlp128", "train.progress=false"]
GRID = (0.003, 0.01, 0.03, 0.1, 0.3)


def lr_find_cli(*overrides: str) -> subprocess.CompletedProcess:
    """``python experiments/lr_find.py`` on digits, untracked, with ``overrides``."""
    command = [sys.executable, str(REPO / "experiments" / "lr_find.py"), *DIGITS, "tracking=none", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)  # in the test's own folder


@pytest.mark.slow
def test_suggestion_on_digits_is_within_3x_of_the_grids_best(compose, mlflow_store, experiment_name):
    test = find_lr(compose(*DIGITS, *mlflow_store.overrides(experiment_name)), DIGITS)
    grid = {lr: train(compose(*DIGITS, "tracking=none", f"optimizer.lr={lr}")).objective for lr in GRID}
    best = max(grid, key=grid.get)
    print(f"suggested {test.suggestion:.3g} (steepest {test.steepest:.3g}); grid val/acc {grid}")
    assert best / 3 <= test.suggestion <= best * 3
    run = mlflow_store.only_run(experiment_name)
    assert run.data.tags["nnlab.kind"] == "lr_find" and run.info.run_name == "lr_find mlp128 digits"
    assert float(run.data.params["lr_find.suggestion"]) == float(f"{test.suggestion:.4g}")
    losses = mlflow_store.client.get_metric_history(run.info.run_id, "lr_find/loss")
    lrs = mlflow_store.client.get_metric_history(run.info.run_id, "lr_find/lr")
    assert [m.step for m in losses] == list(range(len(test.lrs))) and len(lrs) == len(test.lrs)
    assert math.isclose(lrs[0].value, 1e-6) and lrs[-1].value > lrs[0].value
    assert "figures/lr_find.png" in mlflow_store.artifacts(run.info.run_id)


@pytest.mark.slow
def test_the_command_prints_the_override_to_train_with(tmp_path):
    done = lr_find_cli("lr_find.steps=100")
    assert done.returncode == 0, done.stderr
    command = [
        line for line in (done.stdout + done.stderr).splitlines() if line.startswith("python experiments/run.py")
    ]
    assert len(command) == 1 and command[0].startswith("python experiments/run.py dataset=digits model=mlp128")
    assert "optimizer.lr=" in command[0] and "lr_find." not in command[0]


@pytest.mark.slow
def test_a_bad_setting_is_one_paragraph_and_exit_2():
    done = lr_find_cli("lr_find.min_lr=-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert "min_lr" in done.stderr + done.stdout
