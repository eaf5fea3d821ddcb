"""Optimizers with the update rules documented for ``torch.optim`` (SGD, Adam, AdamW, RMSprop).

``step(params, grads, lr)`` updates ``params`` in place. State is keyed by parameter name
(``"dense0.W"``). L2 weight decay is added to the gradient as torch does (decoupled for AdamW);
it applies to weight matrices (ndim >= 2) only, unless ``decay_bias=True``.

``step`` also applies the gradient clipping a clipper planned (``nn.clipping.Clip``), in the same
pass as the update. ``grads`` are scratch space: after a step their contents are unspecified.

Two implementations of one update rule. ``update`` is the NumPy reference: each parameter is updated
in chunks of ``CHUNK`` elements, so that its several element-wise passes run in cache instead of
streaming the whole matrix from memory each time. ``fused`` calls the compiled kernel of
``nn.kernels`` (one pass) when numba is installed; both give bit-identical results.

To add an optimizer, subclass ``Optimizer`` and define ``update`` (required); list its per-parameter
state in ``state_keys``. ``fused`` is optional: without one, ``step`` runs ``update`` (with clipping and
L2 applied before it) whether numba is installed or not.
"""

from __future__ import annotations

import math

import numpy as np

from nn import kernels
from nn.checks import check, in_range, is_number
from nn.clipping import NO_CLIP, Clip

CHUNK = 1 << 16


class Optimizer:
    """Base class: base learning rate, weight decay, per-parameter state and the chunked step.

    A subclass must define ``update`` (the NumPy update of one chunk; ``step`` has already clipped the
    gradient and added coupled L2 to it) and lists its per-parameter state arrays in ``state_keys``.
    Defining ``fused`` (the same rule in one compiled pass, bit-identical to ``update``) is optional:
    ``step`` calls it only where ``nn.kernels`` is enabled and the class defining it is the class defining
    ``update`` or a subclass of it, so that a subclass overriding ``update`` alone never runs the parent's
    kernel.
    """

    decoupled = False  # True: weight decay shrinks the parameter instead of adding to the gradient
    state_keys: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0, decay_bias: bool = False) -> None:
        check(is_number(lr) and lr > 0, "lr", lr, "a positive number (the learning rate)")
        check(is_number(weight_decay) and weight_decay >= 0, "weight_decay", weight_decay, "a number >= 0")
        check(isinstance(decay_bias, bool), "decay_bias", decay_bias, "true or false")
        self.lr, self.weight_decay, self.decay_bias = lr, weight_decay, decay_bias
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0
        self._scratch: dict[np.dtype, np.ndarray] = {}

    def decay_for(self, param: np.ndarray) -> float:
        """The weight decay that applies to ``param``: biases (ndim 1) are exempt unless decay_bias."""
        return self.weight_decay if (self.decay_bias or param.ndim >= 2) else 0.0

    def step(
        self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float | None = None, clip: Clip = NO_CLIP
    ) -> None:
        """One update of every parameter with learning rate ``lr`` (the base ``self.lr`` if None),
        from the gradients clipped by ``clip``."""
        lr = self.lr if lr is None else lr
        self.steps += 1
        for name, param in params.items():
            self.first = name not in self.state
            if self.first:
                self.state[name] = {k: np.zeros_like(param) for k in self.state_keys}
            slot = self.state[name]
            flat_param, flat_grad = param.reshape(-1), grads[name].reshape(-1)
            flat_slot = {k: v.reshape(-1) for k, v in slot.items()}
            decay = self.decay_for(param)
            if kernels.ENABLED and flat_param.flags.c_contiguous and _has_fused(type(self)):
                self.fused(flat_param, flat_grad, flat_slot, lr, decay, _clip_args(clip, param.dtype))
                continue
            scratch = self._scratch.get(param.dtype)
            if scratch is None:
                scratch = self._scratch[param.dtype] = np.empty(CHUNK, param.dtype)
            for lo in range(0, flat_param.size, CHUNK):
                part = slice(lo, lo + CHUNK)
                p, g = flat_param[part], flat_grad[part]
                tmp = scratch[: p.size]
                clip.apply(g)
                if decay and not self.decoupled:
                    np.multiply(p, decay, out=tmp)
                    g += tmp
                self.update(p, g, {k: v[part] for k, v in flat_slot.items()}, lr, decay, tmp)

    def fused(self, p: np.ndarray, g: np.ndarray, s: dict[str, np.ndarray], lr: float, decay: float, clip) -> None:
        """Optional: ``update`` with clipping (``clip``: the (scale, bound) of ``_clip_args``) and L2 in one
        compiled pass over the flat parameter ``p``. ``step`` never calls this base version."""
        raise NotImplementedError

    def update(self, p: np.ndarray, g: np.ndarray, s: dict[str, np.ndarray], lr: float, decay: float, tmp) -> None:
        """Required: update the flat chunk ``p`` in place from gradient ``g`` (clipped, coupled L2 already
        added; ``g`` may be overwritten) and state ``s`` (this chunk of each ``state_keys`` array).

        ``tmp`` is scratch space of ``p``'s size; ``decay`` is only needed by decoupled optimizers.
        """
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Plain arrays and numbers: enough to resume bit-identically."""
        arrays = {f"{name}/{key}": value.copy() for name, slot in self.state.items() for key, value in slot.items()}
        return {"steps": self.steps, "names": sorted(self.state), "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.state = {name: {} for name in state["names"]}
        for flat, value in state["arrays"].items():
            name, key = flat.rsplit("/", 1)
            self.state[name][key] = np.array(value)


class SGD(Optimizer):
    """SGD, with optional momentum as torch has it: ``buf = mu*buf + (1-dampening)*g`` (``buf = g`` on the
    first step), then ``p -= lr*buf``, or ``p -= lr*(g + mu*buf)`` with Nesterov."""

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        decay_bias: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, decay_bias)
        check(in_range(momentum, 0, 1, high_open=True), "momentum", momentum, "in [0, 1)")
        check(in_range(dampening, 0, 1, high_open=True), "dampening", dampening, "in [0, 1)")
        check(
            not nesterov or (momentum > 0 and dampening == 0),
            "nesterov",
            nesterov,
            "false unless momentum > 0 and dampening = 0 (Nesterov momentum needs momentum)",
        )
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.state_keys = ("momentum_buffer",) if momentum else ()

    def update(self, p, g, s, lr, decay, tmp):
        direction = g
        if self.momentum:
            buf = s["momentum_buffer"]
            buf *= self.momentum
            if self.dampening and not self.first:
                np.multiply(g, 1 - self.dampening, out=tmp)
                buf += tmp
            else:
                buf += g
            direction = buf
            if self.nesterov:
                np.multiply(buf, self.momentum, out=tmp)
                tmp += g
                direction = tmp
        np.multiply(direction, lr, out=tmp)
        p -= tmp

    def fused(self, p, g, s, lr, decay, clip):
        t = p.dtype.type
        buf = s.get("momentum_buffer", p[:0])
        keep = t(1 - self.dampening) if self.dampening and not self.first else t(1)
        kernels.sgd(p, g, buf, t(lr), t(self.momentum), keep, self.nesterov, t(decay), *clip)


class Adam(Optimizer):
    """Adam with bias correction (torch's form: ``p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``);
    ``weight_decay`` is L2 added to the gradient."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decay_bias: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, decay_bias)
        check(
            len(betas) == 2 and all(in_range(b, 0, 1, high_open=True) for b in betas),
            "betas",
            list(betas),
            "two numbers in [0, 1)",
        )
        check(is_number(eps) and eps > 0, "eps", eps, "a positive number")
        beta1, beta2 = betas
        self.betas, self.eps = (float(beta1), float(beta2)), eps

    def update(self, p, g, s, lr, decay, tmp):
        beta1, beta2 = self.betas
        if self.decoupled and decay:
            p *= 1 - lr * decay
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= beta1
        np.multiply(g, 1 - beta1, out=tmp)
        m += tmp
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - beta2
        v += tmp
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(bias_correction2)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / bias_correction1
        p -= tmp

    def fused(self, p, g, s, lr, decay, clip):
        t, (beta1, beta2) = p.dtype.type, self.betas
        coupled = 0.0 if self.decoupled else decay
        shrink = 1 - lr * decay if self.decoupled else 1.0
        bias_correction1, bias_correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        kernels.adam(
            p, g, s["exp_avg"], s["exp_avg_sq"], t(beta1), t(1 - beta1), t(beta2), t(1 - beta2),
            t(math.sqrt(bias_correction2)), t(self.eps), t(lr / bias_correction1), t(coupled), t(shrink), *clip,
        )  # fmt: skip


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decay_bias=False) -> None:
        super().__init__(lr, betas, eps, weight_decay, decay_bias)


