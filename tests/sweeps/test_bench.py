"""``python -m sweeps.bench`` end to end on digits: every configuration it names runs the front door and
its row counts the study's trials."""

from __future__ import annotations

import pytest

from sweeps import bench


@pytest.mark.slow
def test_bench_runs_each_configuration_and_tabulates_the_study(capsys):
    configs = [
        "pruning, 1 process",
        "no pruning, 2 workers",
        "pruning, joblib 2 jobs",
        "pruning, submitit_local 2 jobs",
    ]
    args = ["--dataset", "digits", "--model", "mlp128", "--trials", "2", "--epochs", "1", "--configs", *configs]
    assert bench.main(args) == 0
    table = capsys.readouterr().out.split("| configuration |", 1)[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == configs
    for row in rows:
        complete, pruned, failed = (int(row[i]) for i in (4, 5, 6))
        assert complete + pruned + failed == 2  # the budget, whatever the configuration
        busy, training, load = row[8].strip(), row[9].strip(), float(row[10])
        assert busy.endswith("%") and 0 < int(busy[:-1]) <= 100 and load >= 0
        assert training.endswith("%") and 0 < int(training[:-1]) < int(busy[:-1])  # training is part of a trial


def test_the_pruning_comparison_gives_each_seeds_pair_and_the_mean_gap_and_epoch_ratio():
    rows = [
        {"config": name, "seed": seed, "best": best, "epochs": epochs, "seconds": epochs}
        for seed, (off, on) in enumerate([(0.95, 0.94), (0.93, 0.935)])
        for name, best, epochs in [(bench.PAIR[0], off, 60), (bench.PAIR[1], on, 30 + 6 * seed)]
    ]
    text = bench.pruning_table(rows)
    assert "| 0 | 0.9500 | 0.9400 | -1.00 | 60 | 30 | 0.50 |" in text
    assert "| 1 | 0.9300 | 0.9350 | +0.50 | 60 | 36 | 0.60 |" in text
    # means 0.9400 and 0.9375: 0.25 points lower, 66 of 120 epochs
    assert text.rstrip().endswith("mean best: 0.9400 without pruning, 0.9375 with (0.25 points lower; goal <= 0.2) "
                                  "at 0.55 of the epochs (goal <= 0.6)")  # fmt: skip


@pytest.mark.slow
def test_the_trial_cost_compares_tracked_trials_with_untracked_ones(capsys):
    assert bench.main(["--trial-cost", "1"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("a 1-epoch digits trial, 1 in a row, load average ")
    assert "with tracking=none" in said and "a fixed cost of" in said and "the artifact thread then needed" in said
