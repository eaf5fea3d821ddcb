"""Gradient clipping, applied in place to a ``name -> gradient`` dict.

Every clipper returns the global L2 norm of the gradients *before* clipping (for logging);
``NoClip`` and ``ClipByValue`` compute it only when asked (``measure=True``) since it costs a pass.
"""

from __future__ import annotations

import numpy as np


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient entry (``clip_grad_norm_``'s total_norm)."""
    total = 0.0
    for g in grads.values():
        flat = g.ravel()
        total += float(np.dot(flat, flat))
    return float(np.sqrt(total))


class NoClip:
    """Leave gradients as they are."""

    def __call__(self, grads: dict[str, np.ndarray], measure: bool = False) -> float | None:
        return global_norm(grads) if measure else None


class ClipByValue:
    """Clamp every gradient entry to ``[-value, value]`` (``torch.nn.utils.clip_grad_value_``)."""

    def __init__(self, value: float = 5.0) -> None:
        if not value > 0:
            raise ValueError(f"clipping value must be positive, got {value}")
        self.value = value

    def __call__(self, grads: dict[str, np.ndarray], measure: bool = False) -> float | None:
        norm = global_norm(grads) if measure else None
        for g in grads.values():
            np.clip(g, -self.value, self.value, out=g)
        return norm


class ClipByNorm:
    """Scale all gradients by ``max_norm / (total_norm + 1e-6)`` when the global norm exceeds
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_`` with the 2-norm)."""

    def __init__(self, max_norm: float = 1.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm

    def __call__(self, grads: dict[str, np.ndarray], measure: bool = False) -> float:
        norm = global_norm(grads)
        coef = self.max_norm / (norm + 1e-6)
        if coef < 1:
            for g in grads.values():
                g *= g.dtype.type(coef)
        return norm
