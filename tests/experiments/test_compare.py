"""``experiments.compare`` against a temporary SQLite store; runs are written with an explicit
``MlflowClient``, so the global MLflow tracking URI is never changed."""

import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from experiments import compare

EPOCHS = 3


def log_run(client: MlflowClient, experiment_id: str, name: str, start: int, lr: str, accuracy: float) -> str:
    run = client.create_run(experiment_id, start_time=start, run_name=name)
    run_id = run.info.run_id
    params = {"optimizer.lr": lr, "seed": "0", "model.hidden": "16"}
    metrics = [
        Metric(key, value, start + epoch, epoch)
        for epoch in range(1, EPOCHS + 1)
        for key, value in {
            "train/loss": 1.0 / epoch,
            "train/acc": accuracy - 0.1 / epoch,
            "val/loss": 1.1 / epoch,
            "val/acc": accuracy - 0.2 / epoch,
            "lr": float(lr),
            "grad_norm": 1.0,
            "epoch_time": 0.5,
        }.items()
    ]
    metrics += [Metric("test/acc", accuracy, start + 10, 0), Metric("test/loss", 1 - accuracy, start + 10, 0)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A store holding experiments "nnlab" (two runs differing in optimizer.lr only) and "other" (empty)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    artifacts = (root / "artifacts").as_uri()
    experiment_id = client.create_experiment("nnlab", artifact_location=artifacts)
    client.create_experiment("other", artifact_location=artifacts)
    later = log_run(client, experiment_id, "high-lr", start=2_000_000, lr="0.1", accuracy=0.9)
    earlier = log_run(client, experiment_id, "low-lr", start=1_000_000, lr="0.01", accuracy=0.8)
    return {"uri": uri, "runs": [earlier, later]}


def test_table_keeps_differing_params_and_sorts_by_start_time(store):
    table = compare.compare_runs(store["uri"], ["nnlab"])
    assert list(table["run_id"]) == store["runs"]
    assert list(table["run"]) == ["low-lr", "high-lr"]
    assert "optimizer.lr" in table.columns
    assert "seed" not in table.columns and "model.hidden" not in table.columns
    assert list(table.columns[-4:]) == list(compare.DEFAULT_METRICS)
    np.testing.assert_allclose(table["test/acc"], [0.8, 0.9])
    np.testing.assert_allclose(table["val/acc"], [0.8 - 0.2 / EPOCHS, 0.9 - 0.2 / EPOCHS])


def test_explicit_runs_and_filters(store):
    one = compare.compare_runs(store["uri"], [], run_ids=store["runs"][:1])
    assert list(one["run_id"]) == store["runs"][:1]
    assert "optimizer.lr" not in one.columns  # a single run has nothing to differ from
    filtered = compare.compare_runs(store["uri"], ["nnlab"], filter_string="params.optimizer.lr = '0.1'")
    assert list(filtered["run"]) == ["high-lr"]


def test_a_metric_no_run_logged_is_blank(store):
    table = compare.compare_runs(store["uri"], ["nnlab"], metrics=["val/acc", "val/f1"])
    assert table["val/f1"].isna().all()
    assert "| low-lr |" in compare.to_markdown(table)


def test_main_prints_markdown_and_writes_the_report(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert compare.main(["--tracking-uri", store["uri"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("| run_id | run | status | start_time | optimizer.lr | test/acc |")
    assert "| 0.1 |" in printed and "| 0.01 |" in printed
    assert (out / "comparison.md").read_text() in printed
    assert "optimizer.lr" in (out / "comparison.csv").read_text().splitlines()[0]
    assert (out / "comparison.png").stat().st_size > 10_000


def test_metric_histories_are_per_epoch(store):
    histories = compare.metric_histories(store["uri"], store["runs"])
    steps, values = histories[store["runs"][0]]
    np.testing.assert_array_equal(steps, np.arange(1, EPOCHS + 1))
    assert values[-1] > values[0]


def test_unknown_experiment_lists_the_existing_ones(store, capsys):
    assert compare.main(["--tracking-uri", store["uri"], "--experiment", "nope"]) == 1
    error = capsys.readouterr().err
    assert "Unknown experiment 'nope'" in error and "nnlab, other" in error


def test_no_matching_runs_is_an_error(store):
    with pytest.raises(compare.CompareError, match="No runs matched"):
        compare.compare_runs(store["uri"], ["other"])
    with pytest.raises(compare.CompareError, match="No runs matched"):
        compare.compare_runs(store["uri"], ["nnlab"], filter_string="params.seed = '1'")


def test_unknown_run_id_is_an_error(store):
    with pytest.raises(compare.CompareError, match="does not exist"):
        compare.compare_runs(store["uri"], [], run_ids=["0" * 32])


@pytest.mark.slow
def test_unreachable_stores_are_errors(tmp_path):
    with pytest.raises(compare.CompareError, match="There is no MLflow store at"):
        compare.compare_runs(f"sqlite:///{tmp_path}/missing.db", ["nnlab"])
    with pytest.raises(compare.CompareError, match="did not answer within 8 s"):
        compare.compare_runs("http://127.0.0.1:9", ["nnlab"])  # port 9 (discard) refuses connections


def test_runs_as_a_script_from_any_directory(tmp_path):
    script = Path(compare.__file__)
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--tracking-uri" in result.stdout


def test_main_reads_the_store_named_by_mlflow_tracking_uri(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)  # no ./mlruns here: the default store would be empty
    assert compare.main(["--experiment", "nnlab", "--out", str(tmp_path / "report")]) == 0
    assert "| high-lr |" in capsys.readouterr().out


# a second metric per run, unrelated to the accuracy (test/loss and val/acc follow it: same std per group)
F1 = {("0.1", 0): 0.70, ("0.1", 1): 0.60, ("0.1", 2): 0.95, ("0.01", 0): 0.50, ("0.01", 1): 0.52, ("0.01", 2): 0.40}


@pytest.fixture(scope="module")
def seeds_store(tmp_path_factory) -> dict:
    """Six runs: two learning rates x three seeds, with bookkeeping params that differ and a metric ``test/f1``
    of their own; then, started later, a sweep parent and a learning-rate range test (tag ``nnlab.kind``)
    whose params are the training runs' but for ``model.hidden`` and its ``lr_find.*``."""
    root = tmp_path_factory.mktemp("mlflow-seeds")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("nnlab", artifact_location=(root / "artifacts").as_uri())
    accuracies = {("0.1", 0): 0.91, ("0.1", 1): 0.93, ("0.1", 2): 0.92, ("0.01", 0): 0.80, ("0.01", 1): 0.84}
    accuracies[("0.01", 2)] = 0.85
    for i, ((lr, seed), accuracy) in enumerate(sorted(accuracies.items())):
        run_id = log_run(client, experiment_id, f"lr={lr} seed={seed}", 1_000_000 + i, lr, accuracy)
        client.log_batch(run_id, params=[Param("train.seed", str(seed)), Param("tracking.dir", f"/tmp/{i}")])
        client.log_metric(run_id, "test/f1", F1[lr, seed], step=0)
    parent = client.create_run(experiment_id, 2_000_000, tags={"nnlab.sweep": "s"}, run_name="sweep s").info.run_id
    client.set_terminated(parent)
    lr_find = client.create_run(experiment_id, 2_000_001, tags={"nnlab.kind": "lr_find"}, run_name="lr_find x")
    params = {"optimizer.lr": "0.1", "seed": "0", "model.hidden": "32", "train.seed": "0"}
    params |= {"lr_find.min_lr": "1e-07", "lr_find.max_lr": "10.0", "lr_find.suggestion": "0.05"}
    client.log_batch(lr_find.info.run_id, params=[Param(k, v) for k, v in params.items()])
    client.log_metric(lr_find.info.run_id, "lr_find/loss", 2.3, step=0)
    client.set_terminated(lr_find.info.run_id)
    return {"uri": uri, "accuracies": accuracies, "parent": parent, "lr_find": lr_find.info.run_id}


def test_parents_and_bookkeeping_params_are_left_out_unless_asked(seeds_store):
    table = compare.compare_runs(seeds_store["uri"], ["nnlab"])
    assert len(table) == 6 and seeds_store["parent"] not in set(table["run_id"])
    assert "tracking.dir" not in table.columns and {"optimizer.lr", "train.seed"} <= set(table.columns)
    assert seeds_store["parent"] in set(compare.compare_runs(seeds_store["uri"], ["nnlab"], parents=True)["run_id"])


def test_sort_puts_the_best_first(seeds_store):
    table = compare.sort_table(compare.compare_runs(seeds_store["uri"], ["nnlab"]), "test/acc")
    assert list(table["test/acc"]) == sorted(seeds_store["accuracies"].values(), reverse=True)
    by_loss = compare.sort_table(table, "test/loss")
    assert list(by_loss["test/loss"]) == sorted(by_loss["test/loss"])


def test_group_by_gives_mean_and_std_over_seeds_as_pandas_computes_them(seeds_store):
    import pandas as pd

    table = compare.compare_runs(seeds_store["uri"], ["nnlab"])
    grouped = compare.group_table(table, "optimizer.lr", ["test/acc"])
    raw = pd.DataFrame([{"lr": lr, "acc": acc} for (lr, _), acc in seeds_store["accuracies"].items()]).groupby("lr")[
        "acc"
    ]
    assert list(grouped["optimizer.lr"]) == ["0.01", "0.1"] and list(grouped["runs"]) == [3, 3]
    assert np.allclose(grouped["test/acc mean"], raw.mean().loc[["0.01", "0.1"]])
    assert np.allclose(grouped["test/acc std"], raw.std().loc[["0.01", "0.1"]])
    shown = compare.mean_std_markdown(grouped, ["test/acc"])
    assert shown["test/acc"].iloc[1] == f"{raw.mean()['0.1']:.4f} ± {raw.std()['0.1']:.4f}"
    with pytest.raises(compare.CompareError, match="do not differ in that param"):
        compare.group_table(table, "model.hidden", ["test/acc"])


def test_group_by_two_metrics_keeps_each_metrics_own_mean_and_std(seeds_store):
    """test/acc and test/f1 grouped at once: each column holds its own metric's mean and std, as pandas gives
    them from the values logged (the two metrics' means and stds all differ, so a mix-up shows)."""
    import pandas as pd

    table = compare.compare_runs(seeds_store["uri"], ["nnlab"], metrics=["test/acc", "test/f1"])
    grouped = compare.group_table(table, "optimizer.lr", ["test/acc", "test/f1"]).set_index("optimizer.lr")
    raw = pd.DataFrame(
        [{"lr": lr, "acc": acc, "f1": F1[lr, seed]} for (lr, seed), acc in seeds_store["accuracies"].items()]
    ).groupby("lr")
    mean, std = raw.mean(), raw.std()
    for metric, column in (("test/acc", "acc"), ("test/f1", "f1")):
        for lr in ("0.01", "0.1"):
            assert grouped.loc[lr, f"{metric} mean"] == pytest.approx(mean.loc[lr, column], abs=1e-12)
            assert grouped.loc[lr, f"{metric} std"] == pytest.approx(std.loc[lr, column], abs=1e-12)
    shown = compare.mean_std_markdown(grouped.reset_index(), ["test/acc", "test/f1"]).set_index("optimizer.lr")
    assert (
        shown.loc["0.1", "test/f1"] == f"{mean.loc['0.1', 'f1']:.4f} ± {std.loc['0.1', 'f1']:.4f}" == "0.7500 ± 0.1803"
    )
    assert shown.loc["0.01", "test/acc"] == f"{mean.loc['0.01', 'acc']:.4f} ± {std.loc['0.01', 'acc']:.4f}"


def test_range_tests_are_left_out_with_the_params_only_they_differ_in(seeds_store, tmp_path, capsys):
    """A learning-rate range test trains nothing to compare: left out unless asked, and so are its lr_find.*
    params and model.hidden, which only it sets apart; --max-runs counts the training runs shown."""
    table = compare.compare_runs(seeds_store["uri"], ["nnlab"], max_runs=6)
    assert len(table) == 6 and seeds_store["lr_find"] not in set(table["run_id"])  # the newest run is the range test
    assert [c for c in table.columns if c not in compare.DEFAULT_METRICS] == [
        *compare.RUN_COLUMNS,
        "optimizer.lr",
        "train.seed",
    ]
    assert compare.main(["--tracking-uri", seeds_store["uri"], "--metrics", "test/acc", "--out", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "| run_id | run | status | start_time | optimizer.lr | train.seed | test/acc |"
    with_it = compare.compare_runs(seeds_store["uri"], ["nnlab"], lr_find=True)
    assert seeds_store["lr_find"] in set(with_it["run_id"]) and len(with_it) == 7
    assert {"model.hidden", "lr_find.suggestion"} <= set(with_it.columns)
    assert compare.main(["--tracking-uri", seeds_store["uri"], "--lr-find", "--out", str(tmp_path)]) == 0
    assert "| lr_find x |" in capsys.readouterr().out


def test_the_command_writes_the_grouped_table(seeds_store, tmp_path, capsys):
    args = ["--tracking-uri", seeds_store["uri"], "--group-by", "optimizer.lr", "--sort", "test/acc"]
    assert compare.main([*args, "--out", str(tmp_path)]) == 0
    assert "± " in (tmp_path / "groups.md").read_text() and (tmp_path / "groups.csv").exists()
    assert "| 0.1 | 3 |" in capsys.readouterr().out


def test_the_figure_plots_every_metric_with_short_labels_and_the_legend_outside(seeds_store):
    table = compare.compare_runs(seeds_store["uri"], ["nnlab"])
    metrics = ["test/acc", "test/loss", "val/acc"]
    histories = compare.metric_histories(seeds_store["uri"], table["run_id"])
    fig = compare.comparison_figure(
        table[[*compare.RUN_COLUMNS, "optimizer.lr", "train.seed", *metrics]], metrics, histories
    )
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [*metrics, "val/acc per epoch"]
    assert [t.get_text() for t in axes[0].get_xticklabels()][0] == "lr=0.01 seed=0"
    legend = axes[-1].get_legend()
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= axes[-1].get_window_extent().x1  # beside the curves, not on them


def runs_table(runs: int, params: dict[str, list[str]], metrics: list[str]) -> pd.DataFrame:
    """A comparison table of ``runs`` runs without a store: the run columns, ``params``, random ``metrics``."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "run_id": [f"{i:032x}" for i in range(runs)],
            "run": [f"run {i}" for i in range(runs)],
            "status": "FINISHED",
            "start_time": pd.Timestamp(0, unit="ms", tz="UTC"),
        }
    )
    for name, values in params.items():
        table[name] = values
    for metric in metrics:
        table[metric] = rng.random(runs)
    return table


@pytest.mark.parametrize(
    ("runs", "params"),
    [
        (50, {"optimizer.lr": [f"{0.001 * (i + 1):g}" for i in range(50)]}),  # --max-runs' default: 50 legend rows
        (20, {f"model.param_number_{k}": [f"[{i}, {i + k}, 1024]" for i in range(20)] for k in range(4)}),  # long
        (1, {}),
    ],
)
def test_the_figure_of_many_runs_or_long_labels_is_laid_out_without_warnings(runs, params):
    """Sized to its runs and labels, so that constrained layout applies ("constrained_layout not applied
    because axes sizes collapsed to zero" otherwise)."""
    metrics = list(compare.DEFAULT_METRICS)
    table = runs_table(runs, params, metrics)
    histories = {run_id: (np.arange(1, 4), np.linspace(0.5, 0.9, 3)) for run_id in table["run_id"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = compare.comparison_figure(table, metrics, histories)
        fig.savefig(io.BytesIO(), dpi=50)
    assert fig.get_layout_engine() is not None
    legend, curves = fig.get_axes()[-1].get_legend(), fig.get_axes()[-1]
    assert len(legend.get_texts()) == runs
    assert legend.get_window_extent().x0 >= curves.get_window_extent().x1
    assert legend.get_window_extent().y0 >= 0 and legend.get_window_extent().x1 <= fig.bbox.x1  # in the figure


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory) -> dict:
    """What a user's store holds after the README's commands: two MNIST seeds of one setup, a third MNIST run of
    that setup KILLED after epoch 1 (a high accuracy, so that mixing it in shows), and a digits run (its lr
    the seeds' own: only the data set sets it apart)."""
    root = tmp_path_factory.mktemp("mlflow-mixed")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("nnlab", artifact_location=(root / "artifacts").as_uri())
    runs = [  # name, dataset, seed, status, test/acc (None: not logged), val/acc
        ("mnist seed=0", "mnist", "0", "FINISHED", 0.9712, 0.9740),
        ("mnist seed=1", "mnist", "1", "FINISHED", 0.9690, 0.9705),
        ("mnist seed=2", "mnist", "2", "KILLED", None, 0.9990),
        ("digits", "digits", "0", "FINISHED", 0.8000, 0.8100),
    ]
    ids = {}
    for i, (name, dataset, seed, status, test_acc, val_acc) in enumerate(runs):
        run_id = client.create_run(experiment_id, start_time=1_000_000 + i, run_name=name).info.run_id
        params = {"dataset": dataset, "seed": seed, "optimizer.lr": "0.05000000000000001", "train.epochs": "3"}
        metrics = {"val/acc": val_acc} | ({"test/acc": test_acc} if test_acc is not None else {})
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 1) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run_id, status)
        ids[name] = run_id
    return {"uri": uri, "ids": ids}


def test_groups_hold_only_finished_runs_of_one_setup_and_say_what_was_left_out(mixed_store, tmp_path, capsys):
    table = compare.compare_runs(mixed_store["uri"], ["nnlab"], metrics=["test/acc", "val/acc"], keep=["optimizer.lr"])
    grouped = compare.group_table(table, "optimizer.lr", ["test/acc", "val/acc"])
    assert list(grouped["optimizer.lr"]) == ["0.05"]  # a float key to 3 significant digits
    assert list(grouped["runs"]) == [2] and list(grouped["test/acc n"]) == [2] and list(grouped["val/acc n"]) == [2]
    seeds = pd.Series([0.9740, 0.9705])
    assert grouped["val/acc mean"].iloc[0] == pytest.approx(seeds.mean(), abs=1e-12)
    assert grouped["val/acc std"].iloc[0] == pytest.approx(seeds.std(), abs=1e-12)
    left_out = grouped.attrs["left_out"]
    assert len(left_out) == 2
    assert left_out[0].startswith("left out 1 run(s) that did not finish (KILLED 1)")
    assert left_out[1].startswith("left out 1 finished run(s) whose setup differs from the 2 grouped")
    assert "dataset=digits (grouped: mnist): 1" in left_out[1]
    args = ["--tracking-uri", mixed_store["uri"], "--metrics", "test/acc", "val/acc", "--group-by", "optimizer.lr"]
    assert compare.main([*args, "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| 0.05 | 2 | 0.9701 ± 0.0016 | 0.9723 ± 0.0025 |" in out
    assert "did not finish (KILLED 1)" in err and "dataset=digits" in err
    assert (tmp_path / "groups.png").stat().st_size > 0


def test_a_metric_fewer_runs_logged_shows_its_n():
    table = runs_table(3, {"optimizer.lr": ["0.1", "0.1", "0.1"]}, ["test/acc"])
    table.loc[2, "test/acc"] = np.nan
    shown = compare.mean_std_markdown(compare.group_table(table, "optimizer.lr", ["test/acc"]), ["test/acc"])
    assert shown["test/acc"].iloc[0].endswith(" (n=2)") and list(shown["runs"]) == [3]


def test_groups_are_sorted_best_first_and_the_two_best_compared_by_welchs_t_test(seeds_store):
    from scipy import stats

    table = compare.compare_runs(seeds_store["uri"], ["nnlab"])
    by_acc = compare.sort_groups(compare.group_table(table, "optimizer.lr", ["test/acc", "test/loss"]), "test/acc")
    assert list(by_acc["optimizer.lr"]) == ["0.1", "0.01"]
    by_loss = compare.sort_groups(compare.group_table(table, "optimizer.lr", ["test/acc", "test/loss"]), "test/loss")
    assert list(by_loss["optimizer.lr"]) == ["0.1", "0.01"]  # the lower loss first
    line = compare.welch_test(table, by_acc, "optimizer.lr", "test/acc")
    high = [acc for (lr, _), acc in seeds_store["accuracies"].items() if lr == "0.1"]
    low = [acc for (lr, _), acc in seeds_store["accuracies"].items() if lr == "0.01"]
    expected = stats.ttest_ind(high, low, equal_var=False)
    # by hand: Welch's t is the mean difference over sqrt(s1²/n1 + s2²/n2)
    by_hand = (np.mean(high) - np.mean(low)) / np.sqrt(np.var(high, ddof=1) / 3 + np.var(low, ddof=1) / 3)
    assert expected.statistic == pytest.approx(by_hand)
    assert f"optimizer.lr=0.1 (n=3) vs optimizer.lr=0.01 (n=3): difference +{np.mean(high) - np.mean(low):.4g}" in line
    assert f"Welch's t = {expected.statistic:.3g}, p = {expected.pvalue:.3g}" in line
    assert ("more than the seeds' noise" in line) == (expected.pvalue < 0.05)


def test_the_groups_figure_spans_the_values_not_from_zero(seeds_store):
    table = compare.compare_runs(seeds_store["uri"], ["nnlab"])
    grouped = compare.sort_groups(compare.group_table(table, "optimizer.lr", ["test/acc"]), "test/acc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = compare.groups_figure(compare.grouped_runs(table, "optimizer.lr", ["test/acc"])[0], grouped,
                                    "optimizer.lr", ["test/acc"])  # fmt: skip
        fig.savefig(io.BytesIO(), dpi=50)
    ax = fig.get_axes()[0]
    assert ax.get_ylim()[0] > 0.5  # the accuracies lie in 0.8..0.93
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1\n(n=3)", "0.01\n(n=3)"]


def test_grouped_by_a_preset_tag_each_group_keeps_its_own_setup():
    """A preset names a whole setup: its groups may differ in any param, but within one, a run of another setup
    (an earlier version of the preset, a 1-epoch check) is left out."""
    rows = [  # preset, hidden, epochs, seed, test/acc
        ("r1", "[800]", "20", "0", 0.980),
        ("r1", "[800]", "20", "1", 0.982),
        ("r1", "[800]", "1", "2", 0.900),  # a check of the preset: left out
        ("r2", "[800, 800]", "150", "0", 0.985),
    ]
    frame = pd.DataFrame(
        [
            {
                "run_id": f"{i:032x}", "run": f"run {i}", "status": "FINISHED",
                "start_time": pd.Timestamp(i, unit="ms", tz="UTC"), "tags.preset": preset,
                "params.model.hidden": hidden, "params.train.epochs": epochs, "params.seed": seed,
                "metrics.test/acc": acc,
            }
            for i, (preset, hidden, epochs, seed, acc) in enumerate(rows)
        ]
    )  # fmt: skip
    table = compare.comparison_table(frame, ["test/acc"], ["preset"])
    grouped = compare.group_table(table, "preset", ["test/acc"]).set_index("preset")
    assert grouped["runs"].to_dict() == {"r1": 2, "r2": 1}
    assert grouped.loc["r1", "test/acc mean"] == pytest.approx(0.981)
    assert grouped.attrs["left_out"] == [
        "left out 1 finished run(s) whose setup differs from the 3 grouped: preset=r1: train.epochs=1 (grouped: 20): 1"
    ]


def test_runs_without_the_tag_grouped_by_are_left_out_not_a_group_of_their_own():
    """``sweeps.rerun``'s comparison: the sweep's own trial (no ``nnlab.rerun_of``) beside its reruns."""
    rows = [("s#2", "1", 0.91), ("s#2", "2", 0.93), (None, "0", 0.80)]  # rerun_of, seed, test/acc
    frame = pd.DataFrame(
        [
            {
                "run_id": f"{i:032x}", "run": f"run {i}", "status": "FINISHED",
                "start_time": pd.Timestamp(i, unit="ms", tz="UTC"), "tags.nnlab.rerun_of": rerun_of,
                "params.model.hidden": "[64]", "params.seed": seed, "metrics.test/acc": acc,
            }
            for i, (rerun_of, seed, acc) in enumerate(rows)
        ]
    )  # fmt: skip
    table = compare.comparison_table(frame, ["test/acc"], ["nnlab.rerun_of"])
    grouped = compare.group_table(table, "nnlab.rerun_of", ["test/acc"]).set_index("nnlab.rerun_of")
    assert grouped["runs"].to_dict() == {"s#2": 2}
    assert grouped.loc["s#2", "test/acc mean"] == pytest.approx(0.92)
    assert grouped.attrs["left_out"] == ["left out 1 finished run(s) without nnlab.rerun_of"]
