"""``python -m sweeps.bench`` end to end on digits: every configuration it names runs the front door and
its row counts the study's trials."""

from __future__ import annotations

import pytest

from sweeps import bench


@pytest.mark.slow
def test_bench_runs_each_configuration_and_tabulates_the_study(capsys):
    configs = [
        "median pruning, 1 process",
        "no pruning, 2 workers",
        "median pruning, joblib 2 jobs",
        "median pruning, submitit_local 2 jobs",
    ]
    args = ["--dataset", "digits", "--model", "mlp128", "--trials", "2", "--epochs", "1", "--configs", *configs]
    assert bench.main(args) == 0
    table = capsys.readouterr().out.split("| configuration |", 1)[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == configs
    for row in rows:
        complete, pruned, failed = (int(row[i]) for i in (4, 5, 6))
        assert complete + pruned + failed == 2  # the budget, whatever the configuration
        busy, load = row[8].strip(), float(row[9])
        assert busy.endswith("%") and 0 < int(busy[:-1]) <= 100 and load >= 0
