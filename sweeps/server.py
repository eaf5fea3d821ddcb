"""A local MLflow tracking server for the length of a multi-worker sweep (``hydra.sweeper.mlflow_server=true``).

Not needed for a few workers: MLflow 3 sets SQLite's ``busy_timeout`` to 20 s, so writers on one file
wait for each other instead of failing (4 processes x 300 metric batches at once lost nothing). With
many workers, one server serializes the writes instead. It runs in its own process group (MLflow's
server starts workers that outlive their parent) and is killed as a group at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("nnlab.sweeps")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Server:
    """A started ``mlflow server``: its URI now, ``wait_ready`` to block until it answers."""

    def __init__(self, process: subprocess.Popen, uri: str, log_path: Path) -> None:
        self.process, self.uri, self.log_path = process, uri, log_path

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        log.info("MLflow server for the sweep's workers at %s (log: %s)", self.uri, self.log_path)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer on {self.uri} in {timeout:.0f} s; see {self.log_path}"
                )
            time.sleep(0.5)


@contextlib.contextmanager
def local_server(backend_uri: str, artifact_root: str, log_dir: Path) -> Iterator[Server]:
    """``mlflow server`` on a free localhost port over ``backend_uri``, stopped on exit.

    It yields as soon as the process is started; it takes seconds to answer, so ``wait_ready`` before
    pointing clients at it. Artifacts are not proxied:
    clients write them straight to ``artifact_root`` (a local folder).
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"mlflow-server-{port}.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    command += ["--default-artifact-root", artifact_root, "--no-serve-artifacts"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        stop(process)
