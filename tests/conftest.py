"""Fixtures for every test folder."""

import mlflow
import pytest


@pytest.fixture(autouse=True)
def _restore_mlflow_state():
    """Undo what a tracked run leaves behind: the global tracking URI and any run still active."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")
    mlflow.set_tracking_uri(previous)
