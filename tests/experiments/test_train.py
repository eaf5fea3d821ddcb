"""``train(cfg)`` on digits, tracked in a temporary MLflow store and read back with ``MlflowClient``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import nn
from experiments.callbacks import Callback, FinalEvaluation, check_progress
from experiments.outcome import Pruned, StuckAtChance
from experiments.store import use_store
from experiments.train import train
from tests.experiments.conftest import inputs_by_context

REPO = Path(__file__).resolve().parents[2]
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "grad_norm", "epoch_time")
QUICK = ["dataset=digits", "model=mlp128", "train.progress=false"]
IMAGE = re.compile(r"^images/val_confusion\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+(\+compressed)?\.(png|webp)$")


def run_train(cfg) -> SimpleNamespace:
    """``train(cfg)`` with the final network and the data set caught on their way to the test evaluation."""
    caught = SimpleNamespace(objective=None, result=None, network=None, dataset=None)
    original = FinalEvaluation.on_train_end

    def spy(evaluation, loop):
        caught.network, caught.dataset = loop.network, evaluation.dataset
        return original(evaluation, loop)

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(FinalEvaluation, "on_train_end", spy)
            caught.result = train(cfg)
            caught.objective = caught.result.objective
    finally:
        use_store(previous)
    return caught


def git_head() -> str | None:
    """The commit of the checkout the code runs from (where the tracker asks git), None outside a checkout."""
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return git.stdout.strip() if git.returncode == 0 else None


def tracked_run(compose, store, experiment: str, *overrides: str) -> SimpleNamespace:
    cfg = compose(*QUICK, *store.overrides(experiment), *overrides)
    before = git_head()
    result = run_train(cfg)
    result.git_heads = {before, git_head()}  # a commit may land while the run trains
    result.cfg = cfg
    result.run = store.only_run(experiment)
    result.run_id = result.run.info.run_id
    result.artifacts = store.artifacts(result.run_id)
    return result


def history(store, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in store.client.get_metric_history(run_id, key))


def image_steps(artifacts: list[str]) -> dict[str, set[int]]:
    """{"png": steps, "webp": steps} of the ``val_confusion`` images MLflow 3 stores for ``log_image(key, step)``."""
    steps: dict[str, set[int]] = {"png": set(), "webp": set()}
    for path in artifacts:
        if path.startswith("images/"):
            match = IMAGE.match(path)
            assert match, f"unexpected image artifact {path}"
            assert (match.group(2) is not None) == (match.group(3) == "webp")
            steps[match.group(3)].add(int(match.group(1)))
    return steps


def policy_checkpoints(artifacts: list[str]) -> list[str]:
    """The checkpoints the policy writes (the training states in ``resume/`` are written whatever the policy)."""
    return [p for p in artifacts if p.startswith("checkpoints/")]


def same_params(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def all_policy(compose, mlflow_store):
    """4 epochs, checkpoint policy ``all``, confusion image every 2 epochs, no model, no misclassified grid."""
    return tracked_run(
        compose,
        mlflow_store,
        "train-policy-all",
        "train.epochs=4",
        "tracking.confusion_every=2",
        "tracking.checkpoints.policy=all",
        "tracking.log_model=false",
        "tracking.misclassified=0",
    )


@pytest.fixture(scope="module")
def best_and_last(compose, mlflow_store):
    """3 epochs, checkpoint policy ``best_and_last``, confusion image every 2 epochs, pyfunc model.

    Epoch 3 ends on the weights of epoch 1 (a relapse), so the best epoch (2) is not the last.
    """
    original = nn.Trainer.train_epoch
    after_epoch_1 = {}

    def relapsing_train_epoch(self, X, y, epoch, on_batch=None):
        result = original(self, X, y, epoch, on_batch)
        if epoch == 0:
            after_epoch_1.update({k: v.copy() for k, v in self.network.params.items()})
        elif epoch == 2:
            for k, v in after_epoch_1.items():
                self.network.params[k][...] = v
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.Trainer, "train_epoch", relapsing_train_epoch)
        return tracked_run(
            compose,
            mlflow_store,
            "train-policy-best-and-last",
            "train.epochs=3",
            "tracking.confusion_every=2",
            "tracking.checkpoints.policy=best_and_last",
            "tracking.misclassified=4",
        )


# ---------------------------------------------------------------------------- a finished run
@pytest.mark.parametrize("fixture", ["all_policy", "best_and_last"])
def test_run_finishes_and_returns_the_last_validation_accuracy(fixture, request, mlflow_store):
    result = request.getfixturevalue(fixture)
    assert result.run.info.status == "FINISHED" and result.run.info.end_time is not None
    epochs = result.cfg.train.epochs
    val_acc = history(mlflow_store, result.run_id, "val/acc")
    assert [step for step, _ in val_acc] == list(range(1, epochs + 1))
    assert result.objective == val_acc[-1][1]
    assert result.objective == result.network.evaluate(result.dataset.val.X, result.dataset.val.y)[1]


def test_params_are_the_choices_that_define_the_experiment(all_policy):
    params = all_policy.run.data.params
    assert set(params) == {
        "dataset",
        *(f"model.{k}" for k in ("hidden", "depth", "width", "n_params", "activation", "init", "dropout")),
        "model.input_dropout",
        "optimizer",
        *(f"optimizer.{k}" for k in ("lr", "momentum", "dampening", "nesterov", "weight_decay", "decay_bias")),
        "schedule",
        "schedule.T_max",
        "schedule.eta_min",
        "clipping",
        "augment",
        "train.batch_size",
        "train.epochs",
        "seed",
    }
    assert not any(key.startswith(("tracking.", "sweep_trial.")) for key in params)  # no bookkeeping
    assert (params["optimizer"], params["schedule"], params["clipping"], params["augment"]) == (
        "SGD",
        "CosineAnnealing",
        "NoClip",
        "none",
    )
    assert params["optimizer.lr"] == "0.1" and params["optimizer.momentum"] == "0.9"
    assert params["model.hidden"] == "[128]" and json.loads(params["model.hidden"]) == [128]
    # digits: 64 inputs, 10 classes; one hidden layer of 128
    assert (params["model.depth"], params["model.width"]) == ("1", "128")
    assert params["model.n_params"] == str(65 * 128 + 129 * 10)
    assert params["schedule.T_max"] == "4"  # cosine's ${train.epochs}, resolved
    assert params["train.epochs"] == "4" and params["train.batch_size"] == "128"
    assert params["dataset"] == "digits" and params["seed"] == "0" and params["optimizer.weight_decay"] == "0.0005"


def test_the_logged_config_is_resolved(all_policy, mlflow_store, tmp_path):
    """No ``${oc.env:...}`` or ``${train.epochs}`` left: the values the run used (what resume rebuilds from)."""
    text = mlflow_store.download(all_policy.run_id, "config.yaml", tmp_path).read_text()
    assert "${" not in text and "epochs: 4" in text
    assert "${oc.env:NNLAB_DATA_DIR" in (Path(__file__).parents[2] / "experiments" / "schema.py").read_text()


def test_float_params_are_logged_in_short_form():
    """As the runs table shows them: 3 significant digits where the repr is long, short ones as they are."""
    from experiments.tracking.naming import short

    assert short(1.9237305012e-06) == "1.92e-06" and short(0.058123456) == "0.0581"
    assert short(0.05) == "0.05" and short(0.0) == "0.0" and short(1e-05) == "1e-05" and short(128) == "128"


def test_tags_record_data_seed_versions_and_git_commit(all_policy):
    tags = all_policy.run.data.tags
    assert tags["dataset.name"] == "digits"
    assert tags["dataset.checksum"] == all_policy.dataset.checksum
    assert re.fullmatch(r"[0-9a-f]{64}", tags["dataset.checksum"])
    assert tags["seed"] == "0"
    assert tags["numpy.version"] == np.__version__
    if all_policy.git_heads != {None}:
        assert tags["mlflow.source.git.commit"] in all_policy.git_heads
        assert tags["git.dirty"] in ("true", "false")
    else:
        assert "mlflow.source.git.commit" not in tags


def test_every_epoch_metric_has_one_value_per_epoch_at_step_epoch(all_policy, mlflow_store):
    for key in METRICS:
        values = history(mlflow_store, all_policy.run_id, key)
        assert [step for step, _ in values] == [1, 2, 3, 4], key
        assert all(math.isfinite(value) for _, value in values), key
    for key in ("train/acc", "val/acc"):
        assert all(0.0 <= value <= 1.0 for _, value in history(mlflow_store, all_policy.run_id, key))
    lr = [value for _, value in history(mlflow_store, all_policy.run_id, "lr")]
    assert lr[0] == pytest.approx(0.1) and lr == sorted(lr, reverse=True) and lr[-1] < lr[0]  # cosine over 4 epochs
    train_loss = [value for _, value in history(mlflow_store, all_policy.run_id, "train/loss")]
    assert train_loss[-1] < train_loss[0]


def logged_table(mlflow_store, run_id: str, path: str) -> pd.DataFrame:
    """A table logged with ``mlflow.log_table``, found as MLflow finds tables (the run's ``mlflow.loggedArtifacts``)."""
    experiment_id = mlflow_store.client.get_run(run_id).info.experiment_id
    use_store(mlflow_store.uri)  # MlflowClient.load_table searches the runs of the current store
    return mlflow_store.client.load_table(experiment_id, path, run_ids=[run_id])


def test_validation_confusion_tables_every_k_epochs_count_the_validation_set(all_policy, mlflow_store):
    names = [p for p in all_policy.artifacts if p.startswith("confusion/val_epoch_")]
    assert names == ["confusion/val_epoch_002.json", "confusion/val_epoch_004.json"]  # confusion_every=2
    tables = json.loads(all_policy.run.data.tags["mlflow.loggedArtifacts"])  # what the UI shows as tables
    assert {"path": names[0], "type": "table"} in tables
    val_acc = dict(history(mlflow_store, all_policy.run_id, "val/acc"))
    for epoch, name in zip((2, 4), names):
        table = logged_table(mlflow_store, all_policy.run_id, name)
        assert list(table.columns) == ["true / predicted"] + [str(k) for k in range(10)]
        assert table["true / predicted"].tolist() == list(range(10))
        counts = table.drop(columns="true / predicted").to_numpy()
        assert counts.shape == (10, 10) and counts.dtype.kind == "i" and (counts >= 0).all()
        assert counts.sum() == len(all_policy.dataset.val.y)
        np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(all_policy.dataset.val.y, minlength=10))
        assert np.trace(counts) / counts.sum() == pytest.approx(val_acc[epoch])


