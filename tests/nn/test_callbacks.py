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


def drive(callback: EarlyStopping, values: list[float]) -> tuple[int | None, Scripted]:
    """Feed ``values`` as epochs 1, 2, ...; returns (the epoch it stopped at or None, the network)."""
    network = Scripted()
    callback.on_train_start(network)
    stopped = None
    for epoch, value in enumerate(values, start=1):
        network.params["w"][...] = epoch
        try:
            callback.on_epoch_end(epoch, {"val/loss": value, "val/acc": 1 - value})
        except StopTraining:
            stopped = epoch
            break
    callback.on_train_end(network)
    return stopped, network


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
    network = Scripted()
    second.on_train_start(network)
    with pytest.raises(StopTraining):
        for epoch, value in ((4, 0.7), (5, 0.8)):
            second.on_epoch_end(epoch, {"val/loss": value})
    second.on_train_end(network)
    assert second.stopped_epoch == 5 and second.best_epoch == 2
    np.testing.assert_array_equal(network.params["w"], np.full(3, 2))


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
        def on_epoch_end(self, epoch, metrics):
            seen[epoch] = {k: v.copy() for k, v in net.params.items()}

    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=10.0)  # nothing improves by 10
    history = net.fit(X, y, X, y, epochs=20, batch_size=50, verbose=False, callbacks=[Snapshot(), stopper])
    assert len(history) == 3 and stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    for key, value in net.params.items():
        np.testing.assert_array_equal(value, seen[1][key])
