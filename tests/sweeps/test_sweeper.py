"""The front door, in process: ``python experiments/run.py -m sweep=digits_smoke`` (3 trials: one learns, one
is pruned, one diverges), its MLflow parent and child runs, the report, and a resume after Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from experiments.outcome import Pruned
from sweeps import report
from sweeps.engine import python_command
from sweeps.study import open_storage
from sweeps.trial import Reporter
from tests.sweeps.conftest import QUICK, check_trial_runs, multirun, split_runs

LR_STATE = {0.1: TrialState.COMPLETE, 0.01: TrialState.PRUNED, 10000.0: TrialState.FAIL}


@pytest.mark.slow
def test_smoke_sweep_completes_prunes_and_fails_and_mlflow_mirrors_it(store, name, tmp_path):
    assert multirun("sweep=digits_smoke", *store.args(name)) == 0
    study = store.study(name)
    assert {t.params["optimizer.lr"]: t.state for t in study.trials} == LR_STATE
    by_state = {t.state: t for t in study.trials}
    assert "diverged" in by_state[TrialState.FAIL].user_attrs["fail_reason"]
    assert "ThresholdPruner" in by_state[TrialState.PRUNED].user_attrs["prune_reason"]
    assert list(by_state[TrialState.PRUNED].intermediate_values) == [1]
    assert by_state[TrialState.COMPLETE].value == pytest.approx(by_state[TrialState.COMPLETE].intermediate_values[2])

    runs = store.runs(name)
    parent, children = split_runs(runs)
    check_trial_runs(store.client, study, runs, epochs=2)
    failed = children[by_state[TrialState.FAIL].number]
    assert failed.info.status == "FAILED" and "diverged" in failed.data.tags["nnlab.failure_reason"]
    assert children[by_state[TrialState.PRUNED].number].data.tags["nnlab.state"] == "pruned"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(study.best_value)
    assert parent.data.tags["best.optimizer.lr"] == "0.1"
    best_run = children[study.best_trial.number]
    link = f"[#{study.best_trial.number}](#/experiments/{parent.info.experiment_id}/runs/{best_run.info.run_id})"
    assert parent.data.tags["mlflow.note.content"].startswith(f"**Best trial {link}: val/acc {study.best_value:.4f}**")
    assert "| trial | val/acc |" in parent.data.tags["mlflow.note.content"]  # the top-k table
    assert failed.data.tags["nnlab.result"] == "diverged at epoch 1"  # non-finite in its first epoch: no val acc
    pruned = children[by_state[TrialState.PRUNED].number].data.tags["nnlab.result"]
    assert pruned.endswith("pruned at epoch 1")
    assert parent.data.metrics["trials/pruned"] == 1 and parent.data.metrics["trials/fail"] == 1
    artifacts = {a.path for a in store.client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/trials.csv", "optuna/best.json", "optuna/optimization_history.png"} <= artifacts
    best = json.loads(
        Path(store.client.download_artifacts(parent.info.run_id, "optuna/best.json", str(tmp_path))).read_text()
    )
    assert best["params"] == {"optimizer.lr": 0.1}

    out = tmp_path / "report"
    assert (
        report.main(["--study", name, "--tracking-dir", str(store.dir), "--experiment", name, "--out", str(out)]) == 0
    )
    text = (out / "report.md").read_text()
    assert f"**Best trial #{study.best_trial.number}**" in text and "ThresholdPruner" in text and "diverged" in text
    assert children[study.best_trial.number].info.run_id in text  # the top-k table links each trial to its run
    assert (out / "optimization_history.png").stat().st_size > 0 and (out / "trials.csv").exists()
    assert (out / "intermediate_values.png").exists()
    assert not (out / "slice.png").exists()  # one complete trial: no plot of how params relate (MIN_COMPLETE)
    failed_row = next(line for line in text.splitlines() if "| FAIL |" in line)
    assert "| 1e+04 |" in failed_row  # the failed trial's lr is shown
    assert by_state[TrialState.FAIL].user_attrs["epochs"] == 0  # NaN in epoch 1: no epoch completed
    assert by_state[TrialState.COMPLETE].user_attrs["epochs"] == 2
    assert study.metric_names == ["val/acc"]


def test_the_pruner_is_not_asked_after_the_last_epoch():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    reporter = Reporter(study.ask(), "val/acc", epochs=3)
    with pytest.raises(Pruned, match="epoch 2"):
        reporter.on_epoch_end(SimpleNamespace(epoch=2), {"val/acc": 0.5})  # below the threshold before the end
    reporter.on_epoch_end(SimpleNamespace(epoch=3), {"val/acc": 0.6})  # at the end: the trial completes
    assert study.trials[0].intermediate_values == {2: 0.5, 3: 0.6}


@pytest.mark.slow
def test_rerun_after_ctrl_c_resumes_the_study_within_its_budget(store, name, monkeypatch):
    original = Reporter.on_epoch_end

    def interrupt_second_trial(self, loop, metrics):
        if self.trial.number == 1:
            raise KeyboardInterrupt
        original(self, loop, metrics)

    with monkeypatch.context() as patch:
        patch.setattr(Reporter, "on_epoch_end", interrupt_second_trial)
        assert multirun("sweep=digits_smoke", *store.args(name)) == 130
    study = store.study(name)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]  # lr 1e4, then Ctrl-C queued again
    assert "interrupted" in study.trials[1].user_attrs["fail_reason"]
    parent, _ = split_runs(store.runs(name))
    assert parent.info.status == "KILLED"

    assert multirun("sweep=digits_smoke", *store.args(name)) == 0  # the same command resumes
    study = store.study(name)
    assert len(study.trials) == 4  # the interrupted trial was run again as #2; the budget of 3 holds
    assert study.trials[2].params == study.trials[1].params and study.trials[2].system_attrs["failed_trial"] == 1
    assert {t.params["optimizer.lr"]: t.state for t in study.trials if t.number != 1} == LR_STATE
    runs = store.runs(name)
    parent, children = split_runs(runs)  # still one parent: the rerun reopened it
    assert parent.info.status == "FINISHED" and children[1].info.status == "KILLED"
    check_trial_runs(store.client, study, runs, epochs=2)


def test_an_exception_in_a_trial_fails_it_with_the_reason_and_the_sweep_goes_on(store, name):
    # dropout 1.5 is rejected when the trial's model is built; dropout 0.2 trains
    args = ["sweep=digits_smoke", *store.args(name), "tracking=none", "optimizer.lr=0.1", "train.epochs=1"]
    assert multirun(*args, "model.dropout=choice(1.5, 0.2)") == 0
    study = store.study(name)
    states = {t.params["model.dropout"]: t for t in study.trials}
    assert states[0.2].state == TrialState.COMPLETE
    assert states[1.5].state == TrialState.FAIL
    assert "ConfigError: model.dropout=1.5 is not allowed" in states[1.5].user_attrs["fail_reason"]


def test_a_sweep_without_a_search_dimension_is_refused(store, name):
    assert multirun("sweep=digits_smoke", *store.args(name), "optimizer.lr=0.1") == 2
    assert multirun(*store.args(name), "hydra/sweeper=nnlab_optuna", "optimizer.lr=0.1") == 2


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is not allowed"),
        ("schedule=warmup_cosine", "schedule.epochs=2 is not allowed"),  # with the sweep's own train.epochs=2
    ],
)
def test_a_bad_value_every_trial_shares_stops_the_sweep_before_its_study_or_runs_exist(
    store, name, capsys, override, says
):
    assert multirun("sweep=digits_smoke", *store.args(name), override) == 2
    said = capsys.readouterr()
    assert says in said.out + said.err
    assert not (store.dir / "optuna" / f"{name}.log").exists()
    assert store.runs(name) == []


def test_plain_hydra_multiruns_keep_working(store, name):
    """Without ``sweep=``, ``-m`` is Hydra's basic sweeper: a grid of runs, each tracked."""
    args = [*QUICK, f"tracking.dir={store.dir}", f"tracking.experiment={name}", "dataset=digits", "model=mlp128"]
    args += ["train.epochs=1", "optimizer.lr=0.01,0.1"]
    assert multirun(*args) == 0
    runs = store.runs(name)
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_the_report_reads_the_store_the_study_recorded_and_refuses_another_sweeps_runs(store, name, tmp_path):
    assert multirun("sweep=digits_smoke", *store.args(name)) == 0
    study = store.study(name)
    journal = str(store.dir / "optuna" / f"{name}.log")
    _, children = split_runs(store.runs(name))
    # no --tracking-* given, from another directory: the store and experiment the study recorded
    out = tmp_path / "report"
    assert report.main(["--study", name, "--storage", journal, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert children[study.best_trial.number].info.run_id in text
    assert all(t.user_attrs["mlflow_run_id"] == children[t.number].info.run_id for t in study.trials)

    # a sweep of the same name tracked in another store: its runs are not this study's
    other = tmp_path / "other-store"
    others = [*[a for a in store.args(name) if not a.startswith("tracking.dir=")], f"tracking.dir={other}"]
    assert multirun("sweep=digits_smoke", *others) == 0
    code = report.main(["--study", name, "--storage", journal, "--tracking-dir", str(other), "--experiment", name])
    assert code == 2


@pytest.mark.slow
def test_the_report_of_an_untracked_study_joins_no_runs_of_the_same_name(name, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # ./mlruns will hold a tracked sweep of the same name
    assert multirun("sweep=digits_smoke", *QUICK, f"hydra.sweeper.study_name={name}") == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    tracked = [r.info.run_id for r in client.search_runs([client.get_experiment_by_name("nnlab").experiment_id])]
    untracked = tmp_path / "untracked"
    overrides = ["tracking=none", f"tracking.dir={untracked}", f"hydra.sweeper.study_name={name}"]
    assert multirun("sweep=digits_smoke", *overrides) == 0
    journal = str(untracked / "optuna" / f"{name}.log")
    capsys.readouterr()
    assert report.main(["--study", name, "--storage", journal, "--out", str(tmp_path / "report")]) == 0
    assert "recorded no MLflow store" in capsys.readouterr().err
    text = (tmp_path / "report" / "report.md").read_text()
    assert len(tracked) == 4 and not any(run_id in text for run_id in tracked)


@pytest.mark.slow
def test_a_sweep_on_a_relative_sqlite_uri_keeps_its_journal_beside_it_and_reports_from_anywhere(
    name, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert (
        multirun(
            "sweep=digits_smoke", *QUICK, "tracking.uri=sqlite:///store/mlflow.db", f"hydra.sweeper.study_name={name}"
        )
        == 0
    )
    journal = tmp_path / "store" / "optuna" / f"{name}.log"
    assert journal.is_file() and not (tmp_path / "mlruns").exists()
    study = optuna.load_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    assert study.user_attrs["nnlab.tracking"]["uri"] == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert report.main(["--study", name, "--storage", str(journal)]) == 0
    text = (tmp_path / "store" / "reports" / name / "report.md").read_text()
    assert study.best_trial.user_attrs["mlflow_run_id"] in text


def test_the_parents_best_tags_follow_the_best_trial_after_a_rerun_fixes_a_key(store, name):
    from omegaconf import OmegaConf

    from sweeps.parent import Parent

    study = optuna.create_study(study_name=name, direction="maximize")
    lr, momentum = FloatDistribution(1e-3, 1.0, log=True), FloatDistribution(0.5, 0.99)
    params = {"optimizer.lr": 0.407, "optimizer.momentum": 0.9}
    study.add_trial(
        create_trial(params=params, distributions={"optimizer.lr": lr, "optimizer.momentum": momentum}, value=0.5)
    )
    parent = Parent(OmegaConf.create({"uri": store.uri, "dir": str(store.dir), "experiment": name}), name)
    parent.summarize(study, "val/acc")
    tags = store.client.get_run(parent.run_id).data.tags
    assert (tags["best.optimizer.lr"], tags["best.optimizer.momentum"]) == ("0.407", "0.9")
    # the rerun fixed optimizer.momentum on the command line: its trials sample only the learning rate
    study.add_trial(create_trial(params={"optimizer.lr": 0.1}, distributions={"optimizer.lr": lr}, value=0.8))
    parent.summarize(study, "val/acc")
    tags = store.client.get_run(parent.run_id).data.tags
    best = {k.removeprefix("best."): v for k, v in tags.items() if k.startswith("best.") and k != "best.trial"}
    assert best == {"optimizer.lr": "0.1"} and tags["best.trial"] == "1"
    assert store.client.get_run(parent.run_id).data.metrics["best_val_acc"] == 0.8


def test_a_trial_failed_after_an_epoch_counts_that_epoch():
    # stopped as diverged after epoch 1 (at chance): the epoch was trained but never reported to the pruner
    failed = create_trial(state=TrialState.FAIL, user_attrs={"epochs": 1})
    assert report.epochs_trained(failed) == 1
    pruned = create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.2, 2: 0.3})
    assert report.epochs_trained(pruned) == 2


def test_a_trial_stopped_early_is_a_complete_trial(store, name):
    """``callbacks=early_stopping`` in a sweep: the stopped run is FINISHED and its trial COMPLETE."""
    args = [*store.args(name), "optimizer.lr=choice(0.1)", "train.epochs=6"]
    args += ["callbacks=early_stopping", "callbacks.early_stopping.min_delta=10", "callbacks.early_stopping.patience=1"]
    assert multirun("sweep=digits_smoke", *args, "hydra.sweeper.n_trials=1") == 0
    (trial,) = store.study(name).trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs"] == 2
    _, children = split_runs(store.runs(name))
    child = children[trial.number]
    assert child.info.status == "FINISHED" and child.data.tags["nnlab.stopped_early"] == "2"


@pytest.mark.parametrize(
    ("sampler", "says"),
    [
        ([], "all 3 points of the grid are run: nothing to run. To run more, add values to its dimensions"),
        (
            ["hydra/sweeper/sampler=random"],
            "the budget of 3 trials is used: nothing to run. To run more, raise it (hydra.sweeper.n_trials=<more "
            "than 3>) in the same command",
        ),
    ],
    ids=["grid", "random"],
)
def test_a_rerun_of_a_used_up_sweep_runs_nothing_and_says_how_to_run_more(
    store, name, capsys, monkeypatch, sampler, says
):
    """The study a digits_smoke sweep leaves after a Ctrl-C and a resume (4 trials, one failed and retried,
    budget 3), written directly; the same command again runs no trial and makes no parent run or report."""
    journal = store.dir / "optuna" / f"{name}.log"
    journal.parent.mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=open_storage(str(journal), None), direction="maximize")
    lr = {"optimizer.lr": CategoricalDistribution([0.1, 0.01, 10000])}
    for state, value, rate, attrs in [
        (TrialState.FAIL, None, 10000, {}),  # diverged
        (TrialState.FAIL, None, 0.01, {}),  # interrupted, queued again as 2
        (TrialState.PRUNED, None, 0.01, {"failed_trial": 1, "retry_history": [1]}),
        (TrialState.COMPLETE, 0.85, 0.1, {}),
    ]:
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"optimizer.lr": rate},
                distributions=lr,
                intermediate_values={1: 0.2} if state == TrialState.PRUNED else None,
                system_attrs=attrs,
            )
        )

    def no_report(*args, **kwargs):
        raise AssertionError("the report was rebuilt")

    monkeypatch.setattr(report, "figures", no_report)
    capsys.readouterr()
    assert multirun("sweep=digits_smoke", *store.args(name), *sampler) == 0
    said = capsys.readouterr()
    output = said.out + said.err
    progress = "4 trials in the study (1 complete, 1 pruned, 2 failed, 1 of them retried), budget 3, 0 to run"
    assert f"Optuna study {name} in {journal}: {progress}" in output  # was "4 of 3 trials so far"
    (line,) = [line for line in output.splitlines() if "nothing to run" in line]
    assert line.endswith(f"{says}; report: {python_command()} -m sweeps.report --study {name} --storage {journal}")
    assert "Launching" not in output and "trial 4" not in output
    assert len(store.study(name).trials) == 4
    assert store.runs(name) == []  # no parent run opened, summarized or closed
    if sampler:  # raised as it says: one more trial runs
        monkeypatch.undo()
        assert multirun("sweep=digits_smoke", *store.args(name), *sampler, "hydra.sweeper.n_trials=4") == 0
        study = store.study(name)
        assert len(study.trials) == 5 and study.trials[4].state != TrialState.RUNNING
        parent, children = split_runs(store.runs(name))
        assert sorted(children) == [4] and parent.data.tags["best.trial"] in ("3", "4")