@pytest.mark.parametrize("fixture", ["all_policy", "best_and_last"])
def test_the_validation_confusion_is_logged_as_tables_only(fixture, request):
    """No per-epoch image: at MLflow's 256-pixel thumbnail it could not be read, and it cost every epoch a figure
    (the tables and the test confusion figure say it in full)."""
    result = request.getfixturevalue(fixture)
    assert image_steps(result.artifacts) == {"png": set(), "webp": set()}


def test_policy_all_keeps_a_checkpoint_of_every_epoch(all_policy, mlflow_store, tmp_path):
    names = policy_checkpoints(all_policy.artifacts)
    assert names == [f"checkpoints/epoch_{epoch:03d}.npz" for epoch in range(1, 5)]
    val_acc = dict(history(mlflow_store, all_policy.run_id, "val/acc"))
    for epoch, name in enumerate(names, start=1):
        network = nn.load(mlflow_store.download(all_policy.run_id, name, tmp_path))
        val = all_policy.dataset.val
        assert network.evaluate(val.X, val.y)[1] == pytest.approx(val_acc[epoch], abs=1e-12)
    assert same_params(network.params, all_policy.network.params)


def test_policy_best_and_last_keeps_the_best_and_the_last_weights(best_and_last, mlflow_store, tmp_path):
    names = policy_checkpoints(best_and_last.artifacts)
    assert names == ["checkpoints/best.npz", "checkpoints/last.npz"]
    best = nn.load(mlflow_store.download(best_and_last.run_id, "checkpoints/best.npz", tmp_path / "best"))
    last = nn.load(mlflow_store.download(best_and_last.run_id, "checkpoints/last.npz", tmp_path / "last"))
    metrics = best_and_last.run.data.metrics
    val_acc = dict(history(mlflow_store, best_and_last.run_id, "val/acc"))
    assert metrics["best_epoch"] == 2 and val_acc[3] < val_acc[2] == metrics["val/best_acc"]
    val = best_and_last.dataset.val
    assert best.evaluate(val.X, val.y)[1] == pytest.approx(val_acc[2], abs=1e-12)
    assert last.evaluate(val.X, val.y)[1] == pytest.approx(val_acc[3], abs=1e-12)
    assert same_params(last.params, best_and_last.network.params)


