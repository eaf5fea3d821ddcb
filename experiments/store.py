"""The MLflow store of a run: where it is, and whether it can be used, checked before any data is read.

``resolve_store`` turns ``tracking.{uri,dir}`` into a tracking URI and an artifact location;
``open_store`` checks that store in seconds (a reachable server, a real or creatable SQLite file, a
scheme MLflow knows) and creates a new SQLite store once, under a file lock, so that processes
starting together on an empty folder do not race on MLflow's table creation. ``experiment_id`` finds or
makes an experiment there; ``run_page`` and ``ui_command`` say where the UI shows a run.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig

DEFAULT_STORE = Path("mlruns") / "mlflow.db"  # where run.py tracks by default, relative to where it starts
SQLITE_HEADER = b"SQLite format 3\x00"
DATABASES = ("postgresql", "mysql", "mssql", "oracle")
SERVER_TIMEOUT = 8.0  # seconds an unreachable tracking server is given: with start-up, the command ends within 15 s


class StoreError(ValueError):
    """The tracking store cannot be used; the message names it, the problem and the fix."""


def first_line(err: BaseException) -> str:
    """``Type: message`` of an exception, its first line only (a database error goes on with its SQL)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def root_cause(err: BaseException) -> BaseException:
    """The exception at the root of ``err``'s causes (``sqlite3.OperationalError`` under MLflow's)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def tracking_uri(uri: str | None = None, folder: str | Path | None = None) -> str:
    """The store of every command: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else SQLite at
    ``<folder>/mlflow.db`` (default ``./mlruns``); a SQLite path is made absolute, so the URI works from
    any directory."""
    uri = str(uri or os.environ.get("MLFLOW_TRACKING_URI") or "")
    if not uri:
        database = Path(folder).expanduser() / "mlflow.db" if folder else DEFAULT_STORE
        return f"sqlite:///{database.resolve()}"
    database = sqlite_path(uri)
    return f"sqlite:///{database}" if database is not None else uri


def resolve_store(tracking: DictConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None to let the server choose) of a run:
    ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite at ``<tracking.dir>/mlflow.db``; a SQLite
    store keeps its artifacts in ``artifacts/`` beside its database file, never in the current folder."""
    uri = tracking_uri(tracking.uri, tracking.dir)
    database = sqlite_path(uri)
    return uri, (database.parent / "artifacts").as_uri() if database is not None else None


def store_folder(tracking: DictConfig) -> Path:
    """Where a run's files beside its store go (a sweep's journal, reports): the folder of its SQLite store,
    else ``tracking.dir`` (a server or database store, or ``tracking=none``), absolute."""
    database = sqlite_path(resolve_store(tracking)[0]) if tracking.get("enabled", True) else None
    return database.parent if database is not None else Path(tracking.dir).expanduser().resolve()


def use_store(uri: str) -> None:
    """``mlflow.set_tracking_uri(uri)`` without its write to ``$MLFLOW_TRACKING_URI`` (MLflow 3 sets the
    variable for subprocesses), so that in a process that tracks twice (a notebook, a sweep, the tests)
    the first store does not become the second one's default."""
    import mlflow  # here, not at the top: commands that track nothing start without it

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser().resolve()


