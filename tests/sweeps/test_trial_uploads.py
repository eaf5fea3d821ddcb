"""A sweep's trial does not wait for MLflow's artifact thread: its run stays RUNNING until its files are in,
then is closed by that thread with everything a researcher reads (curves, tables, the final model linked to
the test metrics); a pruned trial logs no model or figure."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from experiments.outcome import Pruned
from experiments.tracking import mlflow_run
from sweeps.trial import run
from tests.experiments.conftest import compose_config


def trial_config(store, name, *extra):
    return compose_config("dataset=digits", "model=mlp128", "train.progress=false", f"tracking.dir={store.dir}",
                          f"tracking.experiment={name}", *extra)  # fmt: skip


def artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_complete_trials_run_is_closed_by_the_artifact_thread_with_its_files(store, name, monkeypatch):
    release = mlflow_run.threading.Event()
    mlflow_run.UPLOADER.submit(release.wait, 60)  # the thread is busy: the trial's files wait behind this
    study = optuna.create_study(study_name=name, direction="maximize")
    trial = study.ask({"optimizer.lr": FloatDistribution(0.1, 0.1)})
    run(trial_config(store, name, "train.epochs=2"), trial)  # returns with its files still queued
    (logged,) = store.runs(name)
    assert logged.info.status == "RUNNING"  # not FINISHED before its files are in
    release.set()
    mlflow_run.wait_for_uploads()
    client = store.client
    done = client.get_run(logged.info.run_id)
    assert done.info.status == "FINISHED" and done.data.tags["nnlab.state"] == "finished"
    files = artifacts(client, logged.info.run_id)
    assert {"config.yaml", "figures/curves.png", "confusion/test.json", "per_class/test.json"} <= files
    assert "figures/misclassified.png" not in files and "figures/test_confusion.png" not in files  # a trial's: lean
    (model,) = [
        m for m in client.search_logged_models([logged.info.experiment_id]) if m.source_run_id == logged.info.run_id
    ]
    assert model.tags["nnlab.checkpoint"] == "last"
    assert {m.key for m in model.metrics} >= {"test/acc", "test/loss"}  # linked to the final model


def test_a_pruned_trials_run_logs_no_model_or_figure(store, name):
    class PruneAtOne(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(study_name=name, direction="maximize", pruner=PruneAtOne())
    trial = study.ask({"optimizer.lr": FloatDistribution(0.1, 0.1)})
    with pytest.raises(Pruned):
        run(trial_config(store, name, "train.epochs=3"), trial)
    mlflow_run.wait_for_uploads()
    (logged,) = store.runs(name)
    client = store.client
    assert client.get_run(logged.info.run_id).info.status == "KILLED"
    files = artifacts(client, logged.info.run_id)
    assert not [f for f in files if f.startswith("figures/")]
    assert not [
        m for m in client.search_logged_models([logged.info.experiment_id]) if m.source_run_id == logged.info.run_id
    ]