def test_final_metrics_are_the_test_results_of_the_final_network(all_policy, mlflow_store):
    metrics = all_policy.run.data.metrics
    test = all_policy.dataset.test
    test_loss, test_acc, probs = all_policy.network.evaluate(test.X, test.y, probabilities=True)
    assert metrics["test/acc"] == pytest.approx(test_acc) and metrics["test/loss"] == pytest.approx(test_loss)
    val_acc = history(mlflow_store, all_policy.run_id, "val/acc")
    best_step, best_value = max(val_acc, key=lambda sv: (sv[1], -sv[0]))
    assert metrics["val/best_acc"] == best_value and metrics["best_epoch"] == best_step
    assert not [key for key in metrics if "class" in key]  # per-class results are a table, not ten metrics
    assert metrics["test/acc"] > 0.8  # four epochs on digits


def test_per_class_precision_recall_f1_of_the_test_set_as_a_table(all_policy, mlflow_store):
    table = logged_table(mlflow_store, all_policy.run_id, "per_class/test.json")
    y, predicted = all_policy.dataset.test.y, all_policy.network.predict(all_policy.dataset.test.X)
    assert table["class"].tolist() == list(range(10))
    for k, row in table.iterrows():
        recall, precision = np.mean(predicted[y == k] == k), np.mean(y[predicted == k] == k)
        # rounded to 4 decimals, as the UI shows them
        assert row["recall"] == pytest.approx(round(recall, 4), abs=1e-12)
        assert row["precision"] == pytest.approx(round(precision, 4), abs=1e-12)
        assert row["f1"] == pytest.approx(round(2 * precision * recall / (precision + recall), 4), abs=1e-12)
        assert row["support"] == np.sum(y == k)


def test_figures_and_test_confusion_are_logged(best_and_last, mlflow_store):
    for name in ("figures/curves.png", "figures/test_confusion.png", "figures/misclassified.png"):
        assert name in best_and_last.artifacts
    counts = logged_table(mlflow_store, best_and_last.run_id, "confusion/test.json").drop(columns="true / predicted")
    assert counts.to_numpy().sum() == len(best_and_last.dataset.test.y)


def test_misclassified_zero_finishes_the_run_without_the_grid(all_policy):
    # It used to divide by zero in the grid layout after training and close the run as FAILED.
    assert all_policy.run.info.status == "FINISHED"
    assert "figures/misclassified.png" not in all_policy.artifacts and "figures/curves.png" in all_policy.artifacts


def test_training_and_test_sets_are_logged_as_dataset_inputs(all_policy):
    inputs = inputs_by_context(all_policy.run)
    assert sorted(inputs) == ["test", "training"]
    assert inputs["test"].dataset.name == "digits-test"
    assert json.loads(inputs["test"].dataset.profile)["features_shape"] == list(all_policy.dataset.test.X.shape)
    inputs = [inputs["training"]]
    dataset = inputs[0].dataset
    assert dataset.name == "digits" and dataset.digest
    assert json.loads(dataset.source)["uri"].endswith("/sklearn/datasets/data/digits.csv.gz")
    assert {tag.key: tag.value for tag in inputs[0].tags}["checksum"] == all_policy.dataset.checksum
    assert json.loads(dataset.profile)["features_shape"] == list(all_policy.dataset.train.X.shape)
    assert {tag.key: tag.value for tag in inputs[0].tags}["mlflow.data.context"] == "training"


def test_no_model_is_logged_when_log_model_is_off(all_policy, mlflow_store):
    assert all_policy.run.outputs.model_outputs == []
    use_store(mlflow_store.uri)
    found = mlflow.search_logged_models(
        experiment_ids=[all_policy.run.info.experiment_id], filter_string=f"source_run_id = '{all_policy.run_id}'"
    )
    assert len(found) == 0


