"""Fixtures for every test folder."""

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
