"""Trainer and fit: learning, full batch, divergence, determinism, resuming, history, dtype, gradcheck CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nn
import nn.callbacks
from nn.clipping import ClipByValue
from nn.network import mlp
from nn.optimizers import SGD, Adam
from nn.schedules import CosineAnnealing, ReduceOnPlateau, Schedule, Warmup
from nn.training import Diverged, EpochResult, Trainer, fit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("elementwise_kernels")  # NumPy's passes, then the compiled ones


def blobs(seed=0, n=300, d=10, k=3):
    centers = np.random.default_rng(100).standard_normal((k, d)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def params_copy(net):
    return {k: v.copy() for k, v in net.params.items()}


def assert_params_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_trainer_reduces_loss_on_separable_data():
    X, y = blobs()
    net = mlp([10, 16, 3], rng=np.random.default_rng(0))
    trainer = Trainer(net, SGD(lr=0.05, momentum=0.9), batch_size=32, rng=np.random.default_rng(0))
    loss_before, _ = net.evaluate(X, y)
    results = [trainer.train_epoch(X, y, epoch) for epoch in range(5)]
    loss_after, acc_after = net.evaluate(X, y)
    assert loss_after < 0.1 * loss_before
    assert acc_after > 0.95
    assert results[-1].loss < results[0].loss
    assert isinstance(results[0], EpochResult) and results[0].epoch == 0


def test_epoch_result_fields():
    X, y = blobs()
    net = mlp([10, 16, 3], rng=np.random.default_rng(0))
    schedule = Warmup(epochs=2, start_factor=0.1)
    trainer = Trainer(net, SGD(lr=0.1), schedule, batch_size=64, rng=np.random.default_rng(0), grad_norm_every=1)
    result = trainer.train_epoch(X, y, 0)
    assert result.lr == pytest.approx(schedule.lr_at(0.1, 4 / 5), rel=1e-12)
    assert np.isfinite(result.grad_norm) and result.grad_norm > 0
    assert 0 <= result.accuracy <= 1 and result.seconds >= 0
    assert set(result.as_dict()) == {"epoch", "loss", "accuracy", "lr", "grad_norm", "seconds"}


@pytest.mark.parametrize("batch_size", [None, 0])
def test_full_batch_takes_one_step_per_epoch(batch_size):
    X, y = blobs()
    net = mlp([10, 16, 3], rng=np.random.default_rng(0))
    trainer = Trainer(net, SGD(lr=0.1, momentum=0.9), batch_size=batch_size, rng=np.random.default_rng(0))
    calls = []
    losses = [trainer.train_epoch(X, y, e, on_batch=lambda *args: calls.append(args)).loss for e in range(20)]
    assert [c[:2] for c in calls] == [(0, 1)] * 20
    assert losses[-1] < 0.2 * losses[0]


def test_on_batch_sees_every_step():
    X, y = blobs(n=100)
    trainer = Trainer(mlp([10, 4, 3], rng=np.random.default_rng(0)), SGD(lr=0.01), batch_size=32)
    calls = []
    trainer.train_epoch(X, y, 0, on_batch=lambda step, total, loss: calls.append((step, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_trainer_applies_the_clipper_before_the_step():
    X, y = blobs(n=64)
    net = mlp([10, 4, 3], rng=np.random.default_rng(0))
    seen = []

    class Spy(ClipByValue):
        def plan(self, grads, measure=False):
            seen.append(max(float(np.abs(g).max()) for g in grads.values()))
            return super().plan(grads, measure)

    before = params_copy(net)
    Trainer(net, SGD(lr=1.0), clipper=Spy(1e-3), batch_size=None, rng=np.random.default_rng(0)).train_epoch(X, y, 0)
    assert len(seen) == 1 and seen[0] > 1e-2  # the gradients as backward left them, larger than the clip
    assert max(float(np.abs(net.params[k] - before[k]).max()) for k in before) == pytest.approx(1e-3, rel=1e-3)


def test_diverged_reports_epoch_and_step():
    X, y = blobs()
    net = mlp([10, 16, 3], rng=np.random.default_rng(0))
    trainer = Trainer(net, SGD(lr=1e10), batch_size=32, rng=np.random.default_rng(0))
    done = []
    with np.errstate(all="ignore"), pytest.raises(Diverged, match="diverged.*epoch 4, step") as excinfo:
        trainer.train_epoch(X, y, 4, on_batch=lambda step, *_: done.append(step))
    assert excinfo.value.epoch == 4
    assert excinfo.value.step == len(done) > 0
    assert not np.isfinite(excinfo.value.loss)
    assert "Lower the learning rate" in str(excinfo.value)


def train_with_dropout(seed, epochs=3):
    X, y = blobs()
    rng = np.random.default_rng(seed)
    net = mlp([10, 16, 16, 3], dropout=0.3, rng=rng)
    fit(net, X, y, epochs=epochs, batch_size=32, optimizer=SGD(lr=0.05, momentum=0.9), rng=rng, verbose=False)
    return params_copy(net)


def test_same_seed_gives_bit_identical_weights_with_dropout():
    assert_params_equal(train_with_dropout(7), train_with_dropout(7))


def test_different_seed_gives_different_weights():
    a, b = train_with_dropout(7), train_with_dropout(8)
    assert not np.array_equal(a["dense1.W"], b["dense1.W"])


def make_run(seed):
    rng = np.random.default_rng(seed)
    net = mlp([10, 16, 16, 3], dropout=0.3, rng=rng)
    optimizer = Adam(lr=0.01, weight_decay=1e-3)
    trainer = Trainer(net, optimizer, CosineAnnealing(T_max=4), batch_size=32, rng=rng)
    return net, trainer


def test_resume_from_state_dict_is_bit_identical():
    X, y = blobs()
    net, trainer = make_run(0)
    for epoch in range(4):
        trainer.train_epoch(X, y, epoch)
    uninterrupted = params_copy(net)

    net, trainer = make_run(0)
    for epoch in range(2):
        trainer.train_epoch(X, y, epoch)
    weights, state = params_copy(net), trainer.state_dict()
    for epoch in range(2, 4):
        trainer.train_epoch(X, y, epoch)
    assert_params_equal(params_copy(net), uninterrupted)

    resumed_net, resumed = make_run(123)
    resumed_net.set_params(weights)
    resumed.load_state_dict(state)
    for epoch in range(2, 4):
        resumed.train_epoch(X, y, epoch)
    assert_params_equal(params_copy(resumed_net), uninterrupted)


def test_resume_restores_plateau_schedule():
    X, y = blobs()
    net, trainer = make_run(0)
    trainer.schedule = ReduceOnPlateau(factor=0.5, patience=0)
    trainer.train_epoch(X, y, 0)
    for loss in (1.0, 2.0):
        trainer.end_epoch(loss)
    resumed_net, resumed = make_run(1)
    resumed.schedule = ReduceOnPlateau(factor=0.5, patience=0)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.schedule.lr_at(0.01, 1) == pytest.approx(0.005)


def test_fit_history_rows_with_validation():
    X, y = blobs()
    X_val, y_val = blobs(seed=1, n=90)
    net = mlp([10, 16, 3], rng=np.random.default_rng(0))
    rows = []

    class Recorder(nn.callbacks.Callback):
        def on_epoch_end(self, loop, metrics):
            rows.append((loop.epoch, metrics))

    history = net.fit(X, y, X_val, y_val, epochs=3, batch_size=50, verbose=False, callbacks=[Recorder()])
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert rows == [(row["epoch"], {k: v for k, v in row.items() if k != "epoch"}) for row in history]
    assert list(history[0]) == [
        "epoch",
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "lr",
        "grad_norm",
        "epoch_time",
    ]
    assert (history[-1]["val/loss"], history[-1]["val/acc"]) == net.evaluate(X_val, y_val)
    assert history[-1]["val/loss"] < history[0]["val/loss"]


def test_fit_without_validation_has_no_val_columns():
    X, y = blobs(n=60)
    history = fit(mlp([10, 4, 3], rng=np.random.default_rng(0)), X, y, epochs=1, verbose=False)
    assert list(history[0]) == ["epoch", "train/loss", "train/acc", "lr", "grad_norm", "epoch_time"]


def test_fit_feeds_validation_loss_to_the_schedule():
    class Spy(Schedule):
        def __init__(self):
            self.seen = []

        def observe(self, metric):
            self.seen.append(metric)

    X, y = blobs()
    spy = Spy()
    history = fit(mlp([10, 4, 3], rng=np.random.default_rng(0)), X, y, X, y, epochs=2, schedule=spy, verbose=False)
    assert spy.seen == [row["val/loss"] for row in history]


def test_fit_verbose_prints_progress(capsys):
    X, y = blobs(n=60)
    fit(mlp([10, 4, 3], rng=np.random.default_rng(0)), X, y, X, y, epochs=2, verbose=True)
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val loss" in out


@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
def test_training_stays_float32(activation):
    X, y = blobs(n=64)
    net = mlp([10, 8, 3], activation=activation, rng=np.random.default_rng(0))
    fit(net, X.astype(np.float64), y, epochs=1, batch_size=16, optimizer=Adam(lr=1e-3), verbose=False)
    assert all(v.dtype == np.float32 for v in [*net.params.values(), *net.grads.values()])
    assert net.forward(X[:4], training=True).dtype == np.float32


def test_gradcheck_module_passes():
    result = subprocess.run(
        [sys.executable, "-m", "nn.gradcheck"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed, 0 failed" in result.stdout
    assert "FAIL" not in result.stdout


def test_a_diverging_run_ends_in_diverged_without_numpy_overflow_warnings():
    """The loop says that the loss blew up (``Diverged``); NumPy's overflow warnings on the way are noise."""
    import warnings

    X, y = blobs()
    net = mlp([10, 64, 3], rng=np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(Diverged):
            fit(net, X * 1e3, y, X, y, epochs=5, optimizer=SGD(lr=1e3), verbose=False)
