"""Losses: mean reduction, fused vs unfused equivalence, stability, label validation, gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from nn.activations import Softmax, softmax
from nn.gradcheck import check_loss
from nn.losses import CrossEntropy, SoftmaxCrossEntropy, softmax_cross_entropy

TOL = 1e-7


def logits_and_labels(seed=0, batch=6, classes=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, classes)) * 2, rng.integers(0, classes, batch)


def test_fused_loss_gradient_matches_finite_differences():
    logits, y = logits_and_labels()
    assert check_loss(SoftmaxCrossEntropy(), logits, y) < TOL


def test_cross_entropy_gradient_matches_finite_differences():
    logits, y = logits_and_labels(1)
    assert check_loss(CrossEntropy(), softmax(logits), y) < TOL


def test_fused_loss_value_matches_formula():
    logits, y = logits_and_labels(2)
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y])
    assert SoftmaxCrossEntropy().forward(logits, y) == pytest.approx(expected, rel=1e-13)


def test_fused_loss_gradient_matches_formula():
    logits, y = logits_and_labels(3)
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, y)
    expected = (softmax(logits) - np.eye(logits.shape[1])[y]) / len(y)
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-12, atol=1e-16)


def test_fused_equals_softmax_then_cross_entropy_in_value():
    logits, y = logits_and_labels(4)
    unfused = CrossEntropy().forward(Softmax().forward(logits), y)
    assert SoftmaxCrossEntropy().forward(logits, y) == pytest.approx(unfused, rel=1e-12)


def test_fused_equals_softmax_then_cross_entropy_in_gradient():
    logits, y = logits_and_labels(5)
    fused = SoftmaxCrossEntropy()
    fused.forward(logits, y)
    softmax_layer, ce = Softmax(), CrossEntropy()
    ce.forward(softmax_layer.forward(logits), y)
    chained = softmax_layer.backward(ce.backward())
    np.testing.assert_allclose(fused.backward(), chained, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropy, CrossEntropy])
def test_loss_is_mean_of_per_example_losses(loss_cls):
    logits, y = logits_and_labels(6)
    inputs = logits if loss_cls is SoftmaxCrossEntropy else softmax(logits)
    per_example = [loss_cls().forward(inputs[i : i + 1], y[i : i + 1]) for i in range(len(y))]
    assert loss_cls().forward(inputs, y) == pytest.approx(np.mean(per_example), rel=1e-13)


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropy, CrossEntropy])
def test_gradient_is_divided_by_batch_size(loss_cls):
    logits, y = logits_and_labels(7, batch=1)
    inputs = logits if loss_cls is SoftmaxCrossEntropy else softmax(logits)
    single, double = loss_cls(), loss_cls()
    single.forward(inputs, y)
    double.forward(np.repeat(inputs, 2, axis=0), np.repeat(y, 2))
    g1, g2 = single.backward(), double.backward()
    np.testing.assert_allclose(g2, np.repeat(g1, 2, axis=0) / 2, rtol=1e-13)


def test_fused_loss_is_stable_at_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]])
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward(logits, np.array([1, 1]))
    assert value == pytest.approx(1e4 / 2, rel=1e-12)
    assert np.isfinite(loss.backward()).all()


def test_fused_loss_keeps_float32_gradient():
    logits, y = logits_and_labels(8)
    loss = SoftmaxCrossEntropy()
    loss.forward(logits.astype(np.float32), y)
    assert loss.backward().dtype == np.float32


def test_cross_entropy_clamps_zero_probability():
    value = CrossEntropy(eps=1e-12).forward(np.array([[1.0, 0.0]]), np.array([1]))
    assert value == pytest.approx(-np.log(1e-12), rel=1e-12)


def test_softmax_cross_entropy_helper_returns_loss_and_probabilities():
    logits, y = logits_and_labels(9)
    value, probs = softmax_cross_entropy(logits, y)
    assert value == pytest.approx(SoftmaxCrossEntropy().forward(logits, y), rel=1e-15)
    np.testing.assert_allclose(probs, softmax(logits), rtol=1e-13)


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropy, CrossEntropy])
@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1, 2]), r"shape \(4,\)"),
        (np.array([[0], [1], [2], [0]]), r"shape \(4,\)"),
        (np.array([0, 1, 3, 0]), r"\[0, 3\)"),
        (np.array([0, -1, 2, 0]), r"\[0, 3\)"),
    ],
    ids=["too-short", "column", "too-large", "negative"],
)
def test_invalid_labels_raise(loss_cls, labels, match):
    inputs = softmax(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=match):
        loss_cls().forward(inputs, labels)


def test_fused_loss_of_an_empty_batch_is_nan():
    with np.errstate(invalid="ignore"):
        assert np.isnan(SoftmaxCrossEntropy().forward(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)))
