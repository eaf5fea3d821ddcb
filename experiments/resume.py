"""Continue a run that was cut off (Ctrl-C, SIGKILL, a crash) in the same MLflow run.

    python experiments/resume.py RUN_ID [--tracking-uri sqlite:///mlruns/mlflow.db]

Training goes on from the last epoch whose training state was saved, with weights, optimizer state,
schedule position and the random generator restored: the final weights are bit-identical to those of
an uninterrupted run with the same config and seed.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from experiments.exits import ERRORS, FAILED, diverged, report, run_command
from experiments.runs import (
    RunError,
    get_run,
    latest_training_state,
    logged_config,
    parse_run_arguments,
    tracking_uri_or_default,
)
from experiments.tracking import tags as T
from experiments.train import Resume, TrainResult, train

log = logging.getLogger("nnlab")


def resume(run_id: str, tracking_uri: str | None = None) -> TrainResult:
    """Continue run ``run_id`` in place; returns ``train``'s result."""
    uri = tracking_uri_or_default(tracking_uri)
    client = MlflowClient(uri)
    run = get_run(client, run_id)
    if run.info.status == "FINISHED":
        raise RunError(f"run {run_id} already finished; there is nothing to resume. Use reproduce.py to re-run it.")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = logged_config(client, run_id, uri)
            state_file, epoch = latest_training_state(client, run_id, Path(tmp))
        except RunError as err:
            if run.info.status == "RUNNING":  # killed before its config or first state: nothing else would close it
                client.set_tag(run_id, T.FAILURE_REASON, f"not resumable: {err}")
                client.set_terminated(run_id, "FAILED")
                raise RunError(f"{err} The run is now closed as FAILED.") from err
            raise
        log.info("resuming run %s after epoch %d of %d", run_id, epoch, cfg.train.epochs)
        return train(cfg, resume=Resume(run_id, state_file))


def main(argv: list[str] | None = None) -> int:
    args = parse_run_arguments(__doc__.splitlines()[0], argv)
    try:
        result = resume(args.run_id, args.tracking_uri)
    except ERRORS as err:
        return report(err, "resume")
    if result.status == T.DIVERGED:  # closed as FAILED with its reason, as run.py says
        print(f"resume: {diverged(result.reason, result.run_id)}", file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    run_command(main, "resume")