def test_the_last_and_the_best_epoch_are_logged_models_with_their_epochs(best_and_last, mlflow_store):
    # MLflow 3 logs models as LoggedModels outside the run's artifacts; the run lists them in outputs.
    use_store(mlflow_store.uri)
    outputs = {o.model_id: o.step for o in best_and_last.run.outputs.model_outputs}
    logged = mlflow.search_logged_models(
        experiment_ids=[best_and_last.run.info.experiment_id],
        filter_string=f"source_run_id = '{best_and_last.run_id}'",
        output_format="list",
    )
    models = {m.tags["nnlab.checkpoint"]: m for m in logged}
    assert len(logged) == 2
    assert models["last"].name == "mlp-64-128-10-e3" and models["best"].name == "mlp-64-128-10-best-e2"
    assert models["best"].tags["mlflow.note.content"].startswith("mlp-64-128-10: ")
    assert outputs == {models["last"].model_id: 3, models["best"].model_id: 2}  # the epochs, as steps
    assert models["last"].tags["epoch"] == "3" and models["best"].tags["epoch"] == "2"
    # the test metrics belong to the last model and name the test set (the UI's dataset column)
    linked = {m.key: m for m in models["last"].metrics}
    assert linked["test/acc"].value == best_and_last.run.data.metrics["test/acc"]
    assert linked["test/acc"].dataset_name == "digits-test"
    test, val = best_and_last.dataset.test, best_and_last.dataset.val
    for checkpoint, network in (("last", best_and_last.network), ("best", None)):
        loaded = mlflow.pyfunc.load_model(models[checkpoint].model_uri)
        if network is None:  # the best epoch's weights: they validate as well as epoch 2 did
            probs = loaded.predict(val.X).filter(like="prob_").to_numpy()
            val_acc = dict(history(mlflow_store, best_and_last.run_id, "val/acc"))
            assert np.mean(probs.argmax(axis=1) == val.y) == pytest.approx(val_acc[2], abs=1e-12)
            continue
        predicted = loaded.predict(test.X)
        expected = network.predict_proba(test.X)
        np.testing.assert_array_equal(predicted["digit"].to_numpy(), expected.argmax(axis=1))
        np.testing.assert_allclose(predicted.filter(like="prob_").to_numpy(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not os.environ.get("NNLAB_DATA_DIR"), reason="NNLAB_DATA_DIR is not set: no MNIST files here")
def test_mnist_subset_run_is_tracked(compose, mlflow_store, experiment_name):
    result = run_train(
        compose(
            "dataset=mnist",
            "dataset.subset=1000",
            "dataset.download=false",
            "train.epochs=2",
            "model=mlp128",
            "train.progress=false",
            "tracking.log_model=false",
            "train.divergence.check_after=3",
            *mlflow_store.overrides(experiment_name),
        )
    )
    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FINISHED" and run.data.tags["dataset.name"] == "mnist"
    assert json.loads(inputs_by_context(run)["training"].dataset.profile)["features_shape"] == [1000, 784]
    assert result.objective > 0.3 and math.isfinite(run.data.metrics["test/acc"])


# ---------------------------------------------------------------------------- runs that do not finish
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_diverging_run_returns_nan_and_is_closed_as_failed(compose, mlflow_store, experiment_name):
    cfg = compose(*QUICK, "train.epochs=3", "optimizer.lr=1e6", *mlflow_store.overrides(experiment_name))
    result = run_train(cfg).result
    assert math.isnan(result.objective) and result.status == "diverged" and "diverged" in result.reason
    run = mlflow_store.only_run(experiment_name)
    assert result.run_id == run.info.run_id and result.reason == run.data.tags["nnlab.failure_reason"]
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["nnlab.failure_reason"]
    assert run.data.tags["nnlab.failed_epoch"] == "1"
    # the reason names the layer whose gradient norm exploded first, with its step (the gradients of the
    # update before the non-finite loss are measured as it happens)
    assert re.search(r"\(the gradient norm of dense\d exploded first: it .* at epoch 1, step \d+\)", result.reason)
    assert "test/acc" not in run.data.metrics and run.outputs.model_outputs == []


def test_run_stuck_at_chance_is_closed_as_failed_at_that_epoch(compose, mlflow_store, experiment_name):
    # lr 3 blows the loss up to ~50 in epoch 1 (finite: not a NaN) while accuracy sits at chance.
    cfg = compose(*QUICK, "train.epochs=4", "optimizer.lr=3", *mlflow_store.overrides(experiment_name))
    assert math.isnan(run_train(cfg).objective)
    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FAILED"
    assert "chance level" in run.data.tags["nnlab.failure_reason"]
    assert "above 4.61 (twice a uniform guess's): the run diverged" in run.data.tags["nnlab.failure_reason"]
    assert run.data.tags["nnlab.failed_epoch"] == "1"
    assert [step for step, _ in history(mlflow_store, run.info.run_id, "val/acc")] == [1]


def divergence(check_after: int = 1, chance_margin: float = 0.02):
    return OmegaConf.create({"check_after": check_after, "chance_margin": chance_margin})


def rows(*epochs: tuple[float, float, float, float]) -> list[dict]:
    """History rows from (train loss, val loss, val acc, grad norm) per epoch."""
    return [
        {"epoch": i, "train/loss": t, "val/loss": v, "val/acc": a, "grad_norm": g}
        for i, (t, v, a, g) in enumerate(epochs, start=1)
    ]


BLOWN_UP = rows((894.6, 35.1, 0.10, 5.0))  # lr 10: the loss explodes in epoch 1
RISING = rows((2.40, 2.30, 0.10, 1.0), (2.90, 2.80, 0.10, 1.2))
EXPLODING_GRADIENT = rows((2.40, 2.30, 0.10, 1.0), (2.38, 2.29, 0.10, 40.0))
STALLED = rows((2.35, 2.302585, 0.10, 1.0), (2.31, 2.302585, 0.10, 1.0))  # dead units: the loss is stuck at ln(10)
TOO_SLOW = rows((2.58, 2.53, 0.09, 1.0), (2.53, 2.48, 0.08, 1.0))  # lr 1e-4: falling, still at chance


@pytest.mark.parametrize(
    ("history", "cause"),
    [
        (BLOWN_UP, "training loss is 894.6, above 4.61"),
        (RISING, "training loss rose from 2.4000 to 2.9000"),
        (EXPLODING_GRADIENT, "gradient norm grew from 1 to 40"),
        (STALLED, "validation loss is stuck at 2.30259"),
    ],
    ids=["blown-up", "rising", "exploding-gradient", "stalled"],
)
def test_a_run_that_blew_up_is_stopped_with_its_cause_and_told_to_lower_the_rate(history, cause):
    with pytest.raises(StuckAtChance, match=rf"at chance level .*{cause}.*diverged\. Lower optimizer\.lr"):
        check_progress(history, 10, divergence())


@pytest.mark.parametrize(
    ("clipper", "advice"),
    [
        (None, "Lower optimizer.lr, or add clipping=value or clipping=norm."),
        (nn.NoClip(), "Lower optimizer.lr, or add clipping=value or clipping=norm."),
        (nn.ClipByValue(5.0), "Lower optimizer.lr, or clip tighter than clipping.value=5."),  # R1 already clips
        (nn.ClipByNorm(2.5), "Lower optimizer.lr, or clip tighter than clipping.max_norm=2.5."),
    ],
)
def test_the_advice_after_a_divergence_adds_clipping_only_to_a_run_without_it(clipper, advice):
    with pytest.raises(StuckAtChance) as caught:
        check_progress(BLOWN_UP, 10, divergence(), clipper)
    assert str(caught.value).endswith(f"the run diverged. {advice}")


def test_a_diverged_loss_in_a_clipped_run_is_told_to_clip_tighter(compose):
    result = train(compose(*QUICK, "train.epochs=2", "optimizer.lr=1e4", "clipping=value", "tracking=none"))
    assert result.status == "diverged" and result.reason.endswith("clip tighter than clipping.value=5.")


def test_a_run_without_a_test_set_says_so_in_the_log(caplog):
    from types import SimpleNamespace

    dataset = SimpleNamespace(name="csv", test=None)
    loop = SimpleNamespace(history=[{"epoch": 1, "val/acc": 0.5}], final={})
    with caplog.at_level("WARNING", logger="nnlab"):
        FinalEvaluation(dataset).on_train_end(loop)
    assert loop.final == {"val/best_acc": 0.5, "best_epoch": 1}
    assert "csv has no labelled test set here" in caplog.text and "no test metrics are logged" in caplog.text


def test_a_run_too_slow_to_leave_chance_goes_on_with_advice_to_raise_the_rate():
    warning = check_progress(TOO_SLOW, 10, divergence())
    assert "learns too slowly" in warning and "Raise optimizer.lr" in warning and "diverged" not in warning


@pytest.mark.parametrize(
    ("val_acc", "epoch", "num_classes", "check_after", "judged"),
    [
        (0.115, 3, 10, 1, True),
        (0.0, 5, 10, 5, True),
        (0.13, 1, 10, 1, False),
        (0.95, 9, 10, 1, False),
        (0.10, 4, 10, 5, False),  # before check_after: not judged yet
        (0.51, 1, 2, 1, True),  # two classes: chance is 0.5
        (0.60, 1, 2, 1, False),
    ],
)
def test_only_accuracy_within_the_margin_of_chance_is_judged(val_acc, epoch, num_classes, check_after, judged):
    history = [{"epoch": epoch, "train/loss": 100.0, "val/loss": 100.0, "val/acc": val_acc, "grad_norm": 1.0}]
    if judged:
        with pytest.raises(StuckAtChance, match=rf"chance level .* after epoch {epoch}"):
            check_progress(history, num_classes, divergence(check_after))
    else:
        assert check_progress(history, num_classes, divergence(check_after)) is None


@pytest.mark.slow
def test_a_too_slow_run_finishes_with_a_warning_tag(compose, mlflow_store, experiment_name):
    cfg = compose(*QUICK, "optimizer.lr=1e-4", "train.epochs=2", *mlflow_store.overrides(experiment_name))
    result = train(cfg)
    assert result.status == "finished"
    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "FINISHED" and "learns too slowly" in run.data.tags["nnlab.warning"]


def test_interrupt_closes_the_run_as_killed_with_the_last_weights(
    compose, mlflow_store, experiment_name, monkeypatch, tmp_path
):
    original = nn.Trainer.train_epoch
    after_epoch_1 = {}

    def interrupted_in_epoch_2(self, X, y, epoch, on_batch=None):
        if epoch == 1:  # 0-based: the run's epoch 2
            after_epoch_1.update({k: v.copy() for k, v in self.network.params.items()})
            raise KeyboardInterrupt
        return original(self, X, y, epoch, on_batch)

    monkeypatch.setattr(nn.Trainer, "train_epoch", interrupted_in_epoch_2)
    # every_k with k=5 writes nothing in epoch 1: last.npz can only come from the interrupt.
    cfg = compose(
        *QUICK, "train.epochs=3", "tracking.checkpoints.policy=every_k", *mlflow_store.overrides(experiment_name)
    )
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg)
    run = mlflow_store.only_run(experiment_name)
    assert run.info.status == "KILLED"
    assert run.data.tags["nnlab.failed_epoch"] == "2" and "interrupted" in run.data.tags["nnlab.failure_reason"]
    assert policy_checkpoints(mlflow_store.artifacts(run.info.run_id)) == ["checkpoints/last.npz"]
    last = nn.load(mlflow_store.download(run.info.run_id, "checkpoints/last.npz", tmp_path))
    assert after_epoch_1 and same_params(last.params, after_epoch_1)
    for key in ("train/loss", "val/acc", "lr"):
        assert [step for step, _ in history(mlflow_store, run.info.run_id, key)] == [1]
    assert run.outputs.model_outputs == []


