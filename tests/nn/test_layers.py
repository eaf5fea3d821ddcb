"""Dense and Dropout: forward values, float64 gradient checks, dropout statistics and validation."""

from __future__ import annotations

import numpy as np
import pytest

from nn.gradcheck import check_layer, numeric_gradient, relative_error
from nn.layers import Dense, Dropout

pytestmark = pytest.mark.usefixtures("elementwise_kernels")  # NumPy's dropout mask, then the compiled one
TOL = 1e-7


def away_from_zero(rng, shape):
    return rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)


def test_dense_forward_is_affine_map():
    rng = np.random.default_rng(0)
    layer = Dense(4, 3, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(3)
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["W"] + layer.params["b"], rtol=1e-12)


def test_dense_shapes_and_dtype():
    layer = Dense(6, 2, rng=np.random.default_rng(0))
    assert layer.params["W"].shape == (6, 2) and layer.params["b"].shape == (2,)
    assert layer.params["W"].dtype == np.float32 and layer.grads["W"].dtype == np.float32
    assert not layer.params["b"].any()
    out = layer.forward(np.ones((3, 6), np.float32))
    assert out.shape == (3, 2) and out.dtype == np.float32


def test_dense_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    layer = Dense(5, 4, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(4)
    errors = check_layer(layer, rng.standard_normal((6, 5)), rng)
    assert set(errors) == {"input", "W", "b"}
    assert max(errors.values()) < TOL, errors


def test_dense_backward_without_input_grad_still_fills_param_grads():
    rng = np.random.default_rng(2)
    layer = Dense(3, 2, rng=rng, dtype=np.float64)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.needs_input_grad = False
    layer.forward(x)
    assert layer.backward(g) is None
    np.testing.assert_allclose(layer.grads["W"], x.T @ g, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], g.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("sizes", [(0, 3), (3, 0), (-1, 2)])
def test_dense_rejects_non_positive_sizes(sizes):
    with pytest.raises(ValueError, match="positive sizes"):
        Dense(*sizes)


def test_dense_config_rebuilds_same_architecture():
    layer = Dense(7, 3, init="xavier_uniform", rng=np.random.default_rng(0))
    rebuilt = Dense(**layer.config())
    assert rebuilt.config() == {"in_features": 7, "out_features": 3, "init": "xavier_uniform"}
    assert rebuilt.params["W"].shape == (7, 3)


def test_layer_astype_casts_params_and_grads():
    layer = Dense(3, 2, rng=np.random.default_rng(0))
    w = layer.params["W"].copy()
    layer.astype(np.float64)
    assert all(v.dtype == np.float64 for v in [*layer.params.values(), *layer.grads.values()])
    np.testing.assert_array_equal(layer.params["W"], w.astype(np.float64))


def test_dropout_is_identity_at_eval():
    x = np.random.default_rng(0).standard_normal((8, 5))
    layer = Dropout(0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
    g = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(g), g)


def test_dropout_p_zero_is_identity_in_training():
    x = np.random.default_rng(0).standard_normal((8, 5))
    np.testing.assert_array_equal(Dropout(0.0).forward(x, training=True), x)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_inverted_scaling(p):
    x = np.ones((400, 500))
    out = Dropout(p, rng=np.random.default_rng(3)).forward(x, training=True)
    survivors = out[out != 0]
    np.testing.assert_allclose(survivors, 1 / (1 - p), rtol=1e-12)
    assert abs(np.mean(out == 0) - p) < 0.01
    assert abs(out.mean() - 1.0) < 0.02


def test_dropout_backward_uses_the_forward_mask():
    rng = np.random.default_rng(4)
    x = away_from_zero(rng, (6, 7))
    layer = Dropout(0.4, rng=np.random.default_rng(5))
    out = layer.forward(x, training=True)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(g), g * out / x, rtol=1e-12)


def test_dropout_gradient_with_frozen_mask_matches_finite_differences():
    rng = np.random.default_rng(6)
    x = away_from_zero(rng, (5, 4))
    layer = Dropout(0.5, rng=np.random.default_rng(7))
    state = layer.rng.bit_generator.state
    projection = rng.standard_normal(x.shape)

    def objective():
        layer.rng.bit_generator.state = state
        return float(np.sum(layer.forward(x, training=True) * projection))

    objective()
    analytic = layer.backward(projection.copy())
    assert relative_error(analytic, numeric_gradient(objective, x)) < TOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_keeps_dtype(dtype):
    out = Dropout(0.5, rng=np.random.default_rng(0)).forward(np.ones((4, 4), dtype), training=True)
    assert out.dtype == dtype


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)
