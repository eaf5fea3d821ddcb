"""What to watch per layer while a network trains: weight and gradient norms, the update-to-weight
ratio (healthy near 1e-3), activation mean and std, and the ReLU units that are dead.

``Watch`` samples them inside ``Trainer.train_epoch``: the gradient norms every ``every`` steps (one pass
over the gradients, which the global norm needs anyway), the update ratio every ``ratio_every`` steps
(a copy of the weights before the update). ``activations`` runs the network over a validation sample.
It also remembers when a layer's gradient norm exploded, to explain a divergence.
"""

from __future__ import annotations

import math

import numpy as np

from nn.activations import ReLU
from nn.layers import Dense

EXPLODED = 100.0  # a gradient norm this many times its first measurement has exploded


def norm(array: np.ndarray) -> float:
    """The 2-norm of an array of any shape, accumulated in float64."""
    flat = array.reshape(-1)
    return math.sqrt(float(np.dot(flat, flat)))


class Watch:
    """Per-layer statistics of a network's training, sampled.

    Parameters
    ----------
    network : the network being trained.
    every : measure the per-layer gradient norms every this many steps.
    ratio_every : measure ‖ΔW‖/‖W‖ of each Dense layer every this many steps.
    """

    def __init__(self, network, every: int = 10, ratio_every: int = 50) -> None:
        self.dense = [(name, layer) for name, layer in zip(network.names, network.layers) if isinstance(layer, Dense)]
        self.every, self.ratio_every = every, ratio_every
        self.first: dict[str, float] = {}  # each layer's first gradient norm
        self.exploded: tuple[str, int, int, float] | None = None  # (layer, epoch, step, growth): the first time
        self.begin_epoch()

    def begin_epoch(self) -> None:
        self.grad_norms: dict[str, list[float]] = {name: [] for name, _ in self.dense}
        self.ratios: dict[str, list[float]] = {name: [] for name, _ in self.dense}
        self._before: dict[str, np.ndarray] = {}

    def gradients(self, epoch: int, step: int, force: bool = False) -> float | None:
        """After the backward pass of ``step``: at sampled steps (or with ``force``), each Dense layer's
        gradient norm (W and b together); returns the global norm then, None otherwise."""
        if step % self.every and not force:
            return None
        total, growth = 0.0, {}
        for name, layer in self.dense:
            value = math.sqrt(norm(layer.grads["W"]) ** 2 + norm(layer.grads["b"]) ** 2)
            self.grad_norms[name].append(value)
            growth[name] = value / max(self.first.setdefault(name, value), 1e-12)
            total += value * value
        worst = max(growth, key=lambda name: growth[name] if math.isfinite(growth[name]) else math.inf)
        if self.exploded is None and not growth[worst] <= EXPLODED:  # the layer that grew most, at the first such step
            self.exploded = (worst, epoch, step, growth[worst])
        return math.sqrt(total)

    def before_update(self, step: int) -> None:
        if step % self.ratio_every == 0:
            self._before = {name: layer.params["W"].copy() for name, layer in self.dense}

    def after_update(self, step: int) -> None:
        if not self._before:
            return
        for name, layer in self.dense:
            weights = layer.params["W"]
            self.ratios[name].append(norm(weights - self._before[name]) / max(norm(weights), 1e-12))
        self._before = {}

    def epoch_metrics(self) -> dict[str, float]:
        """``{"<layer>/weight_norm", "<layer>/grad_norm", "<layer>/update_ratio"}`` of this epoch (means of
        the samples; the weight norm at the end)."""
        metrics = {}
        for name, layer in self.dense:
            metrics[f"{name}/weight_norm"] = norm(layer.params["W"])
            if self.grad_norms[name]:
                metrics[f"{name}/grad_norm"] = float(np.mean(self.grad_norms[name]))
            if self.ratios[name]:
                metrics[f"{name}/update_ratio"] = float(np.mean(self.ratios[name]))
        return metrics

    def explain(self, first_epoch: int = 0) -> str:
        """Why the loss may have gone non-finite: the first layer whose gradient norm exploded, or not.
        Epochs are counted from ``first_epoch`` (``nn`` counts from 0, the harness from 1)."""
        if self.exploded is not None:
            name, epoch, step, growth = self.exploded
            epoch += first_epoch
            grown = "became non-finite" if not math.isfinite(growth) else f"grew {growth:,.0f}x its first value"
            return f"the gradient norm of {name} exploded first: it {grown} at epoch {epoch}, step {step}"
        return (
            "the gradients were healthy until then (no layer's gradient norm grew "
            f"{EXPLODED:.0f}x), so look at the data (non-finite or unscaled inputs) or the learning rate"
        )


def activations(network, X: np.ndarray) -> dict[str, float]:
    """Mean and std of each activation layer's output over ``X`` (N, D), and for each ReLU the fraction of
    its units that output 0 for every example (dead): ``{"relu0/mean", "relu0/std", "relu0/dead_fraction"}``."""
    stats = {}
    x = X
    for name, layer in zip(network.names, network.layers):
        x = layer.forward(x, training=False)
        if isinstance(layer, Dense) or not layer.__class__.__module__.endswith("activations"):
            continue
        stats[f"{name}/mean"], stats[f"{name}/std"] = float(x.mean()), float(x.std())
        if isinstance(layer, ReLU):
            stats[f"{name}/dead_fraction"] = float(np.mean(~(x > 0).any(axis=0)))
    return stats
