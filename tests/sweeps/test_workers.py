"""``hydra.sweeper.workers=N``, the asynchronous path: N processes on one study, the budget met exactly, every
trial run once and tracked in full, and a worker killed mid-trial (SIGKILL) detected by its stopped
heartbeat, its trial failed and run again. (``test_postgres.py`` runs two sweeps on one study too, writing
the SQLite MLflow store directly.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.study import open_storage
from tests.sweeps.conftest import RUN, check_trial_runs, epochs_logged, multirun

# digits, 3 epochs of a small network, learning rates that all learn
SPACE = ["dataset=digits", "model=mlp128", "optimizer.momentum=0.9", "optimizer.lr=tag(log,interval(0.03,0.3))"]


@pytest.mark.slow
def test_two_workers_meet_the_budget_exactly_and_track_every_epoch(store, name):
    """Two worker processes, BLAS threads divided, writing MLflow through the local server the driver runs."""
    args = ["sweep=lr_momentum_l2", *store.args(name), *SPACE, "train.epochs=3", "hydra.sweeper.n_trials=4"]
    assert multirun(*args, "hydra.sweeper.workers=2", "hydra.sweeper.mlflow_server=true") == 0
    study = store.study(name)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials), [t.state for t in study.trials]
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    runs = store.runs(name)
    children = check_trial_runs(store.client, study, runs, epochs=3)  # one run per trial, all 3 epochs of each
    assert sorted(children) == [0, 1, 2, 3]
    assert {r.data.tags["nnlab.trial"] for r in children.values()} == {"0", "1", "2", "3"}
    # the MLflow server the driver started for its workers is gone, with its process group
    (server_log,) = (store.dir / "optuna").glob("mlflow-server-*.log")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server_log.stem.rsplit('-', 1)[1]}/health", timeout=2)


def study_when(storage: str, name: str, ready, timeout: float = 300) -> optuna.Study:
    """Poll the journal until ``ready(study)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=None))
        except (FileNotFoundError, KeyError):  # not created yet
            study = None
        if study is not None and ready(study):
            return study
        time.sleep(0.3)
    raise TimeoutError(f"study {name} never got ready")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_detected_its_trial_failed_and_rerun(store, name):
    """A worker process is SIGKILLed in its trial; another (here the driver, in this process) waits for the
    trial's heartbeat to go stale, fails it, closes its MLflow run, runs it again and completes the budget."""
    args = ["sweep=lr_momentum_l2", *store.args(name), *SPACE, "train.epochs=20", "hydra.sweeper.n_trials=2"]
    args += ["hydra.sweeper.heartbeat.interval=1", "hydra.sweeper.heartbeat.grace_period=3"]
    victim_process = subprocess.Popen(
        [sys.executable, str(RUN), "-m", *args, "hydra.sweeper.worker=1", f"hydra.sweep.dir={store.dir / name}"],
        start_new_session=True,  # in the test's own folder, its outputs in the store's
    )
    try:
        storage = str(store.dir / "optuna" / f"{name}.log")
        (victim,) = study_when(storage, name, running_with_an_epoch).trials
        assert victim.user_attrs["worker"].endswith(f":{victim_process.pid}")
        victim_process.send_signal(signal.SIGKILL)
        assert victim_process.wait(60) == -signal.SIGKILL
    finally:
        if victim_process.poll() is None:
            os.killpg(victim_process.pid, signal.SIGKILL)
    assert multirun(*args) == 0
    study = store.study(name)
    trials = {t.number: t for t in study.trials}
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL and "no heartbeat" in killed.user_attrs["fail_reason"]
    (rerun,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert rerun.params == killed.params and rerun.state == TrialState.COMPLETE
    assert len(trials) == 3 and [t.state for t in trials.values()].count(TrialState.COMPLETE) == 2  # budget of 2 met
    runs = store.runs(name)
    children = {int(r.data.tags["nnlab.trial"]): r for r in runs if "nnlab.trial" in r.data.tags}
    assert children[victim.number].info.status == "FAILED"  # closed for the dead worker
    assert "no heartbeat" in children[victim.number].data.tags["nnlab.failure_reason"]
    for number in (n for n in trials if n != victim.number):
        assert epochs_logged(store.client, children[number])["val/acc"] == list(range(1, 21))


def running_with_an_epoch(study: optuna.Study) -> bool:
    return any(
        t.state == TrialState.RUNNING and t.intermediate_values and "worker" in t.user_attrs for t in study.trials
    )