def test_a_callback_can_prune_a_run_nested_under_a_parent_with_extra_tags(compose, mlflow_store, experiment_name):
    client = mlflow_store.client
    experiment_id = client.create_experiment(experiment_name, artifact_location=(mlflow_store.dir / "sweep").as_uri())
    parent_id = client.create_run(experiment_id, run_name="sweep").info.run_id
    seen = []

    class PruneAtTwo(Callback):
        def on_epoch_end(self, loop, metrics):
            seen.append((loop.epoch, metrics["val/acc"], self.run_id))
            if loop.epoch == 2:
                raise Pruned("pruned by the sweep at epoch 2")

    cfg = compose(
        *QUICK,
        "train.epochs=4",
        *mlflow_store.overrides(experiment_name),
        f"tracking.parent_run_id='{parent_id}'",
        "+tracking.tags.trial=7",
    )
    result = train(cfg, callbacks=[PruneAtTwo()])
    (run,) = [r for r in mlflow_store.runs(experiment_name) if r.info.run_id != parent_id]
    assert (result.status, result.run_id) == ("pruned", run.info.run_id)
    assert result.reason == "pruned by the sweep at epoch 2"
    assert math.isnan(result.objective) and [row["epoch"] for row in result.history] == [1, 2]
    assert run.info.status == "KILLED"
    tags = run.data.tags
    assert tags["nnlab.state"] == "pruned" and tags["nnlab.failed_epoch"] == "2" and tags["trial"] == "7"
    assert tags["mlflow.parentRunId"] == parent_id
    assert seen == [(epoch, acc, run.info.run_id) for epoch, acc in history(mlflow_store, run.info.run_id, "val/acc")]
    assert client.get_run(parent_id).info.status == "RUNNING"  # the sweep's run is left to the sweep


