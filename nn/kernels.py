"""Fused element-wise passes: the optimizer updates (clipping, L2 and the update rule in one pass over
memory), ReLU's forward and backward, and dropout's mask.

NumPy needs five to nine element-wise passes per parameter for an update (``nn.optimizers``, the
readable reference); each pass streams the whole array. The kernels here, compiled by numba when it
is installed (``pip install -e ".[fast]"``), read each gradient, parameter and state entry once and
write each once. (One thread: a parallel version timed in the training loop was no better than
the noise between runs, and its threads compete with BLAS's.) They repeat the reference's operations
in its order and its floating-point types (Python-float constants rounded to the array's dtype first, as NumPy does), so
both give bit-identical results; ``tests/nn/test_kernels.py`` checks that for every option. ReLU's
two NumPy passes (``np.maximum`` takes its slower NaN-aware path; the backward builds a mask, then
multiplies) become one each, and so do dropout's three after its random draws.

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


@_compile
def sgd(p, g, buf, lr, momentum, keep, damped, nesterov, decay, scale, bound):
    """SGD on flat arrays; ``buf`` is the momentum buffer (size 0 without momentum), ``keep`` is
    ``1 - dampening`` and ``damped`` whether it applies (not on the first step)."""
    use_momentum = buf.size > 0
    for i in range(p.size):
        grad = _clip(g[i], scale, bound)
        if decay != 0:
            grad = grad + p[i] * decay
        step = grad
        if use_momentum:
            b = buf[i] * momentum
            b = b + grad * keep if damped else b + grad
            buf[i] = b
            step = b * momentum + grad if nesterov else b
        p[i] = p[i] - step * lr


@_compile
def adam(p, g, m, v, beta1, keep1, beta2, keep2, root_bc2, eps, step_size, decay, shrink, scale, bound):
    """Adam/AdamW on flat arrays. ``decay``: coupled L2; ``shrink``: AdamW's ``1 - lr*wd`` (1 for none)."""
    for i in range(p.size):
        w = p[i]
        if shrink != 1:
            w = w * shrink
        grad = _clip(g[i], scale, bound)
        if decay != 0:
            grad = grad + p[i] * decay
        mi = m[i] * beta1 + grad * keep1
        vi = v[i] * beta2 + (grad * grad) * keep2
        m[i], v[i] = mi, vi
        denominator = np.sqrt(vi) / root_bc2 + eps
        p[i] = w - (mi / denominator) * step_size


@_compile
def rmsprop(p, g, v, g_avg, buf, alpha, keep, eps, lr, momentum, decay, scale, bound):
    """RMSprop on flat arrays; ``g_avg`` (centered) and ``buf`` (momentum) have size 0 when off."""
    centered, use_momentum = g_avg.size > 0, buf.size > 0
    for i in range(p.size):
        grad = _clip(g[i], scale, bound)
        if decay != 0:
            grad = grad + p[i] * decay
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
def relu(x, out):
    """``out = np.maximum(x, 0)`` on flat arrays: NaN stays NaN and -0.0 becomes 0.0, as in NumPy."""
    for i in range(x.size):
        v = x[i]
        out[i] = v if v > 0 or v != v else 0.0


@_compile
def relu_backward(grad, out, result):
    """``result = grad * (out > 0)`` on flat arrays (a multiply, not a select: NaN * 0 stays NaN)."""
    for i in range(grad.size):
        result[i] = grad[i] * (out[i] > 0)


@_compile
def dropout(x, keep, p, scale, out):
    """Inverted dropout on flat arrays: the uniform draws ``keep`` become the mask ``(keep >= p) / scale``
    in place and ``out = x * mask``, in ``nn.layers.Dropout``'s operations and types."""
    for i in range(x.size):
        keep[i] = (keep[i] >= p) / scale
        out[i] = x[i] * keep[i]
