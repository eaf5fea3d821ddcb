"""optuna-dashboard over the Optuna journal file a sweep driver wrote, checked through its JSON API.

The study is the one ``python experiments/run.py -m sweep=...`` leaves in ``optuna/<study>.log`` beside its
SQLite store (the session's small sweep); the dashboard is started with the README's command and must list the study,
its trials with their parameters, values and MLflow run ids, and show a new trial while it runs.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port, group_alive

pytestmark = pytest.mark.slow  # a server or a browser


def dashboard_command(storage: Path, port: int) -> list[str]:
    """The README's ``optuna-dashboard`` command (the venv's console script), on ``port``."""
    script = Path(sys.executable).with_name("optuna-dashboard")
    if not script.exists():
        pytest.skip("optuna-dashboard is not installed: pip install -e '.[dev]'")
    return [str(script), str(storage), "--host", "127.0.0.1", "--port", str(port)]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dashboard(sweep_store, start_server):
    port = free_port()
    server = start_server("optuna-dashboard", dashboard_command(sweep_store.journal, port), port)
    seconds = server.wait_ready("/api/studies")
    print(f"optuna-dashboard answered after {seconds:.1f} s")
    yield server.url, sweep_store
    pgid = server.process.pid
    server.stop()
    assert not group_alive(pgid), "processes of the dashboard's group outlived stop()"


def open_study(journal: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))


def study_detail(url: str, name: str) -> dict:
    summaries = get(url + "/api/studies")["study_summaries"]
    (summary,) = [s for s in summaries if s["study_name"] == name]
    return get(f"{url}/api/studies/{summary['study_id']}")


def test_dashboard_lists_the_sweeps_study_and_trials(dashboard):
    from mlflow.tracking import MlflowClient

    url, store = dashboard
    summaries = get(url + "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [store.study]
    assert summaries[0]["directions"] == ["maximize"]  # val/acc
    detail = study_detail(url, store.study)
    study = open_study(store.journal, store.study)
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [t.number for t in study.trials] == [0, 1]
    client = MlflowClient(store.uri)
    for shown, trial in zip(trials, study.trials):
        assert shown["state"] == "Complete"
        assert shown["values"] == [trial.value]
        params = {p["name"]: p["param_internal_value"] for p in shown["params"]}
        assert params == trial.params
        assert set(params) == {"optimizer.lr", "optimizer.momentum", "optimizer.weight_decay"}
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        run = client.get_run(attrs["mlflow_run_id"])  # each trial points at its MLflow run
        assert run.data.metrics["val/acc"] == pytest.approx(trial.value)
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]


def test_dashboard_shows_a_trial_while_it_runs(dashboard):
    import optuna

    url, store = dashboard
    study = open_study(store.journal, store.study)
    trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)})

    def states() -> dict[int, str]:
        return {t["number"]: t["state"] for t in study_detail(url, store.study)["trials"]}

    deadline = time.monotonic() + 30
    while states().get(trial.number) != "Running":
        assert time.monotonic() < deadline, states()
        time.sleep(0.5)
    study.tell(trial, 0.5)
    while states().get(trial.number) != "Complete":
        assert time.monotonic() < deadline, states()
        time.sleep(0.5)
