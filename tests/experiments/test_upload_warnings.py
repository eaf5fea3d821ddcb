"""A run whose uploads keep failing the same way (a store tag past its size limit after hundreds of tables)
says so once, not once an epoch."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from experiments.tracking import mlflow_run


def test_a_failed_upload_is_said_once_per_cause(caplog):
    run = SimpleNamespace(_upload_warnings=set())
    warn = mlflow_run.MlflowRun._warn_upload
    with caplog.at_level(logging.WARNING, logger="nnlab"):
        for err in [ValueError("Unterminated string")] * 3 + [OSError("No space left on device")]:
            warn(run, err)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "MLflow artifact upload failed: Unterminated string (said once for this run)",
        "MLflow artifact upload failed: No space left on device (said once for this run)",
    ]
