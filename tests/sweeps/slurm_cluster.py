"""A one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's ``slurm-wlm`` and
``munge``, with a generated ``slurm.conf`` in a temporary folder, each daemon in its own process group and
stopped with it at the end, as the PostgreSQL tests start their server.

``one_node_cluster`` (``test_slurm.py``'s session fixture) sets ``SLURM_CONF`` for the tests and the jobs;
it skips, saying why, where the daemons are not installed (``apt-get install slurm-wlm munge``), where the
tests do not run as root (slurmd must), or where the cluster does not come up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


@dataclass
class Cluster:
    conf: Path  # its slurm.conf (SLURM_CONF)
    node: str
    partition: str = "debug"

    def jobs(self) -> list[str]:
        """The ids of the jobs in the queue, any state."""
        out = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, check=True).stdout
        return out.split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb() -> int:
    """What slurmd may offer: 90% of the machine's memory (it refuses a node that claims more than it has)."""
    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))  # fmt: skip
    return int(total_kb / 1024 * 0.9)


def slurm_conf(folder: Path, node: str) -> str:
    """Ten-odd lines of a one-node cluster; ``cred_expire=5`` makes a requeued job eligible after 6 s, not 121."""
    return f"""\
ClusterName=nnlab-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge" / "munge.sock"},cred_expire=5
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the daemon's process group, SIGKILL to what is left of it after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_until(ready, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tails = " | ".join(f"{log.name}: {log.read_text()[-300:]}" for log in logs if log.is_file())
            pytest.skip(f"the one-node SLURM cluster did not come up ({what}): {tails}")
        time.sleep(0.3)


def node_idle() -> bool:
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return sinfo.returncode == 0 and sinfo.stdout.strip() in ("idle", "mixed", "allocated")


@contextlib.contextmanager
def one_node_cluster(folder: Path) -> Iterator[Cluster]:
    """munged, slurmctld and slurmd in ``folder``, with ``SLURM_CONF`` set; stopped, their jobs cancelled, on exit."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster needs root (slurmd starts jobs as their users)")
    node = socket.gethostname().split(".")[0]
    for sub in ("munge", "state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, node))
    munge = folder / "munge"
    daemons: list[subprocess.Popen] = []
    logs = [folder / "munged.out", folder / "slurmctld.out", folder / "slurmd.out"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(conf))
        try:
            daemons.append(start(["munged", "-F", "-f", f"--key-file={key}", f"--socket={munge / 'munge.sock'}",
                                  f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'seed'}",
                                  f"--log-file={folder / 'munged.log'}"], logs[0]))  # fmt: skip
            wait_until((munge / "munge.sock").exists, 15, "munged", logs)
            daemons.append(start(["slurmctld", "-D", "-f", str(conf)], logs[1]))
            daemons.append(start(["slurmd", "-D", "-N", node, "-f", str(conf)], logs[2]))
            wait_until(node_idle, 30, "its node is not idle", logs + [folder / "slurmctld.log"])
            yield Cluster(conf, node)
        finally:
            if daemons and len(daemons) == 3:
                subprocess.run(["scancel", "--full", "--partition=debug"], capture_output=True)
                deadline = time.monotonic() + 20
                while (
                    time.monotonic() < deadline
                    and subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
                ):
                    time.sleep(0.5)
            for daemon in reversed(daemons):
                stop(daemon)
