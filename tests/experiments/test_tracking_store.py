"""One resolution of the tracking store for every command: explicit, else $MLFLOW_TRACKING_URI, else ./mlruns."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments import tracking


def test_tracking_uri_prefers_the_argument_then_the_environment_then_mlruns(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.tracking_uri("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"


def test_a_run_tracks_to_its_config_uri_else_its_dir_whatever_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")  # what mlflow.set_tracking_uri leaves behind
    cfg = OmegaConf.create({"uri": None, "dir": str(tmp_path / "runs")})
    assert tracking.resolve_store(cfg) == (
        f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}",
        (tmp_path / "runs" / "artifacts").as_uri(),
    )
    cfg.uri = "http://127.0.0.1:6000"
    assert tracking.resolve_store(cfg) == ("http://127.0.0.1:6000", None)


def test_experiment_id_creates_once_and_then_finds(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = tracking.experiment_id(client, "nnlab", (tmp_path / "artifacts").as_uri())
    assert tracking.experiment_id(client, "nnlab") == created
    assert client.get_experiment(created).artifact_location == (tmp_path / "artifacts").as_uri()
    assert len([e for e in client.search_experiments() if e.name == "nnlab"]) == 1
