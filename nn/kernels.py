"""Fused element-wise passes: the optimizer updates (clipping, L2 and the update rule in one pass over
memory), a Dense layer's bias with the ReLU after it, forward and backward, and dropout's mask.

NumPy needs five to nine element-wise passes per parameter for an update (``nn.optimizers``, the
readable reference); each pass streams the whole array. The kernels here, compiled by numba when it
is installed (``pip install -e ".[fast]"``), read each gradient, parameter and state entry once and
write each once. (One thread: a parallel version timed in the training loop was no better than
the noise between runs, and its threads compete with BLAS's.) They repeat the reference's operations
in its order and its floating-point types (Python-float constants rounded to the array's dtype first, as NumPy does), so
both give bit-identical results; ``tests/nn/test_kernels.py`` checks that for every option. A Dense
layer and the ReLU after it take five NumPy passes over their (B, D) output: the bias add and
``np.maximum`` forward; the mask, the multiply and the bias gradient's sum backward. The kernels make
them one pass each way. Dropout's three passes after its random draws become one.

``ENABLED`` is False without numba or with ``NNLAB_KERNELS=numpy`` in the environment.
"""

from __future__ import annotations

import os

import numpy as np

try:
    import numba
except ImportError:  # the optional extra is not installed: NumPy does every update
    numba = None

ENABLED = numba is not None and os.environ.get("NNLAB_KERNELS", "").lower() != "numpy"
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # the dtypes the kernels are checked for


def _compile(function):
    # error_model="numpy": x / 0 gives inf or NaN as NumPy does, instead of a check that stops vectorizing
    return numba.njit(cache=True, nogil=True, error_model="numpy")(function) if numba is not None else function


def _inline(function):
    return numba.njit(inline="always", cache=True, error_model="numpy")(function) if numba is not None else function


@_inline
def _clip(g, scale, bound):
    """``Clip.apply`` for one entry: ``g * scale`` (exact for scale 1), clamped to ±bound; NaN stays NaN.

    Selects rather than branches, so that the loops around it vectorize."""
    g = g * scale
    g = -bound if g < -bound else g
    return bound if g > bound else g


@_inline
def _decayed(grad, p, decay, with_decay):
    """``grad + p * decay`` (L2), or grad untouched (-0.0 stays -0.0) without decay."""
    return grad + p * decay if with_decay else grad


@_compile
def sgd(p, g, buf, lr, momentum, keep, nesterov, decay, scale, bound):
    """SGD on flat arrays; ``buf`` is the momentum buffer (size 0 without momentum), ``keep`` is
    ``1 - dampening``, or 1 on the first step (exact: ``grad * 1`` is grad)."""
    with_decay = decay != 0
    if buf.size == 0:
        for i in range(p.size):
            grad = _decayed(_clip(g[i], scale, bound), p[i], decay, with_decay)
            p[i] = p[i] - grad * lr
        return
    for i in range(p.size):
        grad = _decayed(_clip(g[i], scale, bound), p[i], decay, with_decay)
        b = buf[i] * momentum + grad * keep
        buf[i] = b
        step = b * momentum + grad if nesterov else b
        p[i] = p[i] - step * lr


@_compile
def adam(p, g, m, v, beta1, keep1, beta2, keep2, root_bc2, eps, step_size, decay, shrink, scale, bound):
    """Adam/AdamW on flat arrays. ``decay``: coupled L2; ``shrink``: AdamW's ``1 - lr*wd`` (1 for none)."""
    with_decay, with_shrink = decay != 0, shrink != 1
    for i in range(p.size):
        w = p[i] * shrink if with_shrink else p[i]
        grad = _decayed(_clip(g[i], scale, bound), p[i], decay, with_decay)
        mi = m[i] * beta1 + grad * keep1
        vi = v[i] * beta2 + (grad * grad) * keep2
        m[i], v[i] = mi, vi
        denominator = np.sqrt(vi) / root_bc2 + eps
        p[i] = w - (mi / denominator) * step_size


@_compile
def rmsprop(p, g, v, g_avg, buf, alpha, keep, eps, lr, momentum, decay, scale, bound):
    """RMSprop on flat arrays; ``g_avg`` (centered) and ``buf`` (momentum) have size 0 when off."""
    centered, use_momentum, with_decay = g_avg.size > 0, buf.size > 0, decay != 0
    for i in range(p.size):
        grad = _decayed(_clip(g[i], scale, bound), p[i], decay, with_decay)
        vi = v[i] * alpha + (grad * grad) * keep
        v[i] = vi
        if centered:
            ga = g_avg[i] * alpha + keep * grad
            g_avg[i] = ga
            denominator = np.sqrt(vi - ga * ga) + eps
        else:
            denominator = np.sqrt(vi) + eps
        step = grad / denominator
        if use_momentum:
            b = buf[i] * momentum + step
            buf[i] = b
            p[i] = p[i] - b * lr
        else:
            p[i] = p[i] - step * lr


@_compile
def relu(x, bias, out):
    """``out = np.maximum(x + bias, 0)`` on (B, D) arrays, ``bias`` (D,) or empty for none: NaN stays NaN and -0.0
    becomes 0.0, as in NumPy."""
    with_bias = bias.size > 0
    rows, cols = x.shape
    for i in range(rows):
        for j in range(cols):
            v = x[i, j] + bias[j] if with_bias else x[i, j]
            out[i, j] = v if v > 0 or v != v else 0.0


@_compile
def relu_backward(grad, out, result, bias_grad):
    """``result = grad * (out > 0)`` on (B, D) arrays (a multiply, not a select: NaN * 0 stays NaN); with
    ``bias_grad`` (D,) not empty, also ``bias_grad = result.sum(axis=0)``, added row after row from 0 as NumPy does."""
    with_bias = bias_grad.size > 0
    if with_bias:
        bias_grad[:] = 0
    rows, cols = grad.shape
    for i in range(rows):
        for j in range(cols):
            result[i, j] = grad[i, j] * (out[i, j] > 0)
            if with_bias:
                bias_grad[j] += result[i, j]  # the stored value: a sum in the array's own precision


@_compile
def dropout(x, keep, p, scale, out):
    """Inverted dropout on flat arrays: the uniform draws ``keep`` become the mask ``(keep >= p) / scale``
    in place and ``out = x * mask``, in ``nn.layers.Dropout``'s operations and types."""
    for i in range(x.size):
        keep[i] = (keep[i] >= p) / scale
        out[i] = x[i] * keep[i]
