"""The front door as a user types it, ``python experiments/run.py -m sweep=<name>``, through each of Hydra's
launchers: the basic one (in process), joblib (parallel processes) and submitit_local (cluster jobs)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from experiments.outcome import Pruned
from sweeps.engine import job_outcome
from tests.sweeps.conftest import RUN, check_trial_runs, split_runs
from tests.sweeps.test_sweeper import LR_STATE

# 4 trials on digits: lr 0.1 and 0.2 learn, 0.01 and 0.005 stay below the threshold at epoch 1 and are pruned
FOUR = ["hydra.sweeper.n_trials=4", "optimizer.lr=choice(0.1, 0.01, 0.2, 0.005)"]
FOUR_STATE = {0.1: TrialState.COMPLETE, 0.2: TrialState.COMPLETE, 0.01: TrialState.PRUNED, 0.005: TrialState.PRUNED}


@pytest.mark.parametrize(("error", "announced"), [(RuntimeError("boom"), True), (Pruned("at epoch 1"), False)])
def test_a_failed_jobs_line_is_kept_and_a_pruned_ones_dropped(error, announced, capsys):
    result = JobReturn(overrides=["optimizer.lr=0.1"], status=JobStatus.FAILED, _return_value=error)
    assert job_outcome(result) == (None, error)
    assert ("Error executing job with overrides: ['optimizer.lr=0.1']" in capsys.readouterr().err) == announced
    assert job_outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=0.9)) == (0.9, None)


@pytest.mark.slow
def test_a_plain_run_imports_no_optuna(tmp_path):
    """Hydra imports every plugin module on every run: the sweeper's own leaves Optuna to a sweep."""
    found = tmp_path / "optuna-modules.json"
    args = ["dataset=digits", "train.epochs=1", "tracking=none", "train.progress=false"]
    args += [f"hydra.run.dir={tmp_path / 'run'}"]  # nothing written into the checkout
    code = (
        "import atexit, json, runpy, sys\n"
        f"sys.argv = [{str(RUN)!r}, *{args!r}]\n"
        "def report():\n"
        "    names = sorted(m for m in sys.modules if m.split('.')[0] == 'optuna')\n"
        f"    open({str(found)!r}, 'w').write(json.dumps(names))\n"
        "atexit.register(report)\n"  # run.py ends with sys.exit
        f"runpy.run_path({str(RUN)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(found.read_text()) == []


def sweep(store, name, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(RUN), "-m", "sweep=digits_smoke", *store.args(name), *extra]
    command += [f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_sweep_config_selects_the_sweeper_and_its_jobs_are_tracked(store, name, tmp_path):
    done = sweep(store, name, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "trial 1 PRUNED: ThresholdPruner pruned the trial at epoch 1" in output
    assert "Error executing job" not in output  # Hydra's line for a failed job: a pruned trial is not one
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
    assert job.data.tags["nnlab.study"] == name and not any(k.startswith("sweep_trial.") for k in job.data.params)
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir()) == ["0", "1", "2"]
    # the closing hint works as printed, from anywhere: the study recorded where its runs are; its "python" is
    # this one (the first on PATH), else it names this one by its path (no venv active: PATH=/usr/bin:/bin)
    (hint,) = [line.split("report: ", 1)[1] for line in output.splitlines() if "-m sweeps.report" in line]
    command = shlex.split(hint)
    assert command[1:3] == ["-m", "sweeps.report"]
    found = shutil.which(command[0])
    assert found is not None and os.path.dirname(os.path.abspath(found)) == os.path.dirname(sys.executable)
    out = tmp_path / "elsewhere"
    out.mkdir()
    shown = subprocess.run([*command, "--out", str(out)], cwd=out, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert job.info.run_id in (out / "report.md").read_text()


def check_four(store, name) -> None:
    """The 4-trial budget met exactly, pruning as expected, every trial's run under the parent, none RUNNING."""
    study = store.study(name)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert {t.params["optimizer.lr"]: t.state for t in study.trials} == FOUR_STATE
    runs = store.runs(name)
    parent, children = split_runs(runs)
    assert sorted(children) == [0, 1, 2, 3]
    check_trial_runs(store.client, study, runs, epochs=2)
    assert all(r.info.status != "RUNNING" for r in runs) and parent.info.status == "FINISHED"
    return study


@pytest.mark.slow
def test_joblib_launcher_runs_two_trials_at_a_time(store, name, tmp_path):
    done = sweep(store, name, tmp_path, *FOUR, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 trial(s) at a time through JoblibLauncher" in done.stdout + done.stderr
    study = check_four(store, name)
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2  # joblib's worker processes, not this one


@pytest.mark.slow
def test_submitit_local_launcher_runs_trials_as_jobs(store, name, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    extra = ["hydra/launcher=submitit_local", "hydra.sweeper.batch=2", "hydra.launcher.timeout_min=10"]
    done = sweep(store, name, tmp_path, *FOUR, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 trial(s) at a time through LocalLauncher" in done.stdout + done.stderr
    check_four(store, name)
    assert list((tmp_path / "multirun").glob(".submitit/*/*_log.out"))  # submitit ran them as its jobs
