"""Where a run was made and by whom: git commit, library versions, machine, host and process; and the
closing of runs whose process is gone (orphans)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import subprocess
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from experiments.tracking import tags as T
from experiments.tracking.cluster import slurm_tags

log = logging.getLogger("nnlab")


def process_tags() -> dict[str, str]:
    """The host and process that hold a run open: how a later command tells a run orphaned by SIGKILL; and the
    SLURM job they are part of, if any (``cluster.slurm_tags``)."""
    return {T.HOST: socket.gethostname(), T.PID: str(os.getpid()), T.PID_SPACE: pid_space()} | slurm_tags()


def pid_space() -> str:
    """Which process ids ``T.PID`` counts in: this boot of the kernel and its PID namespace. Two containers or
    machines that share a host name differ here, so neither judges the other's pid ("" where unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def clear_ending(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Remove the tags of how a reopened run ended (``T.ENDING``, of those in ``tags``): it goes on."""
    for stale in T.ENDING:
        if stale in tags:
            client.delete_tag(run_id, stale)


def close_orphans(client: MlflowClient, experiment_id: str) -> list[str]:
    """Close as FAILED the RUNNING runs whose process is gone (SIGKILL, out of memory, a power cut): nothing
    else would ever close them. Returns their ids.

    Only a run whose process this one can see is judged: the same host name and, where the run recorded it,
    the same ``pid_space``; a run of another host or container is left to its own machine. A sweep's runs are
    left to the sweep: its trials are failed by its heartbeats, and its parent run, which every machine of a
    shared study uses, is closed by a sweep command (at its end, once no trial of the study runs)."""
    host, space, closed = socket.gethostname(), pid_space(), []
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{T.HOST}` = '{host}'"
    )
    for run in runs:
        tags = run.data.tags
        if T.TRIAL in tags or T.SWEEP in tags:
            continue
        if tags.get(T.PID_SPACE, space) != space:  # the same host name, another machine or container
            continue
        pid = int(tags.get(T.PID, "0"))
        if pid <= 0 or pid == os.getpid() or process_alive(pid):
            continue
        reason = (
            f"its process (pid {pid} on {host}) ended without closing it: killed (SIGKILL, out of memory), crashed, "
            "or the store refused the write (a full disk). Closed by the next command that opened this store; "
            "resume.py continues it from its last state."
        )
        client.set_tag(run.info.run_id, T.FAILURE_REASON, reason)
        client.set_terminated(run.info.run_id, "FAILED")
        closed.append(run.info.run_id)
        log.warning("closed orphaned run %s as FAILED: %s", run.info.run_id, reason)
    return closed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def environment_tags() -> dict[str, str]:
    """Git commit and dirty flag, NumPy and BLAS versions, Python and machine."""
    tags = {"numpy.version": np.__version__, "python.version": platform.python_version(), "machine": machine()}
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    tags["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    try:
        repo = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
            tags["git.dirty"] = str(bool(status.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def machine() -> str:
    """The processor and the cores this process may use: ``AMD EPYC 7B13, 2 cores``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {cores} cores"
