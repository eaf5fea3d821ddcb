"""Orphaned runs across machines: only a run whose process this one can see, and that is dead, is closed; a
shared sweep's parent run is left to the sweep, which reopens it without the tags of an earlier close."""

from __future__ import annotations

import socket
import subprocess
import sys

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments.store import experiment_id, open_store
from experiments.tracking import tags as T
from experiments.tracking.provenance import close_orphans, pid_space
from sweeps.parent import Parent


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_runs_of_this_host_and_pid_space_whose_process_died_are_closed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri)
    client = MlflowClient(uri)
    experiment = experiment_id(client, "orphans", None)
    host, here, pid = socket.gethostname(), pid_space(), str(dead_pid())
    cases = {
        "this host, dead": {T.HOST: host, T.PID_SPACE: here, T.PID: pid},
        "this host, dead, no pid space (older run)": {T.HOST: host, T.PID: pid},
        "another host": {T.HOST: host + "-2", T.PID_SPACE: here, T.PID: pid},
        "same host name, another container": {T.HOST: host, T.PID_SPACE: "other-boot:1", T.PID: pid},
        "a shared sweep's parent": {T.HOST: host, T.PID_SPACE: here, T.PID: pid, T.SWEEP: "shared"},
        "a sweep's trial": {T.HOST: host, T.PID_SPACE: here, T.PID: pid, T.TRIAL: "3"},
    }
    runs = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in cases.items()}
    closed = close_orphans(client, experiment)
    assert sorted(closed) == sorted([runs["this host, dead"], runs["this host, dead, no pid space (older run)"]])
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert [name for name, s in status.items() if s == "RUNNING"] == list(cases)[2:]
    assert pid in client.get_run(runs["this host, dead"]).data.tags[T.FAILURE_REASON]


def test_a_sweep_reopening_its_parent_run_drops_the_tags_of_how_it_was_closed(tmp_path):
    tracking = OmegaConf.create({"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "dir": str(tmp_path), "experiment": "p"})
    first = Parent(tracking, "shared")
    client = first.client
    client.set_tag(first.run_id, T.FAILURE_REASON, "its process ended without closing it")
    client.set_tag(first.run_id, T.STATE, T.CRASHED)
    client.set_terminated(first.run_id, "FAILED")
    again = Parent(tracking, "shared")  # another machine's sweep, or a rerun
    assert again.run_id == first.run_id and again.resumed
    run = client.get_run(again.run_id)
    assert run.info.status == "RUNNING"
    assert T.FAILURE_REASON not in run.data.tags and T.STATE not in run.data.tags