# ---------------------------------------------------------------------------- reproducibility
def test_same_seed_gives_the_same_objective_and_weights(compose):
    overrides = [*QUICK, "train.epochs=2", "model.dropout=0.5", "tracking=none"]  # shuffling and dropout
    first, second = (run_train(compose(*overrides)) for _ in range(2))
    assert first.objective == second.objective
    assert first.network is not second.network and same_params(first.network.params, second.network.params)
    other = run_train(compose(*overrides, "seed=1"))
    assert not same_params(first.network.params, other.network.params)


def test_logged_losses_and_confusion_matrices_match_an_independent_computation(
    compose, mlflow_store, experiment_name, tmp_path
):
    """train/loss is the mean over examples (not batches), and the logged confusion matrices have true labels
    as rows: both recomputed here from the final network, which a learning rate of 1e-12 leaves as it was."""
    cfg = compose(
        *QUICK,
        "train.epochs=1",
        "optimizer.lr=1e-12",
        "tracking.log_model=false",
        *mlflow_store.overrides(experiment_name),
    )
    result = train(cfg)
    run = mlflow_store.only_run(experiment_name)
    network = nn.load(mlflow_store.download(run.info.run_id, "checkpoints/last.npz", tmp_path))
    dataset = nn.data.load_dataset("digits", seed=0)
    loss, accuracy = network.evaluate(dataset.train.X, dataset.train.y)
    assert result.history[0]["train/loss"] == pytest.approx(loss, rel=1e-4)
    assert run.data.metrics["train/acc"] == pytest.approx(accuracy, abs=1e-6)
    for split, path in (("val", "confusion/val_epoch_001.json"), ("test", "confusion/test.json")):
        part = getattr(dataset, split)
        expected = np.zeros((10, 10), dtype=int)
        np.add.at(expected, (part.y, network.predict(part.X)), 1)
        logged = logged_table(mlflow_store, run.info.run_id, path).drop(columns="true / predicted").to_numpy()
        assert np.array_equal(logged, expected), split
        assert not np.array_equal(expected, expected.T)  # a transposed matrix would differ


def test_the_trainer_gets_the_configured_optimizer_clipper_and_augmenter(compose, monkeypatch):
    """The wiring from config to the training loop, checked on the objects the Trainer receives: a
    clipper, weight decay or augmenter dropped on the way (as ``clipping=`` once was) fails here."""
    seen = {}
    original = nn.Trainer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["trainer"] = self

    monkeypatch.setattr(nn.Trainer, "__init__", spy)
    cfg = compose(*QUICK, "train.epochs=1", "tracking=none", "clipping=value", "clipping.value=0.5",
                  "optimizer.weight_decay=0.01", "augment=affine", "train.batch_size=64")  # fmt: skip
    train(cfg)
    trainer = seen["trainer"]
    assert isinstance(trainer.clipper, nn.ClipByValue) and trainer.clipper.value == 0.5
    assert isinstance(trainer.optimizer, nn.SGD) and trainer.optimizer.weight_decay == 0.01
    assert isinstance(trainer.augmenter, nn.Augmenter) and trainer.augmenter.image_shape == (8, 8)
    assert trainer.batch_size == 64


