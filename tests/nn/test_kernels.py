"""nn.kernels' compiled passes (updates, ReLU, dropout) give bit-identical results to NumPy's element-wise
reference, for every option."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nn
from nn import kernels
from nn.activations import ReLU
from nn.clipping import Clip
from nn.layers import Dense, Dropout

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba is not installed (pip install -e '.[fast]')")

OPTIMIZERS = {
    "sgd": lambda: nn.SGD(lr=0.05),
    "momentum-l2-bias": lambda: nn.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, decay_bias=True),
    "dampening": lambda: nn.SGD(lr=0.05, momentum=0.9, dampening=0.3),
    "nesterov-l2": lambda: nn.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    "adam": lambda: nn.Adam(lr=1e-2),
    "adam-l2": lambda: nn.Adam(lr=1e-2, betas=(0.5, 0.9), eps=1e-3, weight_decay=1e-2),
    "adamw": lambda: nn.AdamW(lr=1e-2, weight_decay=0.1, decay_bias=True),
    "rmsprop": lambda: nn.RMSprop(lr=1e-2),
    "rmsprop-centered-momentum-l2": lambda: nn.RMSprop(lr=1e-2, centered=True, momentum=0.5, weight_decay=1e-2),
}
CLIPS = {"none": Clip(), "value": Clip(bound=0.7), "norm": Clip(scale=0.37), "both": Clip(scale=0.5, bound=0.2)}


def steps(make, clip: Clip, dtype, fused: bool) -> dict[str, np.ndarray]:
    kernels.ENABLED = fused
    rng = np.random.default_rng(7)
    params = {
        "dense0.W": rng.standard_normal((70, 130)).astype(dtype),
        "dense0.b": rng.standard_normal(130).astype(dtype),
    }
    optimizer = make()
    for step in range(4):
        grads = {
            name: (rng.standard_normal(p.shape) * (3.0 if step % 2 else 0.3)).astype(dtype)
            for name, p in params.items()
        }
        grads["dense0.W"][0, :3] = [np.nan, np.inf, -np.inf] if step == 3 else grads["dense0.W"][0, :3]
        with np.errstate(invalid="ignore", over="ignore"):  # the NaN and infinities of the last step
            optimizer.step(params, grads, 0.01 * (step + 1), clip)
    return params | {f"state/{k}": v for k, v in optimizer.state_dict()["arrays"].items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fused_update_is_bit_identical_to_numpy(optimizer, clip, dtype, monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", kernels.ENABLED)
    reference = steps(OPTIMIZERS[optimizer], CLIPS[clip], dtype, fused=False)
    fused = steps(OPTIMIZERS[optimizer], CLIPS[clip], dtype, fused=True)
    assert reference.keys() == fused.keys()
    for name in reference:
        assert fused[name].dtype == dtype
        np.testing.assert_array_equal(fused[name], reference[name], err_msg=name)
    assert not np.isfinite(reference["dense0.W"][0, :3]).all()  # NaN and inf went through both alike


SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, -1e-30]


def both_ways(run, monkeypatch) -> list[list[np.ndarray]]:
    """``run()``'s arrays with NumPy's passes, then with the compiled ones."""
    monkeypatch.setattr(kernels, "ENABLED", kernels.ENABLED)
    results = []
    for fused in (False, True):
        kernels.ENABLED = fused
        with np.errstate(invalid="ignore"):  # inf * 0 in NumPy's masks
            results.append([np.array(a, order="C") for a in run()])
    return results


def assert_same_bits(reference: list[np.ndarray], fused: list[np.ndarray]) -> None:
    for a, b in zip(reference, fused, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))  # -0.0 and NaN payloads too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_is_bit_identical(dtype, monkeypatch):
    rng = np.random.default_rng(0)
    x, grad = rng.standard_normal((2, 33, 40)).astype(dtype)
    x[0, :6], grad[0, 6:12], x[0, 6:12] = SPECIAL, SPECIAL, -1.0  # NaN gradients where the unit is off stay NaN

    def run():
        layer = ReLU()
        return layer.forward(x), layer.backward(grad)

    reference, fused = both_ways(run, monkeypatch)
    assert_same_bits(reference, fused)
    assert np.isnan(fused[0][0, 0]) and np.signbit(fused[0][0, 3]) == np.signbit(np.maximum(dtype(-0.0), 0))
    assert np.isnan(fused[1][0, 6])


@pytest.mark.parametrize("units", [70, 1])  # one unit: NumPy sums the column pairwise, so its path runs
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_with_a_bias_and_its_gradient_is_bit_identical(dtype, units, monkeypatch):
    """The pass a Dense layer runs its ReLU in: max(z + b, 0) forward; backward also sums the bias gradient."""
    rng = np.random.default_rng(1)
    z, grad = rng.standard_normal((2, 45, 70)).astype(dtype)
    bias = rng.standard_normal(70).astype(dtype)
    z[0, :6], bias[6:12], grad[1, :6] = SPECIAL, SPECIAL, SPECIAL
    z[:, 12], grad[2:, 12] = 5.0, [1e8, 1.0, -1e8] + [1e-3] * 40  # the sum's order shows in its rounding
    if units == 1:
        z, grad, bias = np.ascontiguousarray(z[:, 12:13]), np.ascontiguousarray(grad[:, 12:13]), bias[12:13].copy()

    def run():
        layer, bias_grad = ReLU(), np.full(units, 99.0, dtype)
        return layer.forward(z, bias=bias), layer.backward(grad, bias_grad=bias_grad), bias_grad

    reference, fused = both_ways(run, monkeypatch)
    assert_same_bits(reference, fused)
    np.testing.assert_array_equal(reference[0], np.maximum(z + bias, 0))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(reference[2], (grad * (reference[0] > 0)).sum(axis=0))


def test_a_network_runs_each_relu_after_a_dense_layer_in_its_compiled_pass(monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", True)
    calls = []
    for name, bias in (("relu", 1), ("relu_backward", 3)):  # the position of the bias (or its gradient)
        kernel = getattr(kernels, name)
        spy = lambda *a, kernel=kernel, name=name, bias=bias: calls.append((name, a[bias].size)) or kernel(*a)  # noqa: E731
        monkeypatch.setattr(kernels, name, spy)
    net = nn.Network([Dense(4, 6), ReLU(), Dense(6, 5), nn.LeakyReLU(), Dropout(0.0), ReLU(), Dense(5, 3), ReLU()])
    assert [(type(layer).__name__, type(relu).__name__) for layer, relu in net.stages] == [
        ("Dense", "ReLU"), ("Dense", "NoneType"), ("LeakyReLU", "NoneType"), ("Dropout", "NoneType"),
        ("ReLU", "NoneType"), ("Dense", "ReLU"),
    ]  # fmt: skip
    net.backward(net.forward(np.ones((2, 4), np.float32), training=True))
    # with the bias (its size; 0 for none): the paired ReLUs forward, then backward in reverse
    assert calls == [("relu", 6), ("relu", 0), ("relu", 3), ("relu_backward", 3), ("relu_backward", 0),
                     ("relu_backward", 6)]  # fmt: skip

    class OwnReLU(ReLU):  # a subclass keeps its own forward: not paired
        pass

    net.layers[1], net.layers[-1] = OwnReLU(), nn.Tanh()  # the stages follow the layers as they are now
    assert [type(relu).__name__ for _, relu in net.stages] == ["NoneType"] * 8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.7])
def test_dropout_is_bit_identical(p, dtype, monkeypatch):
    x = np.random.default_rng(0).standard_normal((64, 50)).astype(dtype)
    x[0, :6] = SPECIAL

    def run():
        layer = Dropout(p, rng=np.random.default_rng(1))
        return layer.forward(x, training=True), layer.backward(x), layer._mask

    reference, fused = both_ways(run, monkeypatch)
    assert_same_bits(reference, fused)
    assert 0 < np.count_nonzero(fused[2]) < fused[2].size


def test_a_bias_of_another_dtype_keeps_the_layer_output_dtype(monkeypatch):
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)

    def run():
        return [ReLU().forward(z, bias=np.arange(4.0))]  # float64: NumPy's path, in z's dtype as z += b was

    reference, fused = both_ways(run, monkeypatch)
    assert_same_bits(reference, fused)
    assert fused[0].dtype == np.float32


def test_non_contiguous_input_takes_numpy_path(monkeypatch):
    x = np.random.default_rng(0).standard_normal((20, 30)).astype(np.float32).T  # Fortran order

    def run():
        relu, dropout = ReLU(), Dropout(0.5, rng=np.random.default_rng(1))
        return relu.forward(x), relu.backward(x), dropout.forward(x, training=True)

    assert_same_bits(*both_ways(run, monkeypatch))


@pytest.mark.parametrize(
    "clipper", [nn.NoClip(), nn.ClipByValue(0.01), nn.ClipByNorm(0.1)], ids=["none", "value", "norm"]
)
def test_training_with_dropout_is_bit_identical(clipper, monkeypatch):
    monkeypatch.setattr(kernels, "ENABLED", kernels.ENABLED)
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((200, 12)).astype(np.float32), rng.integers(0, 3, 200)
    weights = []
    for fused in (False, True):
        kernels.ENABLED = fused
        net = nn.mlp([12, 16, 16, 3], dropout=0.3, rng=np.random.default_rng(0))
        trainer = nn.Trainer(net, nn.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3), clipper=clipper, batch_size=32,
                             rng=np.random.default_rng(1))  # fmt: skip
        for epoch in range(2):
            trainer.train_epoch(X, y, epoch)
        weights.append(net.params)
    for name in weights[0]:
        np.testing.assert_array_equal(weights[1][name], weights[0][name], err_msg=name)


@pytest.mark.parametrize(("value", "enabled"), [("numpy", "False"), ("", "True")])
def test_environment_variable_selects_the_implementation(value, enabled):
    env = os.environ | {"NNLAB_KERNELS": value}
    done = subprocess.run([sys.executable, "-c", "from nn import kernels; print(kernels.ENABLED)"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == enabled
