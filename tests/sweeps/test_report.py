"""``sweeps.report`` on studies built directly (no training, no MLflow): the top-k table's order in both
directions, and no Optuna warning that the report itself answers."""

from __future__ import annotations

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