def test_the_run_description_says_the_command_the_network_and_how_it_ended(compose, mlflow_store, experiment_name):
    cfg = compose(*QUICK, "train.epochs=2", "tracking.log_model=false", *mlflow_store.overrides(experiment_name))
    result = train(cfg)
    run = mlflow_store.only_run(experiment_name)
    note = run.data.tags["mlflow.note.content"]
    assert "python experiments/run.py" in note and "64-128-10 network (9,610 parameters), SGD lr 0.1" in note
    assert f"Finished after 2 epochs: test accuracy {result.final['test/acc']:.4f}" in note
    assert run.data.tags["nnlab.state"] == "finished"


def test_a_diverged_run_is_told_from_a_crashed_one_by_its_state(compose, mlflow_store, experiment_name):
    cfg = compose(*QUICK, "train.epochs=3", "optimizer.lr=3", *mlflow_store.overrides(experiment_name))
    assert train(cfg).status == "diverged"
    run = mlflow_store.only_run(experiment_name)
    assert run.data.tags["nnlab.state"] == "diverged"
    note = run.data.tags["mlflow.note.content"]
    assert f"{run.data.tags['nnlab.failure_reason']}\n" in note  # in full
    assert re.match(r"\*\*0\.\d{4} val acc · diverged at epoch 1\*\*", note), note


@pytest.mark.slow
def test_register_as_registers_the_final_model_as_a_new_version(compose, mlflow_store):
    first = tracked_run(compose, mlflow_store, "register-as", "train.epochs=2", "tracking.register_as=digits-mlp128")
    versions = mlflow_store.client.search_model_versions("name = 'digits-mlp128'")
    assert [(v.version, v.run_id) for v in versions] == [(1, first.run_id)]
    (last,) = [o.model_id for o in first.run.outputs.model_outputs if o.step == 2]
    assert versions[0].source == f"models:/{last}" and versions[0].tags["nnlab.checkpoint"] == "last"  # not the best
    plain = tracked_run(compose, mlflow_store, "register-as-off", "train.epochs=2")  # the default: nothing registered
    assert plain.run_id not in {v.run_id for v in mlflow_store.client.search_model_versions()}


@pytest.mark.parametrize("enabled", [True, False])
def test_system_metrics_are_logged_per_run_unless_turned_off(compose, mlflow_store, enabled):
    mlflow.set_system_metrics_sampling_interval(0.2)  # MLflow samples every 10 s: too slow for a 2 s run
    try:
        result = tracked_run(
            compose,
            mlflow_store,
            f"system-metrics-{enabled}",
            "train.epochs=10",
            "tracking.log_model=false",
            f"tracking.system_metrics={str(enabled).lower()}",
        )
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
    system = {key for key in result.run.data.metrics if key.startswith("system/")}
    if enabled:
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    else:
        assert system == set()


