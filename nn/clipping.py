"""Gradient clipping, folded into the optimizer's pass over the gradients.

A clipper's ``plan(grads, measure)`` returns the global L2 norm of the gradients *before* clipping
(for logging; ``NoClip`` and ``ClipByValue`` compute it only when asked, since it costs a pass) and a
``Clip``: what to do to each gradient entry, ``g -> clip(scale * g, -bound, bound)``. The optimizer
applies it in the same pass as its update (``optimizer.step(params, grads, lr, clip)``), so clipping
costs no pass of its own. Calling a clipper, ``clipper(grads)``, clips ``grads`` in place instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nn.checks import check, is_number


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient entry (``clip_grad_norm_``'s total_norm)."""
    total = 0.0
    for g in grads.values():
        flat = g.ravel()
        total += float(np.dot(flat, flat))
    return float(np.sqrt(total))


@dataclass(frozen=True)
class Clip:
    """``g -> clip(scale * g, -bound, bound)``, element-wise; ``scale=1`` and ``bound=None`` leave g as it is."""

    scale: float = 1.0
    bound: float | None = None

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.bound is None

    def apply(self, g: np.ndarray) -> None:
        """Clip ``g`` in place."""
        if self.scale != 1.0:
            g *= g.dtype.type(self.scale)
        if self.bound is not None:
            np.clip(g, -self.bound, self.bound, out=g)


NO_CLIP = Clip()


class Clipper:
    """Base class: ``plan`` says how to clip; calling the clipper clips in place and returns the norm."""

    def plan(self, grads: dict[str, np.ndarray], measure: bool = False) -> tuple[float | None, Clip]:
        raise NotImplementedError

    def __call__(self, grads: dict[str, np.ndarray], measure: bool = False) -> float | None:
        norm, clip = self.plan(grads, measure)
        if not clip.is_identity:
            for g in grads.values():
                clip.apply(g)
        return norm


class NoClip(Clipper):
    """Leave gradients as they are."""

    def plan(self, grads, measure=False):
        return (global_norm(grads) if measure else None), NO_CLIP


class ClipByValue(Clipper):
    """Clamp every gradient entry to ``[-value, value]`` (``torch.nn.utils.clip_grad_value_``)."""

    def __init__(self, value: float = 5.0) -> None:
        check(is_number(value) and value > 0, "value", value, "a positive number (the clipping bound)")
        self.value = value

    def plan(self, grads, measure=False):
        return (global_norm(grads) if measure else None), Clip(bound=self.value)


class ClipByNorm(Clipper):
    """Scale all gradients by ``max_norm / (total_norm + 1e-6)`` when the global norm exceeds
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_`` with the 2-norm)."""

    def __init__(self, max_norm: float = 1.0) -> None:
        check(is_number(max_norm) and max_norm > 0, "max_norm", max_norm, "a positive number")
        self.max_norm = max_norm

    def plan(self, grads, measure=False):
        norm = global_norm(grads)
        coef = self.max_norm / (norm + 1e-6)
        return norm, (Clip(scale=coef) if coef < 1 else NO_CLIP)
