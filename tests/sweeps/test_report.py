"""``sweeps.report`` on studies built directly (no training, no MLflow): the top-k table's order in both
directions, and no Optuna warning that the report itself answers."""

from __future__ import annotations

import logging
import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeps import report

VALUES = [0.5, None, 0.9, 0.1, None, 0.7, 0.3]  # None: a pruned (odd number) or failed (even) trial


def study_of(direction: str, values: list[float | None] = VALUES) -> optuna.Study:
    study = optuna.create_study(direction=direction)
    x, y = FloatDistribution(0, 1), FloatDistribution(0, 1)
    for number, value in enumerate(values):
        state = TrialState.COMPLETE if value is not None else (TrialState.PRUNED, TrialState.FAIL)[number % 2 == 0]
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"x": number / 10, "y": 1 - number / 10},
                distributions={"x": x, "y": y},
                intermediate_values={1: 0.05},
            )
        )
    return study


def top_numbers(text: str) -> list[int]:
    """Trial numbers of the report's top-k table, in its order."""
    section = text.split("\n## Top ", 1)[1].split("\n\n")[1]
    header, _, *rows = section.splitlines()
    column = [c.strip() for c in header.strip("|").split("|")].index("number")
    return [int(row.strip("|").split("|")[column]) for row in rows]


@pytest.mark.parametrize(
    ("direction", "top", "expected"),
    [
        ("maximize", 3, [2, 5, 0]),  # 0.9, 0.7, 0.5
        ("minimize", 3, [3, 6, 0]),  # 0.1, 0.3, 0.5
        ("maximize", 10, [2, 5, 0, 6, 3]),  # every complete trial, and no other
        ("minimize", 10, [3, 6, 0, 5, 2]),
    ],
)
def test_the_top_k_table_lists_the_best_complete_trials_first(direction, top, expected):
    study = study_of(direction)
    text = report.markdown(study, report.trials_table(study), top, images=[])
    assert top_numbers(text) == expected
    assert f"## Top {len(expected)}\n" in text and f"**Best trial #{expected[0]}**" in text


def test_the_report_says_nothing_of_optunas_experimental_plots_or_equal_importances(tmp_path):
    study = study_of("maximize", [0.5, None, None])  # one complete trial: Optuna warns importances are equal
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        images = report.figures(study, tmp_path)
    assert "param_importances" in {p.stem for p in images}
    assert not [w for w in said if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert not [w for w in said if "importances" in str(w.message)]
    with pytest.warns(UserWarning, match=report.IMPORTANCE_WARNING):  # what was silenced, and only there
        optuna.importance.get_param_importances(study)


def grid_study_of_one_complete_trial() -> optuna.Study:
    """digits_smoke's study: a categorical learning rate of numbers (``choice(0.1, 0.01, 10000)``), one trial
    of each state, so every param and the objective take one value among the complete trials."""
    study = optuna.create_study(direction="maximize")
    lr = optuna.distributions.CategoricalDistribution((0.1, 0.01, 10000))
    for state, value, choice in [(TrialState.FAIL, None, 10000), (TrialState.PRUNED, None, 0.01)]:
        study.add_trial(
            create_trial(state=state, value=value, params={"optimizer.lr": choice}, distributions={"optimizer.lr": lr})
        )
    study.add_trial(
        create_trial(
            value=0.85,
            params={"optimizer.lr": 0.1},
            distributions={"optimizer.lr": lr},
            intermediate_values={1: 0.8, 2: 0.85},
        )
    )
    return study


def test_the_plots_of_a_one_trial_grid_study_say_nothing(tmp_path, caplog):
    """Optuna's slice and parallel-coordinate plots set equal axis limits (one value) and plot number-like
    strings as categories (a categorical of numbers): silenced around its calls, and only there."""
    study = grid_study_of_one_complete_trial()
    caplog.set_level(logging.INFO, logger="matplotlib.category")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = report.figures(study, tmp_path)
    assert {p.stem for p in images} == set(report.PLOTS)
    assert not [r for r in caplog.records if r.name == "matplotlib.category"]
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with pytest.warns(UserWarning, match=report.IDENTICAL_LIMITS_WARNING):  # Optuna's own, left as it is
            plt.close(plots.plot_slice(study).figure)
    assert [r for r in caplog.records if r.name == "matplotlib.category"]


def study_of_params(count: int, trials: int = 12) -> optuna.Study:
    """``count`` float params (``optimizer.param_number_<i>``), ``trials`` complete trials."""
    study = optuna.create_study(direction="maximize")
    distributions = {f"optimizer.param_number_{i}": FloatDistribution(1e-6, 1e-1, log=i % 2 == 0) for i in range(count)}
    for number in range(trials):
        params = {
            name: d.low + (d.high - d.low) * ((number * (i + 3)) % trials) / trials
            for i, (name, d) in enumerate(distributions.items())
        }
        study.add_trial(
            create_trial(
                value=number / trials, params=params, distributions=distributions, intermediate_values={1: 0.1}
            )
        )
    return study


@pytest.mark.parametrize("count", [3, 8])
def test_the_plots_of_many_params_are_laid_out_without_warnings(tmp_path, count):
    """One layout engine that handles the colorbars Optuna adds (tight_layout does not), on a figure wide enough
    for one slice panel per param."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = report.figures(study_of_params(count), tmp_path)
    assert {p.stem for p in images} == set(report.PLOTS)


def test_the_plots_of_a_forty_trial_study_are_laid_out_without_warnings(tmp_path):
    """The intermediate-values plot's legend names every trial: at 40 it squeezed the axes to nothing."""
    import warnings

    from sweeps import report

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        for step in range(1, 4):
            trial.report(lr * step, step)
        return lr

    study.optimize(objective, n_trials=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        written = report.figures(study, tmp_path)
    assert (tmp_path / "intermediate_values.png") in written
