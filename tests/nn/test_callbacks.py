"""``nn.callbacks.EarlyStopping``: stops at the right epoch on a scripted metric sequence and puts back the
best epoch's weights bit for bit, in ``fit`` and on its own."""

from __future__ import annotations

import numpy as np
import pytest

import nn
from nn.callbacks import EarlyStopping, StopTraining


class Scripted:
    """A stand-in network whose weights are the epoch number, so restored weights name their epoch."""

    def __init__(self) -> None:
        self.params = {"w": np.zeros(3)}

    def set_params(self, values) -> None:
        for key, value in values.items():
            self.params[key][...] = value


class ScriptedLoop:
    """What a callback reads of ``nn.Loop``: the network and the current epoch."""

    def __init__(self) -> None:
        self.network, self.epoch = Scripted(), 0


def drive(callback: EarlyStopping, values: list[float]) -> tuple[int | None, Scripted]:
    """Feed ``values`` as epochs 1, 2, ...; returns (the epoch it stopped at or None, the network)."""
    loop = ScriptedLoop()
    callback.on_train_start(loop)
    stopped = None
    for epoch, value in enumerate(values, start=1):
        loop.epoch = epoch
        loop.network.params["w"][...] = epoch
        try:
            callback.on_epoch_end(loop, {"val/loss": value, "val/acc": 1 - value})
        except StopTraining:
            stopped = epoch
            break
    callback.on_train_end(loop)
    return stopped, loop.network


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "stopped", "best"),
    [
        ([1.0, 0.8, 0.7, 0.71, 0.72, 0.73, 0.5], 3, 0.0, 6, 3),  # three epochs without improvement
        ([1.0, 0.8, 0.7, 0.71, 0.72, 0.5, 0.4], 3, 0.0, None, 7),  # improved in time: trains on
        ([1.0, 0.9, 0.89, 0.88, 0.87], 2, 0.05, 4, 2),  # improvements below min_delta do not count
        ([0.5, 0.5, 0.5], 1, 0.0, 2, 1),  # equal is no improvement
    ],
)
def test_stops_after_patience_epochs_without_improvement(values, patience, min_delta, stopped, best):
    callback = EarlyStopping(monitor="val/loss", mode="min", patience=patience, min_delta=min_delta)
    at, network = drive(callback, values)
    assert at == stopped and callback.best_epoch == best
    np.testing.assert_array_equal(network.params["w"], np.full(3, best))  # the best epoch's weights, exactly
    if stopped:
        assert f"stopped early at epoch {stopped}" in callback.reason() and f"kept epoch {best}'s" in callback.reason()


def test_mode_max_and_no_restore():
    callback = EarlyStopping(monitor="val/acc", mode="max", patience=2, restore_best=False)
    at, network = drive(callback, [0.1, 0.3, 0.2, 0.25])  # val/acc = 0.9, 0.7, 0.8, 0.75
    assert (at, callback.best_epoch) == (3, 1)
    np.testing.assert_array_equal(network.params["w"], np.full(3, 3))  # the last weights kept


def test_resume_carries_the_counters_and_the_best_weights():
    first = EarlyStopping(patience=3)
    drive(first, [1.0, 0.5, 0.6])
    second = EarlyStopping(patience=3)
    second.load_state_dict(first.state_dict())
    loop = ScriptedLoop()
    second.on_train_start(loop)
    with pytest.raises(StopTraining):
        for loop.epoch, value in ((4, 0.7), (5, 0.8)):
            second.on_epoch_end(loop, {"val/loss": value})
    second.on_train_end(loop)
    assert second.stopped_epoch == 5 and second.best_epoch == 2
    np.testing.assert_array_equal(loop.network.params["w"], np.full(3, 2))


def test_an_unknown_monitor_names_the_metrics_there_are():
    with pytest.raises(KeyError, match="it logs val/acc, val/loss"):
        drive(EarlyStopping(monitor="val/los"), [1.0])


