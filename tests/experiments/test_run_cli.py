"""The real command-line entry point, ``python experiments/run.py ...``, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    env = os.environ | {"MPLBACKEND": "Agg", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "run.py"), *overrides],  # in the test's own folder
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_run_logs_hydra_files_and_names_the_run_from_its_overrides(mlflow_store, experiment_name, tmp_path):
    task = [
        "dataset=digits",
        "train.epochs=2",
        f"tracking.dir={mlflow_store.dir}",
        f"tracking.experiment={experiment_name}",
        "tracking.log_model=false",
    ]
    done = run_cli(*task, f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 0, done.stdout + done.stderr

    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "digits epochs=2"  # tracking.* and hydra.* overrides left out
    experiment = mlflow_store.client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's model-training view
    page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    assert f"{page}?workflowType=machine_learning" in done.stdout + done.stderr
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///" in done.stdout
    assert run.data.tags["nnlab.overrides"] == " ".join(task)
    artifacts = mlflow_store.artifacts(run.info.run_id)
    assert {"hydra/config.yaml", "hydra/overrides.yaml", "hydra/hydra.yaml"} <= set(artifacts)
    hydra_dir = tmp_path / "artifacts"
    overrides = yaml.safe_load(mlflow_store.download(run.info.run_id, "hydra/overrides.yaml", hydra_dir).read_text())
    assert overrides == task
    config = yaml.safe_load(mlflow_store.download(run.info.run_id, "hydra/config.yaml", hydra_dir).read_text())
    assert config["dataset"]["name"] == "digits" and config["train"]["epochs"] == 2
    assert (tmp_path / "out" / ".hydra" / "config.yaml").is_file()
    assert [m.step for m in mlflow_store.client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2]


def error_lines(done: subprocess.CompletedProcess, needle: str) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if needle in line]


@pytest.mark.slow
def test_cli_invalid_value_exits_2_with_one_message_naming_the_key(mlflow_store, experiment_name, tmp_path):
    done = run_cli(
        "dataset=digits",
        "optimizer.lr=-1",
        f"tracking.dir={mlflow_store.dir}",
        f"tracking.experiment={experiment_name}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = error_lines(done, "optimizer.lr")
    assert len(lines) == 1, done.stdout + done.stderr
    assert "optimizer.lr=-1 is not allowed: optimizer.lr must be a positive number" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert mlflow_store.client.get_experiment_by_name(experiment_name) is None


def test_cli_unknown_key_without_plus_exits_2_naming_the_valid_keys(tmp_path):
    done = run_cli("dataset=digits", "train.epoch=3", f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Unknown key(s) in train: epoch (did you mean epochs?). Valid keys there: epochs, batch_size" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "unknown"),
    [
        (["train.epoch=3"], "in train: epoch (did you mean epochs?)"),
        (["train.epochs=1", "train.epoch=3"], "in train: epoch (did you mean epochs?)"),  # beside a typed key
        (["model.hidden=[64]", "model.dropuot=0.1"], "in model: dropuot (did you mean dropout?)"),
        (["optimizer=adam", "optimizer.momentum=0.9"], "in optimizer: momentum"),
        (["-m", "optimizer.lr=0.1,0.2", "model.hiden=[3]"], "in model: hiden (did you mean hidden?)"),
        (["callbacks=early_stopping", "callbacks.early_stopping.patiense=3"], "in callbacks.early_stopping: patiense"),
        (["optimizer=adam", "optimizer.betas=[0.9,0.99]"], None),
        (["experiment=r1", "schedule.milestones=[3]"], None),
        (["-m", "sweep=lr_momentum_l2", "hydra.sweeper.n_trials=3", "optimizer.lr=tag(log,interval(1e-3,1))"], None),
        (["seed=0,1,2", "model.dropout=0.1", "--cfg", "job"], None),
        (["tracking.tags.owner=me"], None),  # a free-form dict: Hydra's own message says to add it with +
        (["-m", "experiment=r2,r1", "schedule.milestones=[3]"], None),  # r1 has the key, r2 not: the jobs judge
        (["-m", "model=glob(mlp*)", "model.dropout=0.1"], None),
    ],
)
def test_an_override_of_a_key_the_config_lacks_is_named_with_the_keys_there(arguments, unknown):
    from experiments.build import unknown_override
    from experiments.run import CONF

    message = unknown_override(CONF, arguments)
    assert message is None if unknown is None else f"Unknown key(s) {unknown}" in message


def test_a_config_group_on_a_searchpath_of_the_command_line_is_known_to_the_key_check(tmp_path):
    """``sweeps.rerun``'s one-seed command: ``+rerun=trial_2`` lives in a folder named by ``hydra.searchpath``."""
    from experiments.build import unknown_override
    from experiments.run import CONF

    (tmp_path / "rerun").mkdir()
    (tmp_path / "rerun" / "trial_2.yaml").write_text("# @package _global_\ntrain:\n  epochs: 2\n")
    arguments = [f"hydra.searchpath=[file://{tmp_path}]", "+rerun=trial_2", "seed=1", "tracking.uri=sqlite:///x.db"]
    assert unknown_override(CONF, arguments) is None
    assert "in model: hiden" in unknown_override(CONF, [*arguments, "model.hiden=[3]"])


