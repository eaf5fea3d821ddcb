"""Layers with parameters or randomness: ``Dense`` and ``Dropout``, and their base class.

A layer's contract: ``forward(x, training)`` keeps what ``backward`` needs;
``backward(grad_out)`` returns the gradient with respect to the input and fills
``grads`` with the same keys as ``params``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nn import kernels
from nn.checks import check, in_range
from nn.initializers import get_initializer

if TYPE_CHECKING:
    from nn.activations import ReLU


class Layer:
    """Base class: a layer without parameters that passes gradients through."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments, JSON-serializable, so ``type(layer)(**config)`` rebuilds it."""
        return {}

    def astype(self, dtype) -> None:
        """Cast parameters (and gradient buffers) to ``dtype`` in place of the old arrays."""
        for key in self.params:
            self.params[key] = self.params[key].astype(dtype)
            self.grads[key] = np.zeros_like(self.params[key])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        ``W`` has shape ``(in_features, out_features)``, ``b`` shape ``(out_features,)``.
    init : str
        Weight initializer name (see ``nn.initializers``); biases start at zero.
    rng : np.random.Generator
        Source of the initial weights.
    dtype : numpy dtype
        float32 for training, float64 for gradient checks.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str = "he_normal",
        rng: np.random.Generator | None = None,
        dtype=np.float32,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Dense needs positive sizes, got {in_features} -> {out_features}")
        self.in_features, self.out_features, self.init = in_features, out_features, init
        rng = rng if rng is not None else np.random.default_rng()
        self.params = {
            "W": get_initializer(init)(in_features, out_features, rng, dtype),
            "b": np.zeros(out_features, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.needs_input_grad = True
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False, relu: ReLU | None = None) -> np.ndarray:
        """x: (B, in_features) -> (B, out_features). With ``relu``, the ReLU layer after this one: returns
        relu(x @ W + b), the bias added in the ReLU's pass over the output."""
        self._x = x
        z = x @ self.params["W"]
        if relu is not None:
            return relu.forward(z, training, bias=self.params["b"])
        z += self.params["b"]
        return z

    def backward(self, grad_out: np.ndarray, relu: ReLU | None = None) -> np.ndarray | None:
        """grad_out: (B, out_features) -> (B, in_features), or None when the input needs no gradient.

        With ``relu``, the ReLU of ``forward``: grad_out is the gradient wrt its output, and its backward
        pass also sums the bias gradient.
        """
        if relu is not None:
            grad_out = relu.backward(grad_out, bias_grad=self.grads["b"])
        else:
            np.sum(grad_out, axis=0, out=self.grads["b"])
        np.matmul(self._x.T, grad_out, out=self.grads["W"])
        if not self.needs_input_grad:
            return None
        return grad_out @ self.params["W"].T

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "init": self.init}


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability ``p`` and scale survivors by ``1/(1-p)``.

    Identity at evaluation time (``training=False``).
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        check(in_range(p, 0, 1, high_open=True), "p", p, "in [0, 1) (the dropout probability)")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x: (B, D) -> (B, D)."""
        if not training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        scale = x.dtype.type(1.0 - self.p)
        if kernels.ENABLED and x.flags.c_contiguous and x.dtype in kernels.FLOATS:  # one pass, same values
            out = np.empty_like(x)
            kernels.dropout(x.reshape(-1), keep.reshape(-1), x.dtype.type(self.p), scale, out.reshape(-1))
            self._mask = keep
            return out
        self._mask = (keep >= self.p).astype(x.dtype) / scale
        return x * self._mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return grad_out
        return grad_out * self._mask

    def config(self) -> dict:
        return {"p": self.p}