@pytest.mark.parametrize("bad", [{"mode": "up"}, {"patience": 0}, {"min_delta": -1}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        EarlyStopping(**bad)


def test_fit_stops_early_and_restores_the_best_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = nn.mlp([8, 16, 2], rng=np.random.default_rng(1))
    seen = {}

    class Snapshot(nn.callbacks.Callback):
        def on_epoch_end(self, loop, metrics):
            seen[loop.epoch] = {k: v.copy() for k, v in net.params.items()}

    stopper = EarlyStopping(patience=2, min_delta=10.0)  # its default monitor, val/loss; nothing improves by 10
    history = net.fit(X, y, X, y, epochs=20, batch_size=50, verbose=False, callbacks=[Snapshot(), stopper])
    assert len(history) == 3 and stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    for key, value in net.params.items():
        np.testing.assert_array_equal(value, seen[1][key])


def test_fit_with_the_default_early_stopping_stops_on_val_loss():
    """``EarlyStopping()`` monitors ``val/loss``, the name ``fit`` logs: it stops where val/loss stops improving
    (a KeyError before the loop and the harness shared one vocabulary)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(np.int64)
    net = nn.mlp([8, 64, 2], rng=np.random.default_rng(1))
    stopper = EarlyStopping(patience=2)
    history = net.fit(X, y, X[:60], y[:60], epochs=60, batch_size=20, verbose=False, callbacks=[stopper],
                      optimizer=nn.SGD(lr=0.3, momentum=0.9))  # fmt: skip
    losses = [row["val/loss"] for row in history]
    best = int(np.argmin(losses)) + 1
    assert len(history) < 60 and stopper.stopped_epoch == len(history) == best + 2
    assert stopper.best_epoch == best and stopper.best == min(losses)


def test_hooks_run_in_order_and_teardown_in_reverse():
    X, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    calls = []

    class Spy(nn.callbacks.Callback):
        def __init__(self, name):
            self.name = name

        def on_train_start(self, loop):
            calls.append(("start", self.name))

        def on_epoch_end(self, loop, metrics):
            calls.append((f"epoch {loop.epoch}", self.name))

        def on_train_end(self, loop):
            calls.append(("end", self.name))

    nn.fit(nn.mlp([2, 2]), X, y, epochs=1, verbose=False, callbacks=[Spy("a"), Spy("b")])
    assert calls == [("start", "a"), ("start", "b"), ("epoch 1", "a"), ("epoch 1", "b"), ("end", "b"), ("end", "a")]


def test_an_exception_reaches_every_callback_then_the_caller():
    X, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    seen = []

    class Boom(nn.callbacks.Callback):
        def on_epoch_end(self, loop, metrics):
            if loop.epoch == 2:
                raise RuntimeError("boom")

    class Spy(nn.callbacks.Callback):
        def on_exception(self, loop, error):
            seen.append((loop.epoch, str(error), len(loop.history)))

    with pytest.raises(RuntimeError, match="boom"):
        nn.fit(nn.mlp([2, 2]), X, y, epochs=5, verbose=False, callbacks=[Spy(), Boom()])
    assert seen == [(2, "boom", 2)]


def test_on_batch_end_sees_every_step():
    X, y = np.zeros((50, 2), np.float32), np.zeros(50, np.int64)
    steps = []

    class Bar(nn.callbacks.Callback):
        def on_batch_end(self, loop, step, num_batches, loss):
            steps.append((loop.epoch, step, num_batches))

    nn.fit(nn.mlp([2, 2]), X, y, epochs=2, batch_size=20, verbose=False, callbacks=[Bar()])
    assert steps == [(e, s, 3) for e in (1, 2) for s in range(3)]


def test_a_callback_failing_in_on_exception_does_not_keep_the_others_from_theirs(caplog):
    X, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    closed = []

    class Opened(nn.callbacks.Callback):  # first in the list: closes last, as a tracker does
        def on_exception(self, loop, error):
            closed.append(str(error))

    class Clumsy(nn.callbacks.Callback):
        def on_epoch_end(self, loop, metrics):
            raise RuntimeError("the first error")

        def on_exception(self, loop, error):
            raise ValueError("cleanup failed")

    with pytest.raises(RuntimeError, match="the first error"):
        nn.fit(nn.mlp([2, 2]), X, y, epochs=2, verbose=False, callbacks=[Opened(), Clumsy()])
    assert closed == ["the first error"]
    assert "Clumsy.on_exception failed" in caplog.text


def test_callbacks_a_restored_state_missed_see_its_last_epoch_after_on_train_start():
    X, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    seen = []

    class Spy(nn.callbacks.Callback):
        def on_train_start(self, loop):
            seen.append(("start", loop.epoch))

        def on_epoch_end(self, loop, metrics):
            seen.append(("epoch", loop.epoch, metrics["train/loss"]))

    spy = Spy()
    trainer = nn.Trainer(nn.mlp([2, 2]), nn.SGD(lr=0.1))
    loop = nn.Loop(trainer, X, y, epochs=3, callbacks=[spy], history=[{"epoch": 1, "train/loss": 0.5}])
    loop.unseen = [spy]
    loop.run()
    assert [event[:2] for event in seen] == [("start", 1), ("epoch", 1), ("epoch", 2), ("epoch", 3)]
    assert seen[1][2] == 0.5  # the restored row
