"""Resume a SIGKILLed run in place, bit-identically; reproduce a run from its id."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import open_dict

import nn
from experiments import reproduce as reproduce_cmd
from experiments import resume as resume_cmd
from experiments.runs import RunError
from experiments.train import train

RUN = Path(__file__).resolve().parents[2] / "experiments" / "run.py"
RECIPE = [
    "dataset=digits",
    "train.epochs=8",
    "model.dropout=0.5",  # dropout masks come from the generator that resume must restore
    "schedule=plateau",  # the one schedule with state of its own
    "optimizer=adam",  # two state arrays per parameter
    "tracking.log_model=false",
]


def last_weights(store, run_id, tmp_path) -> dict[str, np.ndarray]:
    path = store.download(run_id, "checkpoints/last.npz", tmp_path / run_id)
    return nn.load(path).params


def start_and_kill(store, experiment, tmp_path, after_epoch: int) -> str:
    """Run experiments/run.py in a subprocess and SIGKILL it once epoch ``after_epoch`` is logged."""
    command = [sys.executable, str(RUN), *RECIPE, *store.overrides(experiment),
               "tracking.run_name=killed", f"hydra.run.dir={tmp_path}/hydra"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if f"epoch {after_epoch}/8" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    (run,) = [r for r in store.runs(experiment) if r.info.run_name == "killed"]
    assert run.info.status == "RUNNING"  # nobody closed it: the process died
    return run.info.run_id


@pytest.mark.slow
def test_sigkilled_run_resumes_in_place_to_bit_identical_weights(compose, mlflow_store, experiment_name, tmp_path):
    train(compose(*RECIPE, *mlflow_store.overrides(experiment_name), "tracking.run_name=uninterrupted"))
    killed = start_and_kill(mlflow_store, experiment_name, tmp_path, after_epoch=4)

    resume_cmd.resume(killed, mlflow_store.uri)

    run = mlflow_store.client.get_run(killed)
    assert run.info.status == "FINISHED"
    assert 1 <= int(run.data.tags["nnlab.resumed_from_epoch"]) <= 4
    steps = {m.step for m in mlflow_store.client.get_metric_history(killed, "val/acc")}
    assert steps == set(range(1, 9))
    (full,) = [r for r in mlflow_store.runs(experiment_name) if r.info.run_name == "uninterrupted"]
    expected = last_weights(mlflow_store, full.info.run_id, tmp_path)
    resumed = last_weights(mlflow_store, killed, tmp_path)
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    assert run.data.metrics["test/acc"] == full.data.metrics["test/acc"]


def test_resume_refuses_a_finished_run(compose, mlflow_store, experiment_name):
    train(compose(*RECIPE, "train.epochs=2", *mlflow_store.overrides(experiment_name)))
    run = mlflow_store.only_run(experiment_name)
    with pytest.raises(RunError, match="already finished"):
        resume_cmd.resume(run.info.run_id, mlflow_store.uri)


def test_resume_without_training_state_says_why(compose, mlflow_store, experiment_name, monkeypatch):
    cfg = compose(
        *RECIPE, "train.epochs=3", "tracking.checkpoints.policy=none", *mlflow_store.overrides(experiment_name)
    )

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nn.Trainer, "train_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    run = mlflow_store.only_run(experiment_name)
    with pytest.raises(RunError, match="no readable training state"):
        resume_cmd.resume(run.info.run_id, mlflow_store.uri)


def test_resume_and_reproduce_commands_report_unknown_runs(mlflow_store, capsys):
    assert resume_cmd.main(["0123456789abcdef", "--tracking-uri", mlflow_store.uri]) == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err
    assert reproduce_cmd.main(["0123456789abcdef", "--tracking-uri", mlflow_store.uri]) == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_gets_identical_metrics_and_tags_the_new_run(compose, mlflow_store, experiment_name, capsys):
    train(compose(*RECIPE, "train.epochs=3", *mlflow_store.overrides(experiment_name)))
    original = mlflow_store.only_run(experiment_name)

    assert reproduce_cmd.main([original.info.run_id, "--tracking-uri", mlflow_store.uri]) == 0

    assert "identical metrics" in capsys.readouterr().out
    runs = mlflow_store.runs(experiment_name)
    assert len(runs) == 2
    copy = runs[1]
    assert copy.data.tags["nnlab.reproduces"] == original.info.run_id
    for name in ("test/acc", "test/loss", "val/acc", "train/loss"):
        assert copy.data.metrics[name] == original.data.metrics[name]


def test_reproduce_notes_code_that_differs():
    notes = reproduce_cmd.differences(
        {"mlflow.source.git.commit": "aaa", "git.dirty": "true"},
        {"mlflow.source.git.commit": "bbb", "git.dirty": "false"},
    )
    assert any("git commit aaa" in note and "bbb" in note for note in notes)
    assert any("dirty" in note for note in notes)
    assert reproduce_cmd.differences({"mlflow.source.git.commit": "a"}, {"mlflow.source.git.commit": "a"}) == []


@pytest.mark.parametrize("epochs", [3, 4])
def test_resume_takes_the_newest_training_state_whichever_file_holds_it(
    epochs, compose, mlflow_store, experiment_name, tmp_path
):
    """States alternate between resume/state_a.npz and state_b.npz: interrupted after 3 epochs the newest is in one,
    after 4 in the other; the state picked is the newest either way."""
    from experiments.callbacks import Callback
    from experiments.runs import latest_training_state

    class Interrupt(Callback):
        def on_epoch_end(self, loop, metrics):
            if loop.epoch == epochs:
                raise KeyboardInterrupt

    cfg = compose("dataset=digits", "model=mlp128", "train.epochs=9", "train.progress=false",
                  "tracking.log_model=false", *mlflow_store.overrides(experiment_name))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()])
    run_id = mlflow_store.only_run(experiment_name).info.run_id
    names = {a.path for a in mlflow_store.client.list_artifacts(run_id, "resume")}
    assert names == {"resume/state_a.npz", "resume/state_b.npz"}  # in a folder of their own
    assert latest_training_state(mlflow_store.client, run_id, tmp_path)[1] == epochs


def test_a_resumed_run_keeps_its_best_model_and_command_and_drops_the_interruption(
    compose, mlflow_store, experiment_name
):
    """Cut off at epoch 6 (best validation accuracy at epoch 5) and resumed in a new tracker: the -best model
    is logged from the checkpoint the first process wrote, the description keeps the run's command line, and
    the tags of the interruption are gone."""
    from experiments.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, loop, metrics):
            if loop.epoch == 6:
                raise KeyboardInterrupt

    settings = ["dataset=digits", "model=mlp128", "train.epochs=8", "train.progress=false", "optimizer.lr=0.2"]
    cfg = compose(*settings, "schedule=constant", "tracking.misclassified=0", *mlflow_store.overrides(experiment_name))
    with open_dict(cfg):  # what run.py records from its command line
        cfg.tracking.tags["nnlab.overrides"] = "model=mlp128 optimizer.lr=0.2"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()])
    run_id = mlflow_store.only_run(experiment_name).info.run_id
    assert mlflow_store.client.get_run(run_id).data.tags["nnlab.failure_reason"] == "interrupted (Ctrl-C)"

    resume_cmd.resume(run_id, mlflow_store.uri)

    run = mlflow_store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["best_epoch"] == 5  # the best is not the last epoch
    assert run.data.tags["nnlab.state"] == "finished"
    assert "nnlab.failure_reason" not in run.data.tags and "nnlab.failed_epoch" not in run.data.tags
    assert "\n`python experiments/run.py model=mlp128 optimizer.lr=0.2`\n" in run.data.tags["mlflow.note.content"]
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                         filter_string=f"source_run_id = '{run_id}'")  # fmt: skip
    assert sorted((m.tags["nnlab.checkpoint"], m.tags["epoch"]) for m in models) == [("best", "5"), ("last", "8")]


def test_callback_states_are_keyed_by_their_place_among_the_stateful_callbacks(tmp_path):
    """The harness's own callbacks before early stopping may change from one version to the next: a resume
    state keys each stateful callback by its place among the stateful ones, so it reaches the same callback."""
    from experiments.tracking.checkpoints import Checkpoints, restore
    from nn.callbacks import Callback, EarlyStopping, PrintProgress
    from nn.serialization import write

    files = {}

    def upload(folder, name, spec, params, extra):
        files[name] = write(tmp_path / folder / name, spec, params, extra)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
    stopper = EarlyStopping(patience=5)
    loop = nn.Loop(nn.Trainer(nn.mlp([4, 8, 2]), nn.SGD(lr=0.1)), X, y, X, y, 3, [PrintProgress(), stopper])
    loop.run()
    Checkpoints("best_and_last", 1, tmp_path, upload, []).save_resume_state(loop)
    fresh = EarlyStopping(patience=5)
    later = nn.Loop(nn.Trainer(nn.mlp([4, 8, 2]), nn.SGD(lr=0.1)), X, y, X, y, 6, [Callback(), Callback(), fresh])
    restore(files["state_b.npz"], later)
    assert (fresh.best, fresh.best_epoch, fresh.wait) == (stopper.best, stopper.best_epoch, stopper.wait)
    for key, value in stopper.best_params.items():
        np.testing.assert_array_equal(fresh.best_params[key], value)
    assert later.unseen == [fresh] and len(later.history) == 3