class RMSprop(Optimizer):
    """RMSprop: ``v = alpha*v + (1-alpha)*g^2``; step ``lr * g / (sqrt(v) + eps)``, with optional
    momentum (``buf = mu*buf + g/(sqrt(v)+eps)``) and centering (``v - mean(g)^2`` under the root)."""

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        decay_bias: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, decay_bias)
        check(in_range(alpha, 0, 1, high_open=True), "alpha", alpha, "in [0, 1)")
        check(in_range(momentum, 0, 1, high_open=True), "momentum", momentum, "in [0, 1)")
        check(is_number(eps) and eps > 0, "eps", eps, "a positive number")
        self.alpha, self.eps, self.momentum, self.centered = alpha, eps, momentum, centered
        self.state_keys = (
            ("square_avg",) + (("grad_avg",) if centered else ()) + (("momentum_buffer",) if momentum else ())
        )

    def update(self, p, g, s, lr, decay, tmp):
        v = s["square_avg"]
        v *= self.alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.alpha
        v += tmp
        if self.centered:
            g_avg = s["grad_avg"]
            g_avg *= self.alpha
            g_avg += (1 - self.alpha) * g
            np.multiply(g_avg, g_avg, out=tmp)
            np.subtract(v, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        if self.momentum:
            buf = s["momentum_buffer"]
            buf *= self.momentum
            buf += tmp
            np.multiply(buf, lr, out=tmp)
        else:
            tmp *= lr
        p -= tmp

    def fused(self, p, g, s, lr, decay, clip):
        t, empty = p.dtype.type, p[:0]
        kernels.rmsprop(
            p, g, s["square_avg"], s.get("grad_avg", empty), s.get("momentum_buffer", empty), t(self.alpha),
            t(1 - self.alpha), t(self.eps), t(lr), t(self.momentum), t(decay), *clip,
        )  # fmt: skip


def _has_fused(cls: type) -> bool:
    """Whether ``cls`` has a ``fused`` that implements its ``update``: defined below ``Optimizer``, in the class
    that defines ``update`` or in a subclass of it (a subclass that overrides ``update`` alone runs it)."""
    fused_owner = next(c for c in cls.__mro__ if "fused" in vars(c))
    update_owner = next(c for c in cls.__mro__ if "update" in vars(c))
    return fused_owner is not Optimizer and issubclass(fused_owner, update_owner)


def _clip_args(clip: Clip, dtype: np.dtype) -> tuple:
    """(scale, bound) of ``clip`` for a kernel, in ``dtype`` as ``Clip.apply`` uses them."""
    t = dtype.type
    return t(clip.scale), t(math.inf if clip.bound is None else clip.bound)