@pytest.mark.slow
def test_cli_missing_data_exits_2_naming_the_files(tmp_path):
    done = run_cli(
        "dataset=fashion_mnist",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.download=false",
        "tracking=none",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = error_lines(done, "fashion_mnist files are missing")
    assert len(lines) == 1 and "train-images-idx3-ubyte" in lines[0], done.stdout + done.stderr
    output = done.stdout + done.stderr
    message = output[output.index("fashion_mnist files are missing") :].strip().splitlines()
    folder = str(tmp_path / "data" / "fashion_mnist")
    assert len(message) == 4 and max(len(line.replace(folder, "")) for line in message) <= 200, message  # not 650
    assert message[1] == "Downloading is off (download=False)." and "dataset.root" in message[3]
    assert "Error in call to target" not in done.stdout + done.stderr


@pytest.mark.slow
def test_a_diverged_run_exits_1_with_its_reason(mlflow_store, experiment_name, tmp_path):
    done = run_cli("dataset=digits", "model=mlp128", "optimizer.lr=3", "train.epochs=3", "train.progress=false",
                   f"tracking.dir={mlflow_store.dir}", f"tracking.experiment={experiment_name}",
                   "tracking.log_model=false", f"hydra.run.dir={tmp_path / 'out'}")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FAILED"
    assert f"The run failed: {run.data.tags['nnlab.failure_reason']} MLflow run {run.info.run_id}" in done.stdout


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["dataset=digits", "train.epochs=2"], "digits epochs=2"),
        (["dataset=mnist", "model=wide1024", "optimizer.lr=0.05", "tracking.dir=x"], "wide1024 lr=0.05 mnist"),
        (["experiment=r1", "optimizer=adam", "optimizer.weight_decay=0.000123456", "seed=3"],
         "adam weight_decay=0.000123 seed=3 r1"),
        (["model.hidden=[2048,2048,2048]", "optimizer.lr=0.1", "model.dropout=0.5", "augment=elastic",
          "schedule=warmup_cosine", "dataset=mnist"], "hidden=[2048,2048,2048] lr=0.1 dropout=0.5 augment=elastic …"),
        (["tracking.dir=x", "train.progress=false"], "defaults"),
    ],
)  # fmt: skip
def test_run_names_put_what_differs_first_and_stay_short(overrides, name):
    from experiments.tracking.naming import NAME_LIMIT, run_name

    assert run_name(overrides) == name and len(name) <= NAME_LIMIT


@pytest.mark.slow
def test_a_multiruns_runs_are_named_by_the_swept_values_first(mlflow_store, experiment_name, tmp_path):
    """``-m optimizer.lr=0.02,0.5``: the key Hydra sweeps leads each run's name, read from ``multirun.yaml``."""
    done = run_cli(
        "-m",
        "dataset=digits",
        "model=mlp128",
        "optimizer.lr=0.02,0.5",
        "train.epochs=1",
        "train.progress=false",
        "tracking.log_model=false",
        f"tracking.dir={mlflow_store.dir}",
        f"tracking.experiment={experiment_name}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(run.info.run_name for run in mlflow_store.runs(experiment_name))
    assert names == ["lr=0.02 mlp128 digits epochs=1", "lr=0.5 mlp128 digits epochs=1"]


def test_multirun_with_cfg_is_one_line_naming_both_modes():
    done = run_cli("-m", "sweep=digits_smoke", "--cfg", "hydra", "-p", "hydra.launcher")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "--cfg and --multirun cannot be combined: drop one (-m, to print a config; "
        "-m ... hydra.sweeper.dry_run=true prints a sweep's space and settings)"
    )
    assert "Traceback" not in done.stdout + done.stderr
