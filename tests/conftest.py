"""Fixtures for every test folder.

Every test runs in an empty temporary working directory of its own (``_run_in_a_temporary_folder``), so that
whatever a test or the code under it writes relative to the working directory (Hydra's ``outputs/`` and
``multirun/``, ``./mlruns``) lands there and not in the checkout, and that no file a user put in the checkout
(the README's ``mnist_train.csv``) is read by a test. A test that needs the checkout names it by absolute path
(``Path(__file__).resolve().parents[...]``) or passes ``cwd=`` to its subprocess. Session- and module-scoped
fixtures are set up before it, in the directory pytest started in.
"""

import os

import mlflow
import pytest

from experiments.store import use_store


@pytest.fixture(autouse=True, scope="session")
def _no_tracking_uri_from_the_shell():
    """A ``$MLFLOW_TRACKING_URI`` set where the tests run would send their runs to that store."""
    shell = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    if shell is not None:
        os.environ["MLFLOW_TRACKING_URI"] = shell


@pytest.fixture(autouse=True)
def _run_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """Start the test in a new empty folder, apart from its ``tmp_path`` (whose listing some tests check)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _restore_mlflow_state():
    """Undo what a tracked run or a test leaves behind: the global tracking URI, ``$MLFLOW_TRACKING_URI``
    and any run still active."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")
    use_store(previous)
    if variable is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = variable
