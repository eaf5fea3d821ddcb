"""The presets behind the results of ``docs/results.md``, R1's history as one multirun, and ``experiments.results``."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments import compare, results
from experiments.train import train
from tests.experiments.conftest import CONF, REPO

PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
HISTORY = sorted(path.stem for path in (CONF / "r1_history").glob("*.yaml"))
LEAN = ["tracking.log_model=false", "tracking.system_metrics=false", "train.progress=false"]


def test_results_cover_every_preset():
    assert sorted(results.PRESETS) == PRESETS


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
    return uri, results.preset_runs(uri, "history")


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
    assert dict(zip(grouped["claim"], grouped["runs"], strict=True))["not stated"] == 3


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """r0 and r3 on the digits set for two epochs, two seeds each (r0 twice with seed 0: the later run counts),
    after a one-epoch run of r3 with seed 2 (an older setup of the preset: it does not count)."""
    root = tmp_path_factory.mktemp("results")
    from tests.experiments.conftest import compose_config

    for preset, seed, epochs in [("r3", 2, 1), ("r0", 0, 2), ("r0", 0, 2), ("r0", 1, 2), ("r3", 0, 2), ("r3", 1, 2)]:
        overrides = [f"experiment={preset}", f"seed={seed}", "dataset=digits", f"train.epochs={epochs}", *LEAN]
        train(compose_config(*overrides, f"tracking.dir={root}", "tracking.experiment=results"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, results.preset_runs(uri, "results")


def test_the_table_is_mean_and_std_over_seeds_of_the_logged_runs(seeds):
    uri, runs = seeds
    assert sorted(runs["tags.preset"]) == ["r0", "r0", "r3", "r3"]  # r0 seed 0 ran twice: the later run counts
    assert sorted(runs.loc[runs["tags.preset"] == "r3", "params.seed"]) == ["0", "1"]  # not seed 2's older setup
    assert runs.attrs["older_setup"] == {"r3": 1}
    assert "Left out, as runs of a preset's earlier setup: 1 of `r3`." in results.provenance(runs)
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
    assert results.main(["--tracking-uri", uri, "--experiment", "results", "--write", str(readme)]) == 0
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
    assert results.main(["--tracking-uri", uri, "--experiment", "results", "--write", str(readme)]) == 1
    assert "no results markers" in capsys.readouterr().err and readme.read_text() == "# no markers\n"
    assert results.main(["--tracking-uri", uri, "--experiment", "absent"]) == 1
    assert "No experiment 'absent'" in capsys.readouterr().err


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
