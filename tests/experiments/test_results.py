"""The presets behind the results of ``docs/results.md``, R1's history as one multirun, and ``experiments.results``."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments import compare, results
from experiments.tracking.naming import experiment_params
from experiments.train import train
from tests.experiments.conftest import CONF, REPO, compose_config

PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
HISTORY = sorted(path.stem for path in (CONF / "r1_history").glob("*.yaml"))
LEAN = ["tracking.log_model=false", "tracking.system_metrics=false", "train.progress=false"]
SHORT = ["dataset=digits", "train.epochs=2"]  # what the `seeds` runs changed in their presets


def test_results_cover_every_preset():
    assert sorted(results.PRESETS) == PRESETS


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_one_epoch_on_a_small_subset(preset, compose, mlflow_store, experiment_name):
    cfg = compose(
        f"experiment={preset}", "dataset.subset=300", "train.epochs=1", *LEAN, *mlflow_store.overrides(experiment_name)
    )
    result = train(cfg)
    run = mlflow_store.only_run(experiment_name)
    assert result.status == "finished" and run.info.status == "FINISHED"
    assert run.data.tags["preset"] == preset
    assert run.data.tags["machine"].endswith(f", {len(os.sched_getaffinity(0))} cores")
    assert run.data.tags.get("claim") == OmegaConf.load(CONF / "experiment" / f"{preset}.yaml").tracking.tags.get(
        "claim"
    )
    assert run.data.params["train.epochs"] == "1" and "val/acc" in run.data.metrics and "test/acc" in run.data.metrics


def test_r2_trains_on_as_many_images_as_its_train_csv_had(compose):
    cfg = compose("experiment=r2")
    assert cfg.dataset.subset == 42000 and cfg.dataset.name == "mnist" and cfg.train.batch_size is None


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """R1's history run as docs/results.md says, on the digits set for one epoch: the store and its runs."""
    root = tmp_path_factory.mktemp("r1-history")
    command = [
        sys.executable, str(REPO / "experiments" / "run.py"), "-m", "experiment=r1", "+r1_history=glob(*)",
        "dataset=digits", "train.epochs=1", *LEAN, f"tracking.dir={root}", "tracking.experiment=history",
        f"hydra.sweep.dir={root}/multirun",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, results.preset_runs(uri, "history", ["dataset=digits", "train.epochs=1"])


@pytest.mark.slow
def test_r1_history_is_one_multirun_with_r1s_claim_on_every_run(history):
    _, runs = history
    table = results.history_table(runs)
    assert list(table["iteration"]) == ["1", "2", "3", "4 and 6", "5"]
    assert list(table["R1's claim"]) == [
        "not stated", "not stated", "not stated", "94.25% test, 96.34% train, 94.45% val", "diverged to 10%"
    ]  # fmt: skip
    by_iteration = runs.set_index("tags.iteration")
    assert [by_iteration.loc[i, "params.model.hidden"] for i in ("1", "2", "3", "4 and 6", "5")] == [
        "[128]", "[256]", "[512]", "[1024]", "[1024]"
    ]  # fmt: skip
    assert (
        by_iteration.loc["5", "params.optimizer.lr"] == "0.15"
        and by_iteration.loc["1", "params.optimizer.lr"] == "0.01"
    )
    assert table["test"].str.endswith("%").all()


def test_compare_prints_the_history_beside_r1s_claims(history, tmp_path, capsys):
    uri, runs = history
    argv = ["--tracking-uri", uri, "--experiment", "history", "--filter", "tags.preset = 'r1_history'"]
    assert compare.main([*argv, "--tags", "iteration", "claim", "--metrics", "test/acc", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert "| iteration | claim | test/acc |" in header and "model.hidden" in header
    assert "| 5 | diverged to 10% |" in printed and "| 4 and 6 | 94.25% test, 96.34% train, 94.45% val |" in printed
    grouped = compare.group_table(compare.compare_runs(uri, ["history"], tags=["claim"]), "claim", ["test/acc"])
    # three iterations claim nothing, but they are three setups: one group holds one of them, never their mean
    assert dict(zip(grouped["claim"], grouped["runs"], strict=True))["not stated"] == 1
    assert grouped.attrs["left_out"][0].startswith("left out 2 finished run(s) whose setup differs")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """r0 and r3 on the digits set for two epochs, two seeds each (r0 twice with seed 0: the later run counts),
    after a one-epoch run of r3 with seed 2 (not the setup the presets are checked against: it does not count)."""
    root = tmp_path_factory.mktemp("results")
    for preset, seed, epochs in [("r3", 2, 1), ("r0", 0, 2), ("r0", 0, 2), ("r0", 1, 2), ("r3", 0, 2), ("r3", 1, 2)]:
        overrides = [f"experiment={preset}", f"seed={seed}", "dataset=digits", f"train.epochs={epochs}", *LEAN]
        train(compose_config(*overrides, f"tracking.dir={root}", "tracking.experiment=results"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, results.preset_runs(uri, "results", SHORT)


@pytest.mark.slow
def test_the_table_is_mean_and_std_over_seeds_of_the_logged_runs(seeds):
    uri, runs = seeds
    assert sorted(runs["tags.preset"]) == ["r0", "r0", "r3", "r3"]  # r0 seed 0 ran twice: the later run counts
    assert sorted(runs.loc[runs["tags.preset"] == "r3", "params.seed"]) == ["0", "1"]  # not seed 2's one epoch
    assert runs.attrs["left_out_by_preset"] == {"r3": 1} and len(runs.attrs["left_out"]) == 1
    assert runs.attrs["left_out"][0].endswith("(r3, seed 2): train.epochs=1 (preset: 2)")
    assert "Left out, as runs whose config differs from their preset's: 1 of `r3`." in results.provenance(runs)
    assert "Presets composed with `dataset=digits train.epochs=2`." in results.provenance(runs)
    table = results.preset_table(runs).set_index("preset")
    assert list(table.index) == ["`r0`", "`r3`"]
    r0 = runs[runs["tags.preset"] == "r0"]
    accuracies = r0["metrics.test/acc"] * 100
    assert table.loc["`r0`", "test"] == f"{accuracies.mean():.2f}% ± {accuracies.std():.2f}"
    assert (
        table.loc["`r0`", "seeds"] == "0, 1" and table.loc["`r0`", "recipe's claim"] == "~97.0% test, test loss ~0.10"
    )
    assert table.loc["`r3`", "setup"] == "hidden 128, SGD lr 0.1, Constant, batch 128, 2 epochs"
    assert "80/10/10" in table.loc["`r0`", "setup"]
    assert table.loc["`r0`", "test loss"] == f"{r0['metrics.test/loss'].mean():.3f}"
    assert float(table.loc["`r0`", "minutes per run"]) == pytest.approx(r0["minutes"].mean(), abs=0.05)


def test_the_readme_section_between_the_markers_is_replaced(seeds, tmp_path, capsys):
    uri, runs = seeds
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{results.BEGIN}\nold table\n{results.END}\n\nkept\n")
    argv = ["--tracking-uri", uri, "--experiment", "results", "--overrides", *SHORT]
    assert results.main([*argv, "--write", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.endswith("kept\n")
    assert "| `r0` |" in text and "cores" in text
    assert results.provenance(runs) in text


def test_the_results_page_holds_the_markers_the_command_writes_between():
    page = (REPO / "docs" / "results.md").read_text()
    assert page.count(results.BEGIN) == 1 and page.count(results.END) == 1
    assert page.index(results.BEGIN) < page.index(results.END)
    assert results.replace_section(page, "new\n").count("new\n") == 1


def test_a_readme_without_markers_or_a_store_without_runs_is_refused(seeds, tmp_path, capsys):
    uri, _ = seeds
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    argv = ["--tracking-uri", uri, "--experiment", "results", "--write", str(readme)]
    assert results.main([*argv, "--overrides", *SHORT]) == 1
    assert "no results markers" in capsys.readouterr().err and readme.read_text() == "# no markers\n"
    assert results.main(["--tracking-uri", uri, "--experiment", "absent"]) == 1
    assert "No experiment 'absent'" in capsys.readouterr().err
    readme.write_text(f"{results.BEGIN}\nold table\n{results.END}\n")
    assert results.main(argv) == 1  # the presets as they are: every short run is left out, nothing is written
    error = capsys.readouterr().err
    assert "No finished run of a preset with the preset's config" in error and "train.epochs=2 (preset: 10)" in error
    assert readme.read_text() == f"{results.BEGIN}\nold table\n{results.END}\n"


def test_the_setup_names_momentum_clipping_and_augmentation():
    params = {
        "model.hidden": "[1024]", "optimizer": "SGD", "optimizer.lr": "0.01", "optimizer.momentum": "0.9",
        "optimizer.nesterov": "False", "schedule": "MultiStepDecay", "model.input_dropout": "0.0",
        "model.dropout": "0.0", "optimizer.weight_decay": "0.0001", "clipping": "ClipByValue",
        "clipping.value": "5.0", "augment": "Augmenter", "augment.elastic_alpha": "1.4",
        "train.batch_size": "128", "train.epochs": "80",
    }  # fmt: skip
    assert results.describe(pd.Series({f"params.{k}": v for k, v in params.items()})) == (
        "hidden 1024, SGD lr 0.01 momentum 0.9, MultiStepDecay, L2 0.0001, clipping to ±5.0, "
        "affine + elastic augmentation, batch 128, 80 epochs"
    )


T0 = 1_700_000_000_000  # ms


def log_preset_run(client, experiment_id, preset, seed, start_min, minutes, metrics, **changed) -> str:
    """A finished run of ``preset`` as train() logs it (the params of its composed config, ``changed`` aside),
    started ``start_min`` minutes after T0 and lasting ``minutes``, with these final ``metrics``."""
    params = experiment_params(compose_config(f"experiment={preset}", f"seed={seed}"), 784, 10) | changed
    start = T0 + int(start_min * 60_000)
    run = client.create_run(experiment_id, start, tags={"preset": preset}, run_name=f"{preset} seed {seed}")
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, value, start, 0) for key, value in metrics.items()],
        params=[Param(key, value) for key, value in params.items()],
    )
    client.set_terminated(run.info.run_id, end_time=start + int(minutes * 60_000))
    return run.info.run_id


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Runs logged as train() logs them, no training: r0 seed 0, seed 1, then seed 0 again with other results
    (the later run of a seed counts), then a 1-epoch check of r0 on 1,000 images; two MNIST runs of r2, then
    an r2 run on the Kaggle CSV (no test set: test/acc missing, test/loss NaN), then a run of a preset that
    no longer exists."""
    root = tmp_path_factory.mktemp("logged")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("logged", artifact_location=(root / "artifacts").as_uri())
    acc = lambda test, val, train, loss: {"test/acc": test, "val/acc": val, "train/acc": train, "test/loss": loss}  # noqa: E731
    runs = {
        "r0 seed 0": log_preset_run(client, experiment_id, "r0", 0, 0, 1, acc(0.90, 0.91, 0.95, 0.30)),
        "r0 seed 1": log_preset_run(client, experiment_id, "r0", 1, 10, 3, acc(0.94, 0.92, 0.97, 0.20)),
        "r0 seed 0 again": log_preset_run(client, experiment_id, "r0", 0, 20, 2, acc(0.96, 0.97, 0.99, 0.10)),
        "r0 check": log_preset_run(
            client,
            experiment_id,
            "r0",
            2,
            30,
            0.1,
            acc(0.5, 0.5, 0.5, 2.0),
            **{"train.epochs": "1", "dataset.subset": "1000"},
        ),
        "r2 seed 0": log_preset_run(client, experiment_id, "r2", 0, 40, 4, acc(0.85, 0.84, 0.86, 0.50)),
        "r2 seed 1": log_preset_run(client, experiment_id, "r2", 1, 50, 6, acc(0.87, 0.86, 0.88, 0.40)),
        "r2 csv": log_preset_run(
            client,
            experiment_id,
            "r2",
            0,
            60,
            1,
            {"val/acc": 0.9, "train/acc": 0.9, "test/loss": float("nan")},
            dataset="csv",
        ),
    }
    gone = client.create_run(experiment_id, T0 + 70 * 60_000, tags={"preset": "r9"}, run_name="r9 seed 0")
    client.set_terminated(gone.info.run_id, end_time=T0 + 71 * 60_000)
    runs["r9"] = gone.info.run_id
    return uri, runs


@pytest.mark.slow
def test_of_reruns_of_a_seed_the_latest_counts_whatever_it_scored(logged):
    """r0's seed 0 ran twice with different results: the table holds the later run's, figured by hand from
    the numbers logged (seed 0's second run: 96% test, 97% val, loss 0.10, 2 minutes; seed 1: 94%, 92%, 0.20,
    3 minutes). The first run's would give 92.00% ± 2.83, 91.50% ± 0.71, 0.250 and 2.0."""
    uri, _ = logged
    r0 = results.preset_table(results.preset_runs(uri, "logged")).set_index("preset").loc["`r0`"]
    assert r0["seeds"] == "0, 1"
    assert r0["test"] == "95.00% ± 1.41"  # 96 and 94: mean 95, sample std sqrt(2)
    assert r0["val"] == "94.50% ± 3.54"  # 97 and 92: mean 94.5, sample std 5 / sqrt(2)
    assert r0["test loss"] == "0.150" and r0["minutes per run"] == "2.5"


def test_runs_whose_config_is_not_their_presets_are_left_out_and_named(logged, capsys):
    """The 1-epoch check on 1,000 images, the Kaggle-CSV r2 run and the run of a removed preset are left out,
    one line each on stderr naming what differs; r2's row is its two MNIST runs, not the later CSV run."""
    uri, runs = logged
    assert results.main(["--tracking-uri", uri, "--experiment", "logged"]) == 0
    printed = capsys.readouterr()
    table = printed.out.split("\n\n")[0]
    assert "| `r2` | hidden 10, SGD lr 0.1, Constant, 42000 training images, full batch, 600 epochs |" in table
    assert "| 0, 1 | 86.00% ± 1.41 | 85.00% ± 1.41 | 87.00% ± 1.41 | 0.450 | 5.0 |" in table  # r2's MNIST runs
    assert "| 0, 1 | 95.00% ± 1.41 |" in table and "1000 training images" not in table and "csv" not in table
    assert printed.err.splitlines() == [
        f'left out {runs["r0 check"][:8]} "r0 seed 2" (r0, seed 2): dataset.subset=1000 (preset: (not set)), '
        "train.epochs=1 (preset: 10)",
        f'left out {runs["r2 csv"][:8]} "r2 seed 0" (r2, seed 0): dataset=csv (preset: mnist)',
        f'left out {runs["r9"][:8]} "r9 seed 0" (r9, seed ?): no such preset in conf/',
    ]
    assert "Left out, as runs whose config differs from their preset's: 1 of `r0`, 1 of `r2`, 1 of `r9`." in printed.out


@pytest.mark.slow
def test_write_refuses_a_table_that_lost_rows_the_page_has(logged, tmp_path, capsys):
    """A page whose tables hold r3 and R1's iteration 5, which the store does not give: nothing is written,
    exit 1, one paragraph naming the lost rows. A page holding only rows the store gives is written."""
    uri, _ = logged
    section = (
        "| preset | setup |\n|---|---|\n| `r0` | x |\n| `r2` | y |\n| `r3` | z |\n\nprovenance\n\n"
        "| iteration | run |\n|---|---|\n| 5 | lr 0.15 |\n"
    )
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\n{results.BEGIN}\n{section}{results.END}\n\nkept\n")
    before = page.read_text()
    argv = ["--tracking-uri", uri, "--experiment", "logged", "--write", str(page)]
    assert results.main(argv) == 1
    printed = capsys.readouterr()
    assert page.read_text() == before and printed.out == ""
    refusal = [line for line in printed.err.splitlines() if not line.startswith("left out ")]
    assert len(refusal) == 1 and refusal[0].startswith(f"results: Not writing {page}: its tables have 2 row(s)")
    assert "preset `r3`, iteration 5." in refusal[0] and "`r0`" not in refusal[0]
    page.write_text(f"# Results\n\n{results.BEGIN}\n| preset | setup |\n|---|---|\n| `r2` | y |\n{results.END}\n")
    assert results.main(argv) == 0
    assert "| `r0` |" in page.read_text() and "| `r2` |" in page.read_text()
