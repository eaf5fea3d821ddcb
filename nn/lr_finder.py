"""Smith's learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3), as Lightning's
``Tuner.lr_find`` and fastai's ``lr_find`` run it: train a copy of the network for a few hundred steps
while the learning rate rises exponentially, and read a learning rate off the smoothed loss.

Two readings are returned: ``steepest``, where the loss falls fastest (Lightning's ``suggestion()``),
and ``suggestion``, a tenth of the rate at the lowest loss (fastai's ``lr_min``). On this project's
digits and MNIST wide1024 grids the second lands within 3x of the grid's best, the first 3-6x below it
(README, "Find a learning rate").
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from nn.checks import check, is_number
from nn.clipping import NoClip
from nn.losses import SoftmaxCrossEntropy

SMOOTHING = 0.98  # the loss is averaged as fastai and Lightning do: exponentially, bias-corrected
DIVERGED = 4.0  # stop once the smoothed loss is this many times its lowest (Lightning's early_stop_threshold)
SKIP_START, SKIP_END = 10, 1  # points left out of the suggestion at each end (Lightning's defaults)


@dataclass
class RangeTest:
    lrs: np.ndarray  # (S,) the learning rate of each step
    losses: np.ndarray  # (S,) the smoothed training loss after each step
    suggestion: float | None  # a tenth of the rate at the lowest loss; None if too few steps were made
    steepest: float | None  # the rate where the loss falls fastest


def lr_range_test(
    network,
    optimizer,
    X: np.ndarray,
    y: np.ndarray,
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    steps: int = 300,
    batch_size: int = 128,
    clipper=None,
    rng: np.random.Generator | None = None,
) -> RangeTest:
    """Run the range test on copies of ``network`` and ``optimizer`` (both stay as they are).

    Parameters
    ----------
    X, y : training inputs (N, D) and labels (N,); batches are drawn from them at random.
    min_lr, max_lr : the first and the last learning rate; step i uses min_lr * (max_lr/min_lr)^(i/(steps-1)).
    steps : how many updates, unless the loss diverges first (``DIVERGED`` x its lowest, or non-finite).

    ``suggestion`` is a tenth of the rate at the lowest smoothed loss (fastai); ``steepest`` the rate where
    it falls fastest against log(lr), leaving out the first ``SKIP_START`` and last ``SKIP_END`` points
    (Lightning). Both are None when the loss diverged within ``SKIP_START + SKIP_END + 2`` steps.
    """
    check(is_number(min_lr) and min_lr > 0, "min_lr", min_lr, "a positive number")
    check(is_number(max_lr) and max_lr > min_lr, "max_lr", max_lr, f"a number above min_lr ({min_lr})")
    check(isinstance(steps, int) and steps >= SKIP_START + SKIP_END + 2, "steps", steps, "an integer >= 13")
    network, optimizer = copy.deepcopy(network), copy.deepcopy(optimizer)
    clipper = clipper if clipper is not None else NoClip()
    rng = rng if rng is not None else np.random.default_rng()
    loss_fn, params, grads = SoftmaxCrossEntropy(), network.params, network.grads
    lrs = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))
    losses, average, best = [], 0.0, math.inf
    for step, lr in enumerate(lrs):
        idx = rng.integers(0, len(X), size=min(batch_size, len(X)))
        loss = loss_fn.forward(network.forward(X[idx], training=True), y[idx])
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            break
        network.backward(loss_fn.backward())
        _, clip = clipper.plan(grads)
        optimizer.step(params, grads, float(lr), clip)
    losses = np.array(losses)
    lrs = lrs[: len(losses)]
    steep = steepest(lrs, losses)
    lowest = float(lrs[int(np.argmin(losses))]) / 10 if steep is not None else None
    return RangeTest(lrs, losses, lowest, steep)


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """The learning rate at the steepest descent of ``losses`` (over equal steps of log lr)."""
    part = losses[SKIP_START : len(losses) - SKIP_END]
    if len(part) < 2:
        return None
    return float(lrs[SKIP_START + int(np.argmin(np.gradient(part)))])
