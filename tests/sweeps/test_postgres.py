"""A study shared through a real PostgreSQL server, as by workers on several machines: two drivers of the same
sweep, started at once, meet its budget exactly and share one MLflow parent run.

Uses ``$NNLAB_POSTGRES_URL`` (a server CI started; fresh databases are made in it), else starts a throwaway
cluster from the system's PostgreSQL binaries; skips, saying why, when neither is possible.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from sweeps import report
from sweeps.optuna_private import storage_of, unwrap
from sweeps.study import open_storage
from tests.sweeps.conftest import RUN, check_trial_runs, multirun, split_runs
from tests.sweeps.test_study import ask_from_processes

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'psycopg[binary]'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """``postgresql://user@host:port``: CI's server, or a throwaway cluster in its own process group."""
    if os.environ.get("NNLAB_POSTGRES_URL"):
        yield os.environ["NNLAB_POSTGRES_URL"].rstrip("/")
        return
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and NNLAB_POSTGRES_URL is unset")
    bin_dir = os.path.dirname(binaries[-1])
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    data = tempfile.mkdtemp(prefix="nnlab-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    init = subprocess.run(
        as_postgres([f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]),
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = free_port()
    options = ["-p", str(port), "-k", data, "-h", "127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"]
    with open(os.path.join(data, "server.log"), "ab") as log:
        server = subprocess.Popen(
            as_postgres([f"{bin_dir}/postgres", "-D", data, *options]),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(f"{url}/postgres").close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"PostgreSQL did not start: see {data}/server.log")
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGINT)  # fast shutdown of the postmaster and its children
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def database(server_url) -> Iterator[str]:
    """A fresh database for the study: its URL."""
    name = f"nnlab_optuna_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{server_url}/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_two_machines_share_one_study_through_postgresql(database, store, name, tmp_path):
    args = ["sweep=lr_momentum_l2", *store.args(name), f"hydra.sweeper.storage={database}", "hydra.sweeper.n_trials=4"]
    args += ["dataset=digits", "model=mlp128", "train.epochs=2", "optimizer.momentum=0.9"]
    args += ["optimizer.lr=tag(log,interval(0.03,0.3))"]
    other = subprocess.Popen(  # the other machine; this process is the first
        [sys.executable, str(RUN), "-m", *args, f"hydra.sweep.dir={tmp_path / 'other'}"],  # in the test's folder
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert multirun(*args) == 0
        output = other.communicate(timeout=400)[0]
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, output[-3000:]
    study = store.study(name, storage=database)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    runs = store.runs(name)
    split_runs(runs)  # one parent run for both machines
    children = check_trial_runs(store.client, study, runs, epochs=2)
    assert sorted(children) == [0, 1, 2, 3]
    out = tmp_path / "report"
    assert (
        report.main(
            [
                "--study",
                name,
                "--storage",
                database,
                "--tracking-dir",
                str(store.dir),
                "--experiment",
                name,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"**Best trial #{study.best_trial.number}**" in (out / "report.md").read_text()
    machines_of = {t.number: t.user_attrs["worker"] for t in study.trials}
    print("trials per machine:", {w: [n for n, m in machines_of.items() if m == w] for w in set(machines_of.values())})


def test_workers_asking_at_once_meet_the_budget_exactly_through_postgresql(database):
    """Four processes count and ask under PostgreSQL's advisory lock: 13 trials, not one more."""
    trials = ask_from_processes(database, 13)
    study = optuna.load_study(study_name="shared", storage=open_storage(database, None))
    assert isinstance(unwrap(storage_of(study)), RDBStorage)  # what budget_lock takes the advisory lock for
    assert len(trials) == 13 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(13))


@pytest.mark.parametrize(
    ("path", "named", "fix"),
    [("/nnlab_missing_db", 'database "nnlab_missing_db" does not exist', "createdb nnlab_missing_db"),
     ("nnlab_nobody@/postgres", 'role "nnlab_nobody" does not exist', "createuser nnlab_nobody")],
)  # fmt: skip
def test_a_missing_database_or_role_is_one_paragraph_naming_it(server_url, path, named, fix, store, name, capsys):
    """At once (no retries), through the sweep's front door: exit 2 and one paragraph naming what is missing."""
    from experiments.store import StoreError

    user, _, database = path.rpartition("@")  # another user: in place of the server URL's
    url = re.sub(r"//[^@/]+@", f"//{user}@", server_url) + database if user else server_url + database
    with pytest.raises(StoreError, match=f"{re.escape(named)}. To fix it, [^.]*{fix}"):
        open_storage(url, None)
    started = time.monotonic()
    assert multirun("sweep=digits_smoke", *store.args(name), f"hydra.sweeper.storage={url}") == 2
    said = capsys.readouterr()
    lines = [line for line in (said.out + said.err).splitlines() if named in line]
    assert len(lines) == 1 and "hydra.sweeper.storage=" in lines[0] and "Traceback" not in said.out + said.err
    print(f"refused in {time.monotonic() - started:.1f} s")
