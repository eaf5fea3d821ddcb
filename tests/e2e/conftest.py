"""End-to-end fixtures: real servers on free localhost ports, a small sweep in a temporary MLflow store.

Every server runs in its own process group (``start_new_session``) and is stopped as a group: SIGTERM,
then SIGKILL for whatever is left, since MLflow's server starts workers that outlive a killed parent.
Screenshots and server logs go to ``$NNLAB_TEST_ARTIFACTS`` (a folder CI keeps), else to a temporary folder
of the session (``artifacts0`` under pytest's base temporary directory): nothing is written into the checkout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ["MPLBACKEND"] = "Agg"  # before anything imports matplotlib
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from tests
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

SWEEP = "lr_momentum_l2"  # conf/sweep/lr_momentum_l2.yaml, cut down to two short trials on digits
SWEEP_COMMAND = [
    str(REPO / "experiments" / "run.py"),
    "-m",
    f"sweep={SWEEP}",
    "hydra.sweeper.n_trials=2",
    "dataset=digits",
    "model=mlp128",
    "train.epochs=3",
    "train.progress=false",
    "tracking.experiment=nnlab",
]


def python_env() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH (for subprocesses run from elsewhere)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return os.environ | {"PYTHONPATH": path}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose(*overrides: str):
    """``conf/config.yaml`` composed with ``overrides``, as ``experiments/run.py`` gives it to ``train``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import experiments.schema  # noqa: F401  registers the structured-config schemas

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def train_tracked(*overrides: str) -> str:
    """``train(cfg)`` of the composed config with MLflow tracking; returns the run id."""
    import mlflow

    from experiments.store import use_store
    from experiments.train import train

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    try:
        train(compose(*overrides))
        run = mlflow.last_active_run()
        assert run is not None and run.info.status == "FINISHED", run
        return run.info.run_id
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run(status="KILLED")
        use_store(previous)


@dataclass
class Server:
    """A server process started in its own session; ``stop`` ends its whole process group."""

    name: str
    command: list[str]
    url: str
    log_path: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    def wait_ready(self, path: str, timeout: float = 180.0, expect: Callable[[bytes], bool] | None = None) -> float:
        """Poll ``url + path`` until it answers 200 (and ``expect(body)``); returns the seconds since start."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with code {self.process.returncode} before answering:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as response:
                    if response.status == 200 and (expect is None or expect(response.read())):
                        return time.monotonic() - self.started
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not answer {self.url + path} within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.5)

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text[-lines:]) + f"\n(full log: {self.log_path})"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left of it after ``timeout``."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        # Children may have survived their leader: kill the group until nothing of it is left.
        deadline = time.monotonic() + timeout
        while group_alive(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.poll()  # reap the leader
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, already dead, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Where screenshots and server logs are kept: ``$NNLAB_TEST_ARTIFACTS``, else a temporary folder."""
    chosen = os.environ.get("NNLAB_TEST_ARTIFACTS")
    if not chosen:
        return tmp_path_factory.mktemp("artifacts")
    path = Path(chosen).expanduser().resolve()  # absolute: tests run in temporary working directories
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def start_server(artifacts_dir) -> Iterator[Callable[..., Server]]:
    """``start_server(name, command, port, env=None) -> Server``; every server still up is stopped at the end."""
    servers: list[Server] = []

    def start(name: str, command: list[str], port: int, env: dict[str, str] | None = None) -> Server:
        log_path = artifacts_dir / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as one
                env=python_env() | (env or {}),
            )
        server = Server(name, command, f"http://127.0.0.1:{port}", log_path, process)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class SweepStore:
    """A temporary MLflow store holding one small sweep (a parent run and two trial runs) and its study."""

    dir: Path
    study: str = SWEEP

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.dir / 'mlflow.db'}"

    @property
    def journal(self) -> Path:
        return self.dir / "optuna" / f"{self.study}.log"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> SweepStore:
    """The store's database, created (and migrated) before any server or sweep opens it."""
    from mlflow.tracking import MlflowClient

    store = SweepStore(tmp_path_factory.mktemp("e2e-store"))
    MlflowClient(store.uri).search_experiments()
    return store


@pytest.fixture(scope="session")
def sweep_store(empty_store, artifacts_dir) -> SweepStore:
    """``python experiments/run.py -m sweep=lr_momentum_l2`` with two 3-epoch trials on digits into ``empty_store``."""
    command = [
        sys.executable,
        *SWEEP_COMMAND,
        f"tracking.dir={empty_store.dir}",
        f"hydra.sweep.dir={empty_store.dir}/multirun",
    ]
    log_path = artifacts_dir / "sweep.log"
    with open(log_path, "wb") as out:
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=empty_store.dir, timeout=600, env=python_env()
        )
    if result.returncode != 0:
        pytest.fail(f"the sweep failed ({result.returncode}):\n{log_path.read_text()[-3000:]}")
    return empty_store
