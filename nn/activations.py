"""Element-wise activations and the softmax output layer; each backward rule sits under its forward."""

from __future__ import annotations

import numpy as np

from nn import kernels
from nn.layers import Layer


class ReLU(Layer):
    """max(x, 0). A Dense layer runs the ReLU after it with its bias (``Dense.forward(x, relu=...)``): the
    bias is added in the ReLU's pass and its gradient summed in the ReLU's backward pass. With numba, each
    direction is one compiled pass (``nn.kernels``; same results)."""

    def forward(self, x: np.ndarray, training: bool = False, bias: np.ndarray | None = None) -> np.ndarray:
        """x: (B, D), bias: (D,) or None -> max(x + bias, 0), (B, D)."""
        if _compiled(x, bias):
            self._out = np.empty_like(x)
            kernels.relu(_rows(x), _no_bias(x) if bias is None else bias, _rows(self._out))
        elif bias is None:
            self._out = np.maximum(x, 0)
        else:
            self._out = np.add(x, bias, out=np.empty_like(x))  # in x's dtype, as Dense's ``z += b`` was
            np.maximum(self._out, 0, out=self._out)
        return self._out

    def backward(self, grad_out: np.ndarray, bias_grad: np.ndarray | None = None) -> np.ndarray:
        """grad_out: (B, D) -> (B, D); with ``bias_grad`` (D,), also writes the result's sum over the batch there."""
        out = self._out
        if _compiled(grad_out, bias_grad) and (grad_out.dtype, grad_out.shape) == (out.dtype, out.shape):
            grad_in = np.empty_like(grad_out)
            kernels.relu_backward(
                _rows(grad_out), _rows(out), _rows(grad_in), _no_bias(out) if bias_grad is None else bias_grad
            )
            return grad_in
        grad_in = grad_out * (out > 0)
        if bias_grad is not None:
            np.sum(grad_in, axis=0, out=bias_grad)
        return grad_in


def _compiled(x: np.ndarray, bias: np.ndarray | None) -> bool:
    """Whether ``nn.kernels`` take x (and the (D,) bias or its gradient): contiguous arrays of one float dtype.

    With a bias, x must be (B, D) with D > 1: NumPy sums a single column pairwise, not row after row."""
    if not (kernels.ENABLED and x.size and x.flags.c_contiguous and x.dtype in kernels.FLOATS):
        return False
    if bias is None:
        return True
    same = bias.shape == x.shape[1:] and bias.dtype == x.dtype and bias.flags.c_contiguous
    return x.ndim == 2 and x.shape[1] > 1 and same


def _rows(x: np.ndarray) -> np.ndarray:
    """x as (rows, last axis), a view: the kernels' shape."""
    return x.reshape(-1, x.shape[-1])


def _no_bias(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1)[:0]


class LeakyReLU(Layer):
    """x if x > 0 else slope * x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._positive = x > 0
        return np.where(self._positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        slope = grad_out.dtype.type(self.negative_slope)
        return np.where(self._positive, grad_out, grad_out * slope)

    def config(self) -> dict:
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        e = np.exp(-np.abs(x))
        self._out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self._out * (1 - self._out)


class Tanh(Layer):
    """tanh(x)."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * (1 - self._out * self._out)


class GELU(Layer):
    """GELU with the tanh approximation (``torch.nn.GELU(approximate="tanh")``).

    0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
    """

    _C = float(np.sqrt(2.0 / np.pi))  # a Python float: an np.float64 would promote float32 inputs

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        self._t = np.tanh(self._C * (x + 0.044715 * x**3))
        return 0.5 * x * (1 + self._t)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, t = self._x, self._t
        du = self._C * (1 + 3 * 0.044715 * x * x)
        return grad_out * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


class Softmax(Layer):
    """Row-wise softmax (B, K) -> (B, K); its backward is the Jacobian-vector product.

    For training, prefer ``nn.losses.SoftmaxCrossEntropy`` on logits: it is fused and stable.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._out = softmax(x)
        return self._out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        s = self._out
        return s * (grad_out - np.sum(grad_out * s, axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Stable softmax over the last axis: (B, K) -> (B, K)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
}
