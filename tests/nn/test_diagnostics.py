"""``nn.diagnostics``: per-layer norms, update ratios, activation statistics and dead units against a
direct NumPy computation on a small network, and an exploding layer named when training diverges."""

from __future__ import annotations

import numpy as np
import pytest

import nn
from nn.diagnostics import Watch, activations


def small(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 6))
    y = rng.integers(0, 3, size=64)
    return nn.mlp([6, 5, 4, 3], rng=np.random.default_rng(seed)).astype(np.float64), X, y


def test_gradient_norms_update_ratios_and_weight_norms_match_numpy():
    net, X, y = small()
    watch = Watch(net, every=1, ratio_every=1)
    trainer = nn.Trainer(net, nn.SGD(lr=0.1, momentum=0.9), batch_size=None, rng=np.random.default_rng(0), watch=watch)
    before = {k: v.copy() for k, v in net.params.items()}
    trainer.train_epoch(X, y, 0)  # one full-batch step
    grads = _grads(before, X, y)
    metrics = watch.epoch_metrics()
    for i in range(3):
        name = f"dense{i}"
        expected = np.sqrt(np.sum(grads[f"{name}.W"] ** 2) + np.sum(grads[f"{name}.b"] ** 2))
        assert metrics[f"{name}/grad_norm"] == pytest.approx(expected, rel=1e-10)
        W_new, W_old = net.params[f"{name}.W"], before[f"{name}.W"]
        assert metrics[f"{name}/update_ratio"] == pytest.approx(
            np.linalg.norm(W_new - W_old) / np.linalg.norm(W_new), rel=1e-10
        )
        assert metrics[f"{name}/weight_norm"] == pytest.approx(np.linalg.norm(W_new), rel=1e-12)


def _grads(params, X, y):
    """Backpropagation written out in NumPy for the 6-5-4-3 ReLU network with mean cross-entropy."""
    hs, h = [X], X
    for i in range(3):
        z = h @ params[f"dense{i}.W"] + params[f"dense{i}.b"]
        h = np.maximum(z, 0) if i < 2 else z
        hs.append(h)
    p = np.exp(h - h.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = {}
    for i in (2, 1, 0):
        grads[f"dense{i}.W"], grads[f"dense{i}.b"] = hs[i].T @ d, d.sum(axis=0)
        d = (d @ params[f"dense{i}.W"].T) * (hs[i] > 0)
    return grads


def test_activation_statistics_and_dead_units_match_numpy():
    net, X, _ = small(1)
    net.params["dense0.b"][:2] = -1e3  # two units of the first ReLU never fire
    stats = activations(net, X)
    h0 = np.maximum(X @ net.params["dense0.W"] + net.params["dense0.b"], 0)
    h1 = np.maximum(h0 @ net.params["dense1.W"] + net.params["dense1.b"], 0)
    assert stats["relu0/mean"] == pytest.approx(h0.mean()) and stats["relu0/std"] == pytest.approx(h0.std())
    assert stats["relu1/mean"] == pytest.approx(h1.mean())
    assert (
        stats["relu0/dead_fraction"] == pytest.approx(np.mean(~(h0 > 0).any(axis=0)))
        and stats["relu0/dead_fraction"] >= 2 / 5
    )
    assert set(stats) == {f"relu{i}/{k}" for i in (0, 1) for k in ("mean", "std", "dead_fraction")}


def test_an_exploding_layer_is_named_when_training_diverges():
    """A learning rate far too high: the first step where a layer's gradient norm grew 100x is named, with the
    layer that grew most then."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 20)).astype(np.float32)
    y = rng.integers(0, 4, size=512)
    net = nn.mlp([20, 32, 32, 4], rng=np.random.default_rng(0))
    watch = Watch(net, every=1)
    trainer = nn.Trainer(net, nn.SGD(lr=50.0, momentum=0.9), batch_size=32, rng=rng, watch=watch)
    with np.errstate(all="ignore"), pytest.raises(nn.Diverged) as diverged:
        for epoch in range(3):
            trainer.train_epoch(X, y, epoch)
    name, epoch, step, growth = watch.exploded
    norms = {layer: values[step] / values[0] for layer, values in watch.grad_norms.items()}
    assert growth > 100 and name == max(norms, key=norms.get)
    assert all(values[s] / values[0] <= 100 for values in watch.grad_norms.values() for s in range(step))
    assert f"the gradient norm of {name} exploded first: it grew" in str(diverged.value)
    assert f"at epoch {epoch}, step {step}" in diverged.value.explanation and step < diverged.value.step


def test_healthy_gradients_point_at_the_data():
    net, X, y = small()
    X[5, 2] = np.nan  # a bad input, with ordinary gradients until it is drawn
    watch = Watch(net, every=1)
    trainer = nn.Trainer(net, nn.SGD(lr=0.01), batch_size=None, rng=np.random.default_rng(0), watch=watch)
    with pytest.raises(nn.Diverged, match="the gradients were healthy until then"):
        trainer.train_epoch(X, y, 0)