# ---------------------------------------------------------------------------- early stopping and diagnostics
class EpochWeights(Callback):
    """Keeps a copy of the weights after every epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, np.ndarray]] = {}

    def on_epoch_end(self, loop, metrics) -> None:
        self.weights[loop.epoch] = {k: v.copy() for k, v in loop.network.params.items()}


STOP_AT_4 = [  # nothing improves val/acc by 1.0: the best is epoch 1, the stop comes after 3 more epochs
    "callbacks=early_stopping",
    "callbacks.early_stopping.monitor=val/acc",
    "callbacks.early_stopping.mode=max",
    "callbacks.early_stopping.patience=3",
    "callbacks.early_stopping.min_delta=1.0",
]


@pytest.mark.slow
def test_early_stopping_finishes_the_run_on_the_best_epochs_weights(compose, mlflow_store, experiment_name):
    seen = EpochWeights()
    cfg = compose(*QUICK, "train.epochs=20", *STOP_AT_4, *mlflow_store.overrides(experiment_name))
    result = train(cfg, callbacks=[seen])
    run = mlflow_store.only_run(experiment_name)
    assert result.status == "finished" and run.info.status == "FINISHED" and len(result.history) == 4
    tags = run.data.tags
    assert (tags["nnlab.stopped_early"], tags["nnlab.kept_epoch"]) == ("4", "1")
    assert "stopped early at epoch 4: val/acc did not improve" in tags["mlflow.note.content"]
    assert "on the weights of epoch 1" in tags["mlflow.note.content"]
    network = nn.load(mlflow_store.download(run.info.run_id, "checkpoints/last.npz", mlflow_store.dir / "w"))
    test = nn.data.load_dataset("digits", seed=0).test
    use_store(mlflow_store.uri)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    (model,) = [m for m in models if m.tags["nnlab.checkpoint"] == "last"]
    assert model.tags["epoch"] == "1"  # the final model holds epoch 1's weights
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(test.X).filter(like="prob_").to_numpy()
    epoch_1 = nn.mlp([64, 128, 10])
    epoch_1.set_params(seen.weights[1])
    np.testing.assert_allclose(loaded, epoch_1.predict_proba(test.X), rtol=1e-6)
    assert run.data.metrics["test/acc"] == pytest.approx(epoch_1.evaluate(test.X, test.y)[1])
    assert not same_params(network.params, seen.weights[1])  # last.npz: epoch 4's weights, as trained
    # one "best": early stopping's (its monitor and min_delta), not the highest val/acc, which a later epoch has
    val_acc = dict(history(mlflow_store, run.info.run_id, "val/acc"))
    assert max(val_acc.values()) > val_acc[1]
    assert run.data.metrics["best_epoch"] == 1 and run.data.metrics["val/best_acc"] == val_acc[1]
    assert len(models) == 1  # no "-best" model of another epoch: the kept one is the best
    assert {m.key: m.value for m in model.metrics}["test/acc"] == run.data.metrics["test/acc"]  # the kept model's
    result = f"{run.data.metrics['test/acc']:.4f} test acc · {val_acc[1]:.4f} val acc · epoch 1 of 4 · finished"
    assert tags["nnlab.result"] == result and tags["mlflow.note.content"].startswith(f"**{result}**")
    assert model.name == "mlp-64-128-10-e1"
    assert f"run {run.info.run_name!r}, epoch 1" in model.tags["mlflow.note.content"]


@pytest.mark.slow
def test_a_run_stopped_on_val_loss_names_its_best_epoch_by_that_metric(compose, mlflow_store, experiment_name):
    stop = ["callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1.0"]
    cfg = compose(*QUICK, "train.epochs=20", *stop, *mlflow_store.overrides(experiment_name))
    train(cfg)
    run = mlflow_store.only_run(experiment_name)
    val_acc = dict(history(mlflow_store, run.info.run_id, "val/acc"))
    assert run.data.metrics["best_epoch"] == 1 and max(val_acc.values()) > val_acc[1]  # not the highest val/acc
    expected = f"validation accuracy {val_acc[1]:.4f} at the best epoch by val/loss, 1"
    assert expected in run.data.tags["mlflow.note.content"]
    assert "best validation accuracy" not in run.data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_early_stopping_survives_a_resume(compose, mlflow_store, tmp_path):
    """Interrupted at epoch 2, resumed: it stops at epoch 4 on epoch 1's weights, bit for bit like a run
    never interrupted."""
    from experiments import resume as resume_cmd

    class Interrupt(Callback):
        def on_epoch_end(self, loop, metrics):
            if loop.epoch == 2:
                raise KeyboardInterrupt

    overrides = [*QUICK, "train.epochs=20", *STOP_AT_4, "tracking.log_model=false"]
    train(compose(*overrides, *mlflow_store.overrides("es-whole")))
    whole = mlflow_store.only_run("es-whole")
    with pytest.raises(KeyboardInterrupt):
        train(compose(*overrides, *mlflow_store.overrides("es-cut")), callbacks=[Interrupt()])
    cut = mlflow_store.only_run("es-cut")
    resume_cmd.resume(cut.info.run_id, mlflow_store.uri)
    resumed = mlflow_store.client.get_run(cut.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert (resumed.data.tags["nnlab.stopped_early"], resumed.data.tags["nnlab.kept_epoch"]) == ("4", "1")
    cut_weights, whole_weights = (  # epoch 4's weights, as trained
        nn.load(mlflow_store.download(run_id, "checkpoints/last.npz", tmp_path / run_id)).params
        for run_id in (cut.info.run_id, whole.info.run_id)
    )
    assert same_params(cut_weights, whole_weights)
    assert resumed.data.metrics["test/acc"] == whole.data.metrics["test/acc"]  # epoch 1's weights in both


def test_per_layer_diagnostics_are_logged_under_watch_unless_turned_off(all_policy, compose, mlflow_store):
    metrics = all_policy.run.data.metrics
    expected = {f"watch/dense{i}/{k}" for i in (0, 1) for k in ("weight_norm", "grad_norm", "update_ratio")}
    expected |= {f"watch/relu0/{k}" for k in ("mean", "std", "dead_fraction")}
    assert expected == {k for k in metrics if k.startswith("watch/")}
    assert [step for step, _ in history(mlflow_store, all_policy.run_id, "watch/dense0/grad_norm")] == [1, 2, 3, 4]
    assert 1e-6 < metrics["watch/dense0/update_ratio"] < 1.0 and 0 <= metrics["watch/relu0/dead_fraction"] <= 1
    weights = all_policy.network.params["dense1.W"]
    assert metrics["watch/dense1/weight_norm"] == pytest.approx(float(np.linalg.norm(weights)), rel=1e-5)
    off = tracked_run(compose, mlflow_store, "diagnostics-off", "train.epochs=1", "train.diagnostics=false")
    assert not [k for k in off.run.data.metrics if k.startswith("watch/")]
    assert not math.isnan(off.run.data.metrics["grad_norm"])  # the global norm is measured all the same


@pytest.mark.slow
def test_a_mostly_dead_layer_is_named_in_the_description(compose, mlflow_store, experiment_name):
    class KillUnits(Callback):  # 100 of the 128 units of the hidden ReLU can never fire again
        def on_train_start(self, loop) -> None:
            loop.network.params["dense0.b"][:100] = -1e4

    cfg = compose(*QUICK, "train.epochs=2", "tracking.log_model=false", *mlflow_store.overrides(experiment_name))
    assert train(cfg, callbacks=[KillUnits()]).status == "finished"
    run = mlflow_store.only_run(experiment_name)
    dead = run.data.metrics["watch/relu0/dead_fraction"]
    assert dead >= 100 / 128
    assert (
        f"More than half of a layer's units are dead on the validation set (relu0 {dead:.0%})"
        in (run.data.tags["mlflow.note.content"])
    )
    assert run.data.tags["nnlab.warning"] == f"dead units: relu0 {dead:.0%}"
