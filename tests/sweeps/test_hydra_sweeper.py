"""``python experiments/run.py -m hydra/sweeper=nnlab_optuna +sweep=digits_smoke``: our Hydra sweeper, found
by Hydra in the ``hydra_plugins`` namespace package, pruning jobs that run in Hydra's launcher."""

from __future__ import annotations

import subprocess
import sys

from optuna.trial import TrialState

from tests.sweeps.conftest import REPO, check_trial_runs, split_runs
from tests.sweeps.test_run import LR_STATE


def test_multirun_with_the_nnlab_optuna_sweeper_prunes_and_tracks(store, name, tmp_path):
    command = [sys.executable, str(REPO / "experiments" / "run.py"), "-m", "hydra/sweeper=nnlab_optuna"]
    command += ["+sweep=digits_smoke", *store.args(name), f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trial 1 PRUNED: ThresholdPruner pruned the trial at epoch 1" in done.stdout + done.stderr
    study = store.study(name)
    assert {t.params["optimizer.lr"]: t.state for t in study.trials} == LR_STATE
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert "diverged" in failed.user_attrs["fail_reason"]
    runs = store.runs(name)
    parent, children = split_runs(runs)
    check_trial_runs(store.client, study, runs, epochs=2)
    assert parent.info.status == "FINISHED" and parent.data.tags["best.optimizer.lr"] == "0.1"
    job = children[study.best_trial.number]
    assert "sweep_trial.number" in job.data.tags["nnlab.overrides"]  # the job's own Hydra overrides
    assert job.data.params["sweep_trial.study"] == name
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir()) == ["0", "1", "2"]