def open_store(uri: str, create: bool = True) -> None:
    """Check the store of ``uri`` and, for a new SQLite store with ``create``, create it once under a lock;
    raises ``StoreError`` saying what is wrong and how to fix it."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    fix = "Fix tracking.uri (or tracking.dir, or $MLFLOW_TRACKING_URI when set), or run with tracking=none."
    if scheme == "sqlite":
        open_sqlite(uri, create, fix)
    elif scheme in ("http", "https"):
        check_server(uri, fix)
    elif scheme == "file" or scheme == "":
        raise StoreError(
            f"The tracking store {uri!r} is a plain folder, which MLflow 3 no longer accepts as a store. "
            f"Leave tracking.uri null to use SQLite under tracking.dir, or give sqlite:///<path>/mlflow.db. {fix}"
        )
    elif scheme.split("+")[0] not in (*DATABASES, "databricks"):
        raise StoreError(
            f"The tracking store {uri!r} has a scheme MLflow does not know ({scheme}://). Use sqlite:///<file>, "
            f"http(s)://<server>, or a database URL (postgresql://...). {fix}"
        )


def open_sqlite(uri: str, create: bool, fix: str) -> None:
    path = sqlite_path(uri)
    if path is None:
        raise StoreError(f"The tracking store {uri!r} is not an absolute sqlite:///<path> URI. {fix}")
    if path.is_dir():
        raise StoreError(f"The tracking store {path} is a directory, not a SQLite file: use {path}/mlflow.db. {fix}")
    if path.exists():
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise StoreError(
                f"The tracking store {path} is not a SQLite database (it starts with {head[:8]!r}): it was "
                f"overwritten or is another file. Move it away, or point tracking.dir at another folder. {fix}"
            )
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            raise StoreError(
                f"The tracking store {path} is read-only for this user: runs cannot be logged there. "
                f"Make it and its folder writable, or track elsewhere. {fix}"
            )
        if head:
            return
    elif not create:
        raise StoreError(
            f"There is no MLflow store at {path}: pass the store the runs were logged to "
            "(--tracking-uri sqlite:///<path>/mlflow.db, or run from the folder holding mlruns/)."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"The tracking store's folder {path.parent} cannot be created ({err}). {fix}") from err
    if not os.access(path.parent, os.W_OK):
        raise StoreError(f"The tracking store's folder {path.parent} is not writable for this user. {fix}")
    from mlflow.tracking import MlflowClient

    try:
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process creates MLflow's tables; the others wait, then find them
            try:
                MlflowClient(uri).search_experiments(max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except Exception as err:  # a full disk, most likely: SQLite could not write the new store's tables
        raise StoreError(
            f"The tracking store {path} could not be created ({first_line(root_cause(err))}). If the disk is full, "
            f"free space on it. {fix}"
        ) from None


def check_server(uri: str, fix: str) -> None:
    """A tracking server answers its ``/health`` within ``SERVER_TIMEOUT`` seconds."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            wait = max(0.5, min(5.0, deadline - time.monotonic()))  # a silent host must not outlast the deadline
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=wait) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as err:  # it answers: a server, perhaps behind a proxy without /health
            if err.code in (401, 403):
                return
            error = err
        except (OSError, ValueError) as err:
            error = err
        time.sleep(1)
    raise StoreError(
        f"The tracking server {uri} did not answer within {SERVER_TIMEOUT:.0f} s ({error}). Start it "
        f"(mlflow server --host 127.0.0.1 --port <port> --backend-store-uri sqlite:///mlruns/mlflow.db), check the "
        f"address, or leave tracking.uri null to log to the local store. {fix}"
    )


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens it as model training


def experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if it does not exist yet.

    A new experiment is tagged as model development, so the MLflow UI opens it in its model-training view."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    except MlflowException:  # created meanwhile by a parallel run
        return client.get_experiment_by_name(name).experiment_id


UI_PORT = 5000
UI_PORTS = range(UI_PORT, UI_PORT + 10)  # where run_page looks for a UI already serving the run, else a free port


def ui_command(uri: str, port: int = UI_PORT) -> str:
    """The README's lean ``mlflow ui`` (one worker, no GenAI job runner) over store ``uri``."""
    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri} "
        f"--host 127.0.0.1 --port {port} --workers 1"
    )


def ui_port(run_id: str, ports=UI_PORTS) -> tuple[int, bool]:
    """A local port for the UI of the store holding ``run_id``: one of ``ports`` whose server already knows the
    run (True), else the first free one (False), else the first."""
    free = None
    for port in ports:
        address = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        try:
            with urllib.request.urlopen(address, timeout=2) as answer:
                if answer.status == 200:
                    return port, True
        except urllib.error.HTTPError:  # a server, of another store (or not MLflow)
            continue
        except (OSError, ValueError, http.client.HTTPException):  # nothing listens there, or it is not HTTP
            if free is None and port_free(port):
                free = port
    return (ports[0] if free is None else free), False


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_page(uri: str, experiment: str, run_id: str, ports=UI_PORTS) -> str:
    """Where to see a run: the address of its page in the UI's model-training view and, for a database
    store, the command that serves that UI on a free port, unless a local UI on one of ``ports`` serves it."""
    route = f"#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return f"{uri.rstrip('/')}/{route}"
    if scheme == "databricks":
        return f"run {run_id} of experiment {experiment} in your Databricks workspace"
    port, serving = ui_port(run_id, ports)
    page = f"http://127.0.0.1:{port}/{route}"
    return page if serving else f"{page} (serve the UI with: {ui_command(uri, port)})"