def add_trials(study: optuna.Study, *trials: tuple[TrialState, float | None]) -> None:
    """Trials of ``optimizer.lr`` = 0.01 x (number + 1), each ``(state, value)``."""
    lr = FloatDistribution(1e-3, 1.0, log=True)
    for state, value in trials:
        rate = round(0.01 * (len(study.trials) + 1), 2)
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"optimizer.lr": rate},
                distributions={"optimizer.lr": lr},
                intermediate_values={1: 0.1} if state == TrialState.PRUNED else None,
            )
        )


@pytest.mark.parametrize(("direction", "best"), [("maximize", 1), ("minimize", 3)])
def test_the_parents_best_tags_name_the_best_trial_not_the_last_complete_one(store, name, tmp_path, direction, best):
    from omegaconf import OmegaConf

    from experiments.tracking import tags as T
    from sweeps.parent import Parent

    study = optuna.create_study(study_name=name, direction=direction)
    add_trials(
        study,
        (TrialState.COMPLETE, 0.5),
        (TrialState.COMPLETE, 0.9),  # 1: the best when maximizing
        (TrialState.PRUNED, None),
        (TrialState.COMPLETE, 0.2),  # 3: the best when minimizing
        (TrialState.COMPLETE, 0.7),  # 4: the last complete trial, neither
        (TrialState.FAIL, None),
    )
    parent = Parent(OmegaConf.create({"uri": store.uri, "dir": str(store.dir), "experiment": name}), name)
    runs = {  # each trial's run, as the sweep's jobs log them
        t.number: store.client.create_run(
            parent.experiment_id, tags={T.STUDY: name, T.TRIAL: str(t.number), "mlflow.parentRunId": parent.run_id}
        ).info.run_id
        for t in study.trials
    }
    parent.summarize(study, "val/acc")
    run = store.client.get_run(parent.run_id)
    rate = str(study.trials[best].params["optimizer.lr"])
    assert run.data.tags["best.trial"] == str(best) and run.data.tags["best.optimizer.lr"] == rate
    assert run.data.tags["best.run_id"] == runs[best]
    assert run.data.metrics["best_val_acc"] == study.trials[best].value
    saved = store.client.download_artifacts(parent.run_id, "optuna/best.json", str(tmp_path))
    assert json.loads(Path(saved).read_text()) == {
        "trial": best,
        "value": study.trials[best].value,
        "params": {"optimizer.lr": float(rate)},
    }


