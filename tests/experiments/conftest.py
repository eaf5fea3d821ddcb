"""Fixtures for the experiment-harness tests: composing the real Hydra configs, and one shared MLflow store.

``compose("dataset=digits", ...)`` composes ``conf/config.yaml`` as ``experiments/run.py`` does.
``mlflow_store`` is one SQLite store for the whole session (creating one costs seconds); every test
that tracks uses its own experiment name (``experiment_name``), so tests never see each other's runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

os.environ["MPLBACKEND"] = "Agg"  # before anything imports matplotlib
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from tests

import pytest  # noqa: E402
from hydra import compose as hydra_compose  # noqa: E402
from hydra import initialize_config_dir  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

import experiments.schema  # noqa: E402,F401  registers the ConfigStore schemas and the `sub` resolver


def inputs_by_context(run: Run) -> dict:
    """A run's dataset inputs by their ``mlflow.data.context`` tag: ``{"training": ..., "test": ...}``."""
    return {
        tag.value: entry
        for entry in run.inputs.dataset_inputs
        for tag in entry.tags
        if tag.key == "mlflow.data.context"
    }


def compose_config(*overrides: str) -> DictConfig:
    """The root config composed with ``overrides``, as the command line would give it to ``train``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def compose():
    """``compose(*overrides) -> DictConfig`` of ``conf/config.yaml``."""
    return compose_config


@dataclass
class MlflowStore:
    """The session's SQLite tracking store: pass ``tracking.dir=<dir>`` to a run to log into it."""

    dir: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.dir / 'mlflow.db'}"

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def overrides(self, experiment: str) -> list[str]:
        return [f"tracking.dir={self.dir}", f"tracking.experiment={experiment}"]

    def runs(self, experiment: str) -> list[Run]:
        """Every run of ``experiment`` (oldest first); [] when the experiment does not exist."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return self.client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])

    def only_run(self, experiment: str) -> Run:
        runs = self.runs(experiment)
        assert len(runs) == 1, f"expected one run in experiment {experiment!r}, found {len(runs)}"
        return runs[0]

    def artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of every file artifact of the run (under ``path``), recursively."""
        found = []
        for info in self.client.list_artifacts(run_id, path):
            found += self.artifacts(run_id, info.path) if info.is_dir else [info.path]
        return sorted(found)

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> MlflowStore:
    return MlflowStore(tmp_path_factory.mktemp("mlflow-store"))


@pytest.fixture
def experiment_name(request) -> str:
    """An MLflow experiment name of this test alone (its node name, made safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
