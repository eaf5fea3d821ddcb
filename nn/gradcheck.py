"""Numerical gradient checks in float64: central differences against every analytic backward.

Run ``python -m nn.gradcheck`` to check every layer, activation, loss and a whole network; it prints
the relative error of each and exits non-zero if any exceeds the tolerance (1e-7).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nn.layers import Dense, Dropout, Layer
from nn.losses import CrossEntropy, SoftmaxCrossEntropy
from nn.network import Network, mlp

TOLERANCE = 1e-7


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / max(||a|| + ||n||, tiny): 0 when both vanish."""
    denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / max(denom, 1e-300))


def numeric_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x``, perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        out[i] = (plus - minus) / (2 * eps)
    return grad


def check_layer(layer: Layer, x: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Errors of d(sum(forward(x) * r))/dx and /dparams for a random projection r; x must be float64."""
    projection = rng.standard_normal(layer.forward(x, training=True).shape)

    def objective() -> float:
        return float(np.sum(layer.forward(x, training=True) * projection))

    layer.forward(x, training=True)
    analytic_x = layer.backward(projection.copy())
    errors = {"input": relative_error(analytic_x, numeric_gradient(objective, x))}
    for key, param in layer.params.items():
        layer.forward(x, training=True)
        layer.backward(projection.copy())
        errors[key] = relative_error(layer.grads[key].copy(), numeric_gradient(objective, param))
    return errors


def check_loss(loss, inputs: np.ndarray, y: np.ndarray) -> float:
    """Error of the loss's backward wrt its input (logits or probabilities)."""
    loss.forward(inputs, y)
    analytic = loss.backward().copy()
    return relative_error(analytic, numeric_gradient(lambda: loss.forward(inputs, y), inputs))


def check_network(network: Network, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Errors for every parameter of a float64 network under the fused softmax cross-entropy."""
    loss = SoftmaxCrossEntropy()

    def objective() -> float:
        return loss.forward(network.forward(x, training=False), y)

    objective()
    network.backward(loss.backward())
    analytic = {k: v.copy() for k, v in network.grads.items()}
    return {k: relative_error(analytic[k], numeric_gradient(objective, p)) for k, p in network.params.items()}


def check_all(seed: int = 0) -> dict[str, float]:
    """Every differentiable piece of ``nn``: name -> worst relative error."""
    rng = np.random.default_rng(seed)
    # inputs kept away from 0 so finite differences never straddle a ReLU kink
    x = rng.uniform(0.1, 1.0, (4, 5)) * rng.choice([-1.0, 1.0], (4, 5))
    y = rng.integers(0, 3, 4)
    results: dict[str, float] = {}
    pieces: list[tuple[str, Layer]] = [
        ("Dense", Dense(5, 3, rng=rng, dtype=np.float64)),
        ("ReLU", ReLU()),
        ("LeakyReLU", LeakyReLU(0.1)),
        ("Sigmoid", Sigmoid()),
        ("Tanh", Tanh()),
        ("GELU", GELU()),
        ("Softmax", Softmax()),
    ]
    for name, layer in pieces:
        results[name] = max(check_layer(layer, x.copy(), rng).values())
    dropout = Dropout(0.5, rng=np.random.default_rng(seed))
    results["Dropout"] = _check_dropout(dropout, x.copy(), rng)
    logits = rng.standard_normal((4, 3))
    results["SoftmaxCrossEntropy"] = check_loss(SoftmaxCrossEntropy(), logits, y)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    results["CrossEntropy"] = check_loss(CrossEntropy(), probs, y)
    for activation in ("relu", "tanh", "gelu"):
        net = mlp([5, 7, 6, 3], activation=activation, init="xavier_normal", rng=rng, dtype=np.float64)
        results[f"mlp[{activation}]"] = max(check_network(net, x.copy(), y).values())
    return results


def _check_dropout(layer: Dropout, x: np.ndarray, rng: np.random.Generator) -> float:
    """Dropout with its mask frozen: the gradient of a fixed mask times x."""
    state = layer.rng.bit_generator.state

    def forward() -> np.ndarray:
        layer.rng.bit_generator.state = state
        return layer.forward(x, training=True)

    projection = rng.standard_normal(x.shape)
    forward()
    analytic = layer.backward(projection.copy())
    return relative_error(analytic, numeric_gradient(lambda: float(np.sum(forward() * projection)), x))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    results = check_all(args.seed)
    failed = 0
    for name, error in results.items():
        ok = error < args.tolerance
        failed += not ok
        print(f"{name:22s} relative error {error:.2e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(results) - failed} passed, {failed} failed (tolerance {args.tolerance:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