@pytest.mark.slow
def test_the_parents_summary_is_not_rebuilt_when_no_trial_changed(store, name, monkeypatch):
    from omegaconf import OmegaConf

    from sweeps.parent import Parent

    drawn = []
    figures = report.figures
    monkeypatch.setattr(
        report, "figures", lambda study, out, runs=None: drawn.append(len(study.trials)) or figures(study, out)
    )
    study = optuna.create_study(study_name=name, direction="maximize")
    add_trials(study, (TrialState.COMPLETE, 0.5), (TrialState.PRUNED, None))
    parent = Parent(OmegaConf.create({"uri": store.uri, "dir": str(store.dir), "experiment": name}), name)
    parent.summarize(study, "val/acc")
    parent.summarize(study, "val/acc")  # a rerun that ran nothing
    assert drawn == [2]
    add_trials(study, (TrialState.COMPLETE, 0.8))
    again = Parent(OmegaConf.create({"uri": store.uri, "dir": str(store.dir), "experiment": name}), name)
    again.summarize(study, "val/acc")  # a rerun that ran a trial: its parent found again
    again.summarize(study, "val/acc")
    assert drawn == [2, 3] and again.run_id == parent.run_id
    run = store.client.get_run(parent.run_id)
    assert run.data.tags["best.trial"] == "2" and run.data.metrics["trials/complete"] == 2
