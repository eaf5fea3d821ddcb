"""``python -m sweeps.rerun``: a study's top trials again with more seeds, as one tagged multirun."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeps import rerun
from tests.sweeps.conftest import QUICK


def journal_study(path, direction="maximize") -> optuna.Study:
    """Study "s" in a journal file with three complete trials (values 0.2, 0.9, 0.5) and a pruned one."""
    from sweeps.study import open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(str(path), None), direction=direction)
    lr = FloatDistribution(1e-3, 1.0, log=True)
    for value, x in [(0.2, 0.001), (0.9, 0.05), (None, 0.5), (0.5, 0.1)]:
        overrides = ["sweep=digits_smoke", "dataset=digits", "model=mlp128", f"optimizer.lr={x}", "seed=0"]
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.PRUNED, value=value,
            params={"optimizer.lr": x}, distributions={"optimizer.lr": lr},
            user_attrs={"overrides": overrides},
        ))  # fmt: skip
    return study


def test_rerun_writes_a_config_per_top_trial_and_one_multirun_over_them_and_the_seeds(tmp_path, capsys):
    journal_study(tmp_path / "s.log")
    assert rerun.main(["--study", "s", "--storage", str(tmp_path / "s.log"), "--top", "2", "--seeds", "3",
                       "--dry-run", "train.epochs=1"]) == 0  # fmt: skip
    line = capsys.readouterr().out.splitlines()[-1]
    assert "+rerun=trial_1,trial_3" in line and "seed=1,2,3" in line and line.endswith("train.epochs=1")
    folder = tmp_path / "rerun" / "s" / "rerun"
    assert sorted(p.name for p in folder.iterdir()) == ["trial_1.yaml", "trial_3.yaml"]  # the best two, not 0
    config = yaml.safe_load((folder / "trial_1.yaml").read_text())
    assert config["defaults"] == [{"override /dataset": "digits"}, {"override /model": "mlp128"}]
    assert config["optimizer"] == {"lr": 0.05}  # the trial's value; its sweep= and seed= are left out
    assert config["tracking"]["tags"] == {"nnlab.rerun_of": "s#1"} and "seed" not in config


def test_rerun_of_a_minimizing_study_takes_the_lowest(tmp_path, capsys):
    journal_study(tmp_path / "s.log", "minimize")
    assert rerun.main(["--study", "s", "--storage", str(tmp_path / "s.log"), "--dry-run"]) == 0
    assert "+rerun=trial_0 " in capsys.readouterr().out


@pytest.mark.slow
def test_rerun_runs_the_trials_seeds_as_one_multirun_of_tagged_runs(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    journal_study(tmp_path / "s.log")
    store = tmp_path / "store"
    extra = [*QUICK, "train.epochs=1", f"tracking.dir={store}", "tracking.experiment=rerun", "tracking.uri=" f"sqlite:///{store}/mlflow.db",
             f"hydra.sweep.dir={tmp_path / 'multirun'}"]  # fmt: skip
    assert rerun.main(["--study", "s", "--storage", str(tmp_path / "s.log"), "--top", "2", "--seeds", "2", *extra]) == 0
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rerun").experiment_id])
    got = sorted((r.data.tags["nnlab.rerun_of"], r.data.params["seed"], r.data.params["optimizer.lr"]) for r in runs)
    assert got == [("s#1", "1", "0.05"), ("s#1", "2", "0.05"), ("s#3", "1", "0.1"), ("s#3", "2", "0.1")]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_rerun_of_more_trials_than_complete_says_how_many_it_runs(tmp_path, capsys):
    journal_study(tmp_path / "s.log")
    assert rerun.main(["--study", "s", "--storage", str(tmp_path / "s.log"), "--top", "5", "--dry-run"]) == 0
    said = capsys.readouterr()
    assert "study s has only 3 complete trial(s) of the 5 asked for: running those" in said.err
    assert "+rerun=trial_1,trial_3,trial_0 " in said.out and said.out.startswith("3 trial(s) x 3 seeds")
