"""One resolution of the tracking store for every command: explicit, else $MLFLOW_TRACKING_URI, else ./mlruns."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments import store


def test_tracking_uri_prefers_the_argument_then_the_environment_then_mlruns(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert store.tracking_uri(folder="runs") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.tracking_uri() == "http://127.0.0.1:5999"
    assert store.tracking_uri(folder="runs") == "http://127.0.0.1:5999"
    assert store.tracking_uri("sqlite:///elsewhere.db") == f"sqlite:///{tmp_path / 'elsewhere.db'}"  # absolute


def test_a_run_tracks_to_its_config_uri_else_the_environment_else_its_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = OmegaConf.create({"uri": None, "dir": str(tmp_path / "runs")})
    assert store.resolve_store(cfg) == (
        f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}",
        (tmp_path / "runs" / "artifacts").as_uri(),
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}")
    assert store.resolve_store(cfg) == (
        f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}",
        (tmp_path / "env" / "artifacts").as_uri(),
    )
    cfg.uri = "http://127.0.0.1:6000"
    assert store.resolve_store(cfg) == ("http://127.0.0.1:6000", None)


def test_making_a_store_current_leaves_the_environment_as_it_was(monkeypatch, tmp_path):
    """MLflow 3's set_tracking_uri writes $MLFLOW_TRACKING_URI: the first run's store would become the second's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store.use_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    store.use_store(f"sqlite:///{tmp_path / 'b.db'}")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"


@pytest.mark.slow
def test_runs_in_one_process_follow_their_dir_and_the_variable(compose, mlflow_store, monkeypatch, tmp_path):
    from experiments.train import train

    quick = ["dataset=digits", "model=mlp128", "train.epochs=1", "tracking.log_model=false", "tracking.experiment=env"]
    other = tmp_path / "other"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = train(compose(*quick, f"tracking.dir={mlflow_store.dir}"))
    assert mlflow_store.client.get_run(first.run_id).info.status == "FINISHED"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow made the first store current, and its default
    second = train(compose(*quick, f"tracking.dir={other}"))
    assert MlflowClient(f"sqlite:///{other / 'mlflow.db'}").get_run(second.run_id).info.status == "FINISHED"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store.uri)
    third = train(compose(*quick, f"tracking.dir={other}"))
    assert mlflow_store.client.get_run(third.run_id).info.status == "FINISHED"


def test_experiment_id_creates_once_and_then_finds(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = store.experiment_id(client, "nnlab", (tmp_path / "artifacts").as_uri())
    assert store.experiment_id(client, "nnlab") == created
    assert client.get_experiment(created).artifact_location == (tmp_path / "artifacts").as_uri()
    assert len([e for e in client.search_experiments() if e.name == "nnlab"]) == 1


@pytest.mark.parametrize(
    ("uri", "page"),
    [
        ("http://mlflow-host:5000/", "http://mlflow-host:5000/#/experiments/3/runs/abc?workflowType=machine_learning"),
        (
            "https://mlflow.example.org",
            "https://mlflow.example.org/#/experiments/3/runs/abc?workflowType=machine_learning",
        ),
        ("databricks", "run abc of experiment 3 in your Databricks workspace"),
        (
            "sqlite:////data/runs/mlflow.db",
            "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning (serve the UI with: "
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:////data/runs/mlflow.db "
            "--host 127.0.0.1 --port 5000 --workers 1)",
        ),
        (
            "postgresql://nnlab@db-host/mlflow",
            "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning (serve the UI with: "
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri postgresql://nnlab@db-host/mlflow "
            "--host 127.0.0.1 --port 5000 --workers 1)",
        ),
    ],
    ids=["http", "https", "databricks", "sqlite", "postgresql"],
)
def test_the_run_page_hint_works_for_each_kind_of_store(uri, page):
    port = free_port()
    if "serve the UI" in page:  # a local UI: on the free port given
        page = page.replace("127.0.0.1:5000", f"127.0.0.1:{port}").replace("--port 5000", f"--port {port}")
    assert store.run_page(uri, "3", "abc", ports=[port]) == page


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def fake_ui(known_run: str):
    """An HTTP server on a free port answering MLflow's runs/get: 200 for ``known_run``, 404 for any other."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            self.send_response(200 if self.path.endswith(f"run_id={known_run}") else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_run_page_points_at_a_ui_already_serving_the_run_else_at_a_free_port():
    uri = "sqlite:////data/runs/mlflow.db"
    with fake_ui("abc") as serving, fake_ui("other") as another_store:
        taken = another_store  # a UI of another store holds this port: skipped
        free = free_port()
        assert store.run_page(uri, "3", "abc", ports=[taken, serving, free]) == (
            f"http://127.0.0.1:{serving}/#/experiments/3/runs/abc?workflowType=machine_learning"
        )
        page = store.run_page(uri, "3", "xyz", ports=[taken, serving, free])  # no UI serves xyz
    assert page.startswith(f"http://127.0.0.1:{free}/#/experiments/3/runs/xyz")
    assert page.endswith(f"--backend-store-uri {uri} --host 127.0.0.1 --port {free} --workers 1)")
