"""Gradient clipping: clip_grad_value_ / clip_grad_norm_ semantics, returned norms, in-place updates."""

from __future__ import annotations

import numpy as np
import pytest

from nn.clipping import ClipByNorm, ClipByValue, NoClip, global_norm


def grads(scale=1.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "dense0.W": (rng.standard_normal((4, 3)) * scale).astype(dtype),
        "dense0.b": (rng.standard_normal(3) * scale).astype(dtype),
    }


def copy(g):
    return {k: v.copy() for k, v in g.items()}


def test_global_norm_hand_value():
    assert global_norm({"a": np.array([3.0]), "b": np.array([[0.0, 4.0]])}) == 5.0


def test_global_norm_matches_norm_of_concatenation():
    g = grads()
    expected = np.linalg.norm(np.concatenate([v.ravel() for v in g.values()]))
    assert global_norm(g) == pytest.approx(expected, rel=1e-14)


def test_clip_by_value_clamps_elementwise_in_place():
    g = grads(scale=3.0)
    original = copy(g)
    arrays = {k: id(v) for k, v in g.items()}
    assert ClipByValue(1.5)(g) is None
    for name in g:
        assert id(g[name]) == arrays[name]
        np.testing.assert_array_equal(g[name], np.clip(original[name], -1.5, 1.5))
    assert np.abs(original["dense0.W"]).max() > 1.5


def test_clip_by_value_measures_norm_before_clipping():
    g = grads(scale=3.0)
    expected = global_norm(g)
    assert ClipByValue(0.5)(g, measure=True) == pytest.approx(expected, rel=1e-14)
    assert global_norm(g) < expected


def test_clip_by_norm_scales_when_norm_exceeds_max():
    g = grads(scale=10.0)
    original, norm = copy(g), global_norm(g)
    returned = ClipByNorm(max_norm=2.0)(g)
    assert returned == pytest.approx(norm, rel=1e-14)
    coef = 2.0 / (norm + 1e-6)
    for name in g:
        np.testing.assert_allclose(g[name], original[name] * coef, rtol=1e-14)
    assert global_norm(g) == pytest.approx(2.0, rel=1e-6) and global_norm(g) < 2.0


def test_clip_by_norm_leaves_small_gradients_untouched():
    g = grads(scale=0.1)
    original, norm = copy(g), global_norm(g)
    assert norm < 1.0
    assert ClipByNorm(max_norm=1.0)(g) == pytest.approx(norm, rel=1e-14)
    for name in g:
        np.testing.assert_array_equal(g[name], original[name])


def test_clip_by_norm_keeps_float32():
    g = grads(scale=10.0, dtype=np.float32)
    ClipByNorm(max_norm=1.0)(g)
    assert all(v.dtype == np.float32 for v in g.values())
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)


def test_no_clip_leaves_gradients_untouched():
    g = grads(scale=100.0)
    original = copy(g)
    assert NoClip()(g) is None
    assert NoClip()(g, measure=True) == pytest.approx(global_norm(original), rel=1e-14)
    for name in g:
        np.testing.assert_array_equal(g[name], original[name])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ClipByValue(0.0), "value=0.0 is not allowed"),
        (lambda: ClipByValue(-1.0), "value=-1.0 is not allowed"),
        (lambda: ClipByNorm(0.0), "max_norm"),
        (lambda: ClipByNorm(-2.0), "max_norm"),
    ],
)
def test_invalid_thresholds_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
