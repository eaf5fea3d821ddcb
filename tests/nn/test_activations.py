"""Activations and softmax: formulas, numerical stability, dtype, float64 gradient checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nn.activations import ACTIVATIONS, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, softmax
from nn.gradcheck import check_layer

pytestmark = pytest.mark.usefixtures("elementwise_kernels")  # NumPy's ReLU, then the compiled one
TOL = 1e-7


def away_from_zero(rng, shape):
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), GELU(), Softmax()], ids=repr)
def test_gradient_matches_finite_differences(layer):
    rng = np.random.default_rng(0)
    errors = check_layer(layer, away_from_zero(rng, (4, 6)), rng)
    assert errors["input"] < TOL, errors


def test_relu_values():
    x = np.array([[-2.0, -0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0.0, 0.0, 0.5, 3.0]])


def test_relu_backward_masks_negative_inputs():
    layer = ReLU()
    layer.forward(np.array([[-1.0, 2.0, -3.0, 4.0]]))
    np.testing.assert_array_equal(layer.backward(np.full((1, 4), 5.0)), [[0.0, 5.0, 0.0, 5.0]])


def test_leaky_relu_values_and_slope():
    layer = LeakyReLU(0.2)
    np.testing.assert_allclose(layer.forward(np.array([[-2.0, 3.0]])), [[-0.4, 3.0]], rtol=1e-15)
    np.testing.assert_allclose(layer.backward(np.array([[1.0, 1.0]])), [[0.2, 1.0]], rtol=1e-15)
    assert layer.config() == {"negative_slope": 0.2}


def test_sigmoid_matches_formula():
    x = np.linspace(-20, 20, 81).reshape(9, 9)
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-14)


def test_sigmoid_is_stable_at_extremes_without_warnings():
    x = np.array([[-1000.0, 1000.0, 0.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = Sigmoid().forward(x)
    np.testing.assert_array_equal(out, [[0.0, 1.0, 0.5]])


def test_tanh_matches_numpy():
    x = np.linspace(-5, 5, 40).reshape(4, 10)
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x), rtol=1e-15)


def test_gelu_matches_tanh_approximation():
    x = np.linspace(-6, 6, 121).reshape(11, 11)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(GELU().forward(x), expected, rtol=1e-14, atol=1e-300)


def test_gelu_known_values():
    out = GELU().forward(np.array([[1.0, -1.0, 0.0, 3.0]]))
    np.testing.assert_allclose(out, [[0.8411919906082768, -0.15880800939172324, 0.0, 2.996362607918227]], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_keeps_float32(name):
    layer = ACTIVATIONS[name]()
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    out = layer.forward(x, training=True)
    grad = layer.backward(np.ones_like(out))
    assert out.dtype == np.float32 and grad.dtype == np.float32


def test_softmax_keeps_float32():
    out = Softmax().forward(np.ones((2, 3), np.float32))
    assert out.dtype == np.float32


def test_activation_registry_names():
    assert ACTIVATIONS == {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU}


def test_softmax_matches_formula_and_rows_sum_to_one():
    x = np.random.default_rng(0).standard_normal((5, 7))
    out = softmax(x)
    np.testing.assert_allclose(out, np.exp(x) / np.exp(x).sum(axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_is_stable_at_huge_logits():
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
        warnings.simplefilter("error")
        out = softmax(x)
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)


def test_softmax_is_shift_invariant_and_leaves_input_untouched():
    x = np.random.default_rng(1).standard_normal((3, 4))
    before = x.copy()
    np.testing.assert_allclose(softmax(x + 50.0), softmax(x), rtol=1e-12)
    np.testing.assert_array_equal(x, before)


def test_softmax_layer_backward_is_jacobian_vector_product():
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((1, 4)), rng.standard_normal((1, 4))
    layer = Softmax()
    s = layer.forward(x)[0]
    jacobian = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(layer.backward(g)[0], jacobian @ g[0], rtol=1e-12)
