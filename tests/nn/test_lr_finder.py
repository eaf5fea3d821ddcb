"""``nn.lr_finder``: the range test's learning rates, its stop on divergence, its readings, and that it leaves
the network and optimizer it is given as they were."""

from __future__ import annotations

import numpy as np
import pytest

import nn
from nn.lr_finder import DIVERGED, SKIP_START, lr_range_test, steepest


def blobs(n: int = 600, seed: int = 0):
    """Noise with random labels: a loss that cannot reach 0, so a rate high enough makes it blow up."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10)).astype(np.float32), rng.integers(0, 3, size=n)


def test_rates_rise_exponentially_and_the_network_is_left_alone():
    X, y = blobs()
    net = nn.mlp([10, 32, 3], rng=np.random.default_rng(0))
    optimizer = nn.SGD(lr=0.1, momentum=0.9)
    before = {k: v.copy() for k, v in net.params.items()}
    test = lr_range_test(net, optimizer, X, y, min_lr=1e-4, max_lr=1e4, steps=120, rng=np.random.default_rng(0))
    assert test.lrs[0] == pytest.approx(1e-4)
    ratios = test.lrs[1:] / test.lrs[:-1]
    np.testing.assert_allclose(ratios, (1e4 / 1e-4) ** (1 / 119))  # one constant factor per step
    assert len(test.lrs) < 120 and test.losses[-1] > DIVERGED * test.losses.min()  # stopped when it blew up
    assert all(np.array_equal(v, before[k]) for k, v in net.params.items()) and optimizer.state == {}
    lowest = test.lrs[int(np.argmin(test.losses))]
    assert test.suggestion == pytest.approx(lowest / 10)
    assert test.steepest == steepest(test.lrs, test.losses)


def test_steepest_is_where_the_curve_falls_fastest():
    lrs = np.logspace(-5, 0, 50)
    losses = 2.0 - np.tanh((np.arange(50) - 30) / 4)  # falls fastest where the argument is 0: index 30
    assert steepest(lrs, losses) == pytest.approx(lrs[30])
    assert steepest(lrs[: SKIP_START + 2], losses[: SKIP_START + 2]) is None


@pytest.mark.parametrize("bad", [{"min_lr": 0}, {"max_lr": 1e-7}, {"steps": 5}])
def test_bad_settings_are_refused(bad):
    X, y = blobs(60)
    with pytest.raises(ValueError):
        lr_range_test(nn.mlp([10, 3]), nn.SGD(lr=0.1), X, y, **bad)
