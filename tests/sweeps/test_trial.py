"""``sweeps.trial.run``: a trial's run is named ``#N <its values>``, after which a preset's own name follows."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from sweeps.trial import run
from tests.experiments.conftest import compose_config


@pytest.mark.parametrize(
    ("preset_name", "expected"), [(None, "#0 lr=0.0316"), ("best MLP, augmented", "#0 lr=0.0316 (best MLP, augmented)")]
)
def test_a_trials_run_is_named_by_its_number_and_values_even_under_a_named_preset(preset_name, expected, store, name):
    study = optuna.create_study(study_name=name, direction="maximize")
    trial = study.ask({"optimizer.lr": FloatDistribution(0.0316, 0.0316)})
    cfg = compose_config("dataset=digits", "model=mlp128", "train.epochs=1", "train.progress=false",
                         "tracking.log_model=false", "tracking.misclassified=0", f"tracking.dir={store.dir}",
                         f"tracking.experiment={name}")  # fmt: skip
    cfg.tracking.run_name = preset_name  # what experiment=best_mlp_augmented sets
    run(cfg, trial)
    (logged,) = store.runs(name)
    assert logged.info.run_name == expected
