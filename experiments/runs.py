"""Read back what a logged run needs to be continued or re-run: its config and its training state."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.schema import Config
from experiments.store import first_line, open_store, tracking_uri, use_store
from experiments.tracking.checkpoints import RESUME_FOLDER, RESUME_STATES
from nn.serialization import ModelFileError, load_training_state

if TYPE_CHECKING:  # MLflow is imported where a run is read: commands that read none start without it
    from mlflow.tracking import MlflowClient


class RunError(RuntimeError):
    """A run cannot be read back; the message says which and why."""


def get_run(client: MlflowClient, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise RunError(
            f"no run {run_id!r} in {client.tracking_uri}: {first_line(err)}. "
            "Check the run id (the MLflow UI shows it) and --tracking-uri."
        ) from err


def logged_config(client: MlflowClient, run_id: str, tracking_uri: str) -> DictConfig:
    """The run's composed config (``config.yaml``), typed by the schemas, pointed at ``tracking_uri``."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError) as err:
            raise RunError(
                f"run {run_id} has no config.yaml artifact ({err}); only runs made by experiments/run.py "
                "or train() can be resumed or reproduced."
            ) from err
        logged = OmegaConf.load(path)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), logged)
    except OmegaConfBaseException as err:
        raise RunError(
            f"run {run_id}'s config.yaml does not fit this checkout's config schemas ({err}); check out the "
            "commit the run was made at (its mlflow.source.git.commit tag) and try again."
        ) from err
    cfg.tracking.uri = tracking_uri
    return cfg


def latest_training_state(client: MlflowClient, run_id: str, folder: Path) -> tuple[Path, int]:
    """The newest readable training-state file of a run, and the epoch it ends."""
    from mlflow.exceptions import MlflowException

    best: tuple[Path, int] | None = None
    for name in RESUME_STATES:
        try:
            path = Path(client.download_artifacts(run_id, f"{RESUME_FOLDER}/{name}", str(folder)))
            epoch = load_training_state(path)[2]["epoch"]
        except (MlflowException, OSError, ModelFileError, KeyError):
            continue  # absent, or cut off mid-write by the kill: the other one is complete
        if best is None or epoch > best[1]:
            best = (path, epoch)
    if best is None:
        raise RunError(
            f"run {run_id} has no readable training state ({RESUME_FOLDER}/{' or '.join(RESUME_STATES)}): it was "
            "logged with tracking.checkpoints.policy=none, or ended before its first epoch. Start it again instead."
        )
    return best


def parse_run_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """``RUN_ID [--tracking-uri URI]``, the arguments of resume.py and reproduce.py; also sets up logging."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    return parser.parse_args(argv)


def tracking_uri_or_default(uri: str | None) -> str:
    """``experiments.store.tracking_uri``, also made MLflow's current store."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line of output, not bars
    uri = tracking_uri(uri)
    open_store(uri, create=False)  # a mistyped path is an error, not a new empty store
    use_store(uri)
    return uri
