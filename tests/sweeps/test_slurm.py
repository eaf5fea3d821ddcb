"""Sweeps through ``hydra/launcher=slurm`` on a real one-node SLURM cluster (``slurm_cluster``): the budget met
with every trial's run under its parent and naming its job, quiet logs, and a trial whose job is preempted,
killed or timed out continuing its own run to the weights of a trial that was not stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

import nn
from experiments.tracking import tags as T
from sweeps.server import local_server
from tests.sweeps.conftest import RUN, check_trial_runs, epochs_logged, split_runs
from tests.sweeps.slurm_cluster import Cluster, one_node_cluster
from tests.sweeps.test_postgres import database, server_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A one-node SLURM cluster for the session (skips, saying why, where it cannot start)."""
    with one_node_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


ON_ONE_CPU = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.mem_gb=1"]  # fmt: skip
ONE_TRIAL = ["sweep=digits_smoke", "optimizer.lr=choice(0.1)", "hydra.sweeper.n_trials=1"]
RESUMABLE = ["tracking.checkpoints.policy=last"]  # QUICK's policy=none saves no training state


def start_sweep(store, name: str, folder: Path, *extra: str) -> subprocess.Popen:
    """``python experiments/run.py -m`` of a sweep named ``name`` through the SLURM launcher, as a process."""
    args = [*store.args(name), *ON_ONE_CPU, *extra, f"hydra.sweep.dir={folder / name}"]
    return subprocess.Popen([sys.executable, str(RUN), "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        output = process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-4000:]
    return output


def sweep(store, name: str, folder: Path, *extra: str) -> str:
    return finish(start_sweep(store, name, folder, *extra))


def child_run(store, name: str, min_epochs: int, timeout: float = 120):
    """The trial's run once it has logged ``min_epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [r for r in store.runs(name) if T.TRIAL in r.data.tags]
        if children and len(store.client.get_metric_history(children[0].info.run_id, "val/acc")) >= min_epochs:
            return children[0]
        time.sleep(0.1)
    raise TimeoutError(f"the trial of {name} did not log {min_epochs} epochs in {timeout} s")


def requeue(job: str, timeout: float = 30) -> None:
    """``scontrol requeue``, once the job may be requeued (not while SLURM is still ending its killed step)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["scontrol", "requeue", job], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, f"job {job} could not be requeued"
        time.sleep(0.3)


def final_weights(store, run) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        return nn.load(store.client.download_artifacts(run.info.run_id, "checkpoints/last.npz", folder)).params


def the_one_trial_run(store, name: str, epochs: int, once: bool = True):
    """The study's one trial, COMPLETE, and its one run: FINISHED with every epoch's metrics, each logged once when
    ``once``. Not after a SIGKILL: the epochs after the last state the killed process saved are trained and
    logged again (as ``resume.py`` does, tests/experiments/test_resume.py)."""
    study = store.study(name)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    runs = store.runs(name)
    if once:
        (run,) = check_trial_runs(store.client, study, runs, epochs=epochs).values()
        assert epochs_logged(store.client, run)["val/acc"] == list(range(1, epochs + 1))
    else:
        (run,) = split_runs(runs)[1].values()
        assert run.info.status == "FINISHED"
        assert all(set(steps) == set(range(1, epochs + 1)) for steps in epochs_logged(store.client, run).values())
    return run


def test_a_sweep_of_slurm_jobs_meets_its_budget_and_each_run_names_its_job(slurm_cluster, store, name, tmp_path):
    output = sweep(store, name, tmp_path, "sweep=digits_smoke", "hydra.sweeper.batch=2")
    study = store.study(name)
    assert sorted(t.number for t in study.trials) == [0, 1, 2]  # budget exact
    runs = store.runs(name)
    children = check_trial_runs(store.client, study, runs, epochs=2)
    assert sorted(children) == [0, 1, 2] and all(r.info.status != "RUNNING" for r in runs)
    jobs = {r.data.tags[T.SLURM_JOB] for r in children.values()}
    assert len(jobs) == 3  # one job each
    for run in children.values():
        assert run.data.tags[T.SLURM_NODE] == slurm_cluster.node
        assert Path(run.data.tags[T.SLURM_STDOUT]).is_file() and Path(run.data.tags[T.SLURM_STDERR]).is_file()
        assert T.REQUEUES not in run.data.tags
    arrays = sorted(children[n].data.tags.get(T.SLURM_ARRAY, "none").split("_")[-1] for n in children)
    assert arrays == ["0", "1", "none"]  # the first batch of two is an array; submitit submits one job alone
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Bypassing sacct" not in output and output.count("sacct cannot tell") == 1  # the fallback said once
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1][:3]  # none twice


@pytest.mark.parametrize("stop", ["preempted", "killed"])
def test_a_stopped_trial_continues_its_run_to_the_weights_of_one_not_stopped(
    slurm_cluster, store, name, tmp_path, stop
):
    """Preempted: ``scancel --signal=USR2`` (what SLURM sends before a preemption or the time limit), submitit
    requeues the job. Killed: its process gets SIGKILL (out of memory, a node lost) and the job is requeued
    (``scontrol requeue``, what SLURM does after a node failure). Either way the trial continues its run after its
    last saved epoch."""
    epochs = 40
    args = [*ONE_TRIAL, f"train.epochs={epochs}", *RESUMABLE]
    reference_output = sweep(store, f"{name}-ref", tmp_path, *args)
    reference = the_one_trial_run(store, f"{name}-ref", epochs)

    driver = start_sweep(store, name, tmp_path, *args)
    running = child_run(store, name, min_epochs=3)
    job = running.data.tags[T.SLURM_JOB]
    if stop == "preempted":
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
    else:
        os.kill(int(running.data.tags[T.PID]), signal.SIGKILL)
        requeue(job)
    finish(driver)

    run = the_one_trial_run(store, name, epochs, once=stop == "preempted")  # one run for the trial, FINISHED
    assert run.data.tags[T.REQUEUES] == "1" and run.data.tags[T.SLURM_RESTARTS] == "1"
    assert run.data.tags[T.SLURM_JOB] == job
    assert (3 if stop == "preempted" else 1) <= int(run.data.tags[T.RESUMED_FROM_EPOCH]) < epochs
    ours, theirs = final_weights(store, run), final_weights(store, reference)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert "Job not requeued" not in reference_output


def test_a_trial_over_its_time_limit_is_requeued_and_finishes(slurm_cluster, store, name, tmp_path):
    """A one-minute time limit with the signal 50 s before it (SLURM checks limits about every 30 s, so it comes
    10 to 40 s into the job): the trial outlasts it, is requeued and finishes its run. The requeued job gets ten
    minutes: with one, SLURM signals it again as it starts (its end time is still the first run's), before
    Python is up to catch it."""
    epochs = 1000  # about 45 s of training on one CPU
    limit = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50"]
    driver = start_sweep(store, name, tmp_path, *ONE_TRIAL, f"train.epochs={epochs}", *RESUMABLE, *limit)
    job = child_run(store, name, min_epochs=1).data.tags[T.SLURM_JOB]
    deadline = time.monotonic() + 120
    while job_state(job) != "PENDING":  # requeued by submitit on the time-limit signal
        assert time.monotonic() < deadline and driver.poll() is None, "the job was not requeued at its time limit"
        time.sleep(0.3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
    output = finish(driver)
    run = the_one_trial_run(store, name, epochs)
    assert run.data.tags[T.REQUEUES] == "1" and "timed-out" in Path(run.data.tags[T.SLURM_STDOUT]).read_text()
    assert "Job not requeued" not in output


def job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def test_the_several_machines_recipe_runs_its_trials_as_slurm_jobs(slurm_cluster, store, name, tmp_path, request):
    """The study in PostgreSQL and MLflow behind a tracking server, the trials SLURM jobs: the budget is met, each
    trial's run under the parent, naming its job."""
    storage = request.getfixturevalue("database")  # test_postgres's: a fresh database on a throwaway server
    with local_server(store.uri, (store.dir / "artifacts").as_uri(), tmp_path / "server") as server:
        server.wait_ready()
        sweep(store, name, tmp_path, "sweep=digits_smoke", "hydra.sweeper.batch=2",
              f"hydra.sweeper.storage={storage}", f"tracking.uri={server.uri}")  # fmt: skip
    study = store.study(name, storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2]
    runs = store.runs(name)
    split_runs(runs)
    children = check_trial_runs(store.client, study, runs, epochs=2)
    assert sorted(children) == [0, 1, 2] and all(T.SLURM_JOB in r.data.tags for r in children.values())
