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
    study = study_of("maximize", [0.5, None, 0.5, 0.5])  # three complete alike: importances "will be equal"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        images = report.figures(study, tmp_path)
    assert "param_importances" in {p.stem for p in images}
    assert not [w for w in said if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert not [w for w in said if "importances" in str(w.message)]
    with pytest.warns(UserWarning, match=report.IMPORTANCE_WARNING):  # what was silenced, and only there
        optuna.importance.get_param_importances(study)


def grid_study_of_one_complete_trial() -> optuna.Study:
    """digits_smoke's study: a categorical learning rate of numbers (``choice(0.1, 0.01, 10000)``), a failed and
    a pruned trial and three complete ones alike (``MIN_COMPLETE``), so every param and the objective take one
    value among the complete trials."""
    study = optuna.create_study(direction="maximize")
    lr = optuna.distributions.CategoricalDistribution((0.1, 0.01, 10000))
    for state, value, choice in [(TrialState.FAIL, None, 10000), (TrialState.PRUNED, None, 0.01)]:
        study.add_trial(
            create_trial(state=state, value=value, params={"optimizer.lr": choice}, distributions={"optimizer.lr": lr})
        )
    for _ in range(report.MIN_COMPLETE):
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


def test_plots_of_how_params_relate_need_enough_complete_trials_and_are_legible(tmp_path):
    """From two complete trials, no slice, importance or parallel-coordinate plot (a dot per panel); from three,
    trials coloured on viridis (Optuna's Blues draws the weakest near-white) and legends by run name."""
    from types import SimpleNamespace

    from matplotlib import pyplot as plt

    (tmp_path / "two").mkdir()
    (tmp_path / "all").mkdir()
    two = {p.stem for p in report.figures(study_of("maximize", [0.5, None, 0.9]), tmp_path / "two")}
    assert two == set(report.PLOTS) - set(report.RELATIONS)
    assert report.trial_label("Trial3", {3: SimpleNamespace(info=SimpleNamespace(run_name="#3 lr=0.1"))}) == "#3 lr=0.1"
    assert report.trial_label("Trial4", {}) == "#4" and report.trial_label("Objective Value", None) == "Objective Value"
    shown = []
    close = plt.close
    try:
        plt.close = lambda fig=None: shown.append(fig)  # keep the figures to look at them
        report.figures(study_of("maximize"), tmp_path / "all")
    finally:
        plt.close = close
    maps = {m.get_cmap().name for fig in shown for ax in fig.axes for m in [*ax.collections, *ax.images]
            if m.get_array() is not None}  # fmt: skip
    assert "viridis" in maps and "Blues" not in maps
    labels = [t.get_text() for fig in shown for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "#0" in labels and not [label for label in labels if label.startswith("Trial")]
    for fig in shown:
        close(fig)


def test_a_best_value_at_the_edge_of_its_range_is_flagged_and_one_inside_is_not():
    """lr's best at the top of its log range (0.5 of [1e-3, 0.5]) and momentum's at the bottom are flagged in
    the report; weight decay's, well inside, and a categorical param are not."""
    study = optuna.create_study(direction="maximize")
    lr, momentum, decay = FloatDistribution(1e-3, 0.5, log=True), FloatDistribution(0.5, 0.99), FloatDistribution(0, 1)
    choice = optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    for value, params in [(0.9, {"lr": 0.48, "momentum": 0.51, "decay": 0.5, "opt": "adam"}),
                          (0.5, {"lr": 0.01, "momentum": 0.9, "decay": 0.2, "opt": "sgd"})]:  # fmt: skip
        distributions = {"lr": lr, "momentum": momentum, "decay": decay, "opt": choice}
        trial = create_trial(state=TrialState.COMPLETE, value=value, params=params, distributions=distributions)
        study.add_trial(trial)
    flags = report.edges(study.best_trial)
    assert [flag.split(" ")[0] for flag in flags] == ["lr", "momentum"]
    assert "top of its range" in flags[0] and "bottom of its range" in flags[1]
    text = report.markdown(study, report.trials_table(study), 5, images=[])
    assert text.count("**at the edge**") == 2
    assert report.edges(study.trials[1]) == []  # lr 0.01 sits inside [1e-3, 0.5] on its log scale
