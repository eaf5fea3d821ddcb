"""Learning-rate schedules as pure functions of the (fractional) epoch.

``schedule.lr_at(base_lr, epoch)`` gives the rate for a step taken at ``epoch`` (a float: epoch index
plus the fraction of it already done). Step, multistep, exponential and cosine change only at epoch
boundaries and match ``torch.optim.lr_scheduler`` stepped once per epoch; warm-up is linear per step.
``ReduceOnPlateau`` is the one stateful schedule: it also needs ``observe(val_loss)`` after each epoch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from nn.checks import check, in_range, is_integer, is_number


class Schedule:
    """Base: constant learning rate."""

    def lr_at(self, base_lr: float, epoch: float) -> float:
        return base_lr

    def observe(self, metric: float) -> None:
        """Called once per epoch with the validation loss; only plateau schedules use it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


Constant = Schedule


class StepDecay(Schedule):
    """lr * gamma ** (epoch // step_size) (torch StepLR)."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        check(is_integer(step_size) and step_size >= 1, "step_size", step_size, "an integer >= 1 (epochs)")
        _check_gamma(gamma)
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (int(epoch) // self.step_size)


class MultiStepDecay(Schedule):
    """lr * gamma ** (number of milestones <= epoch) (torch MultiStepLR), e.g. milestones [30, 50, 65]."""

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1) -> None:
        milestones = list(milestones)
        check(
            all(is_integer(m) and m >= 1 for m in milestones) and milestones == sorted(set(milestones)),
            "milestones",
            milestones,
            "strictly increasing epochs >= 1, e.g. [30, 50, 65]",
        )
        milestones = [int(m) for m in milestones]
        _check_gamma(gamma)
        self.milestones, self.gamma = milestones, gamma

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, int(epoch))


class ExponentialDecay(Schedule):
    """lr * gamma ** epoch (torch ExponentialLR)."""

    def __init__(self, gamma: float = 0.95) -> None:
        _check_gamma(gamma)
        self.gamma = gamma

    def lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** int(epoch)


class CosineAnnealing(Schedule):
    """eta_min + (lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (torch CosineAnnealingLR's closed form)."""

    def __init__(self, T_max: int, eta_min: float = 0.0) -> None:
        check(is_integer(T_max) and T_max >= 1, "T_max", T_max, "an integer >= 1 (epochs of the half-period)")
        check(is_number(eta_min) and eta_min >= 0, "eta_min", eta_min, "a number >= 0")
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, base_lr, epoch):
        t = int(epoch)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class Warmup(Schedule):
    """Linear warm-up from ``start_factor * lr`` to ``lr`` over ``epochs`` (per step), then ``after``
    shifted to start at epoch 0 (like torch SequentialLR of LinearLR and the next schedule)."""

    def __init__(self, after: Schedule | None = None, epochs: float = 1.0, start_factor: float = 0.1) -> None:
        check(is_number(epochs) and epochs > 0, "epochs", epochs, "a positive number of warm-up epochs")
        check(in_range(start_factor, 0, 1), "start_factor", start_factor, "in [0, 1]")
        self.after = after if after is not None else Schedule()
        self.epochs, self.start_factor = epochs, start_factor

    def lr_at(self, base_lr, epoch):
        if epoch < self.epochs:
            return base_lr * (self.start_factor + (1 - self.start_factor) * epoch / self.epochs)
        return self.after.lr_at(base_lr, epoch - self.epochs)

    def observe(self, metric):
        self.after.observe(metric)

    def state_dict(self):
        return self.after.state_dict()

    def load_state_dict(self, state):
        self.after.load_state_dict(state)


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when the validation loss has not improved by a relative
    ``threshold`` for more than ``patience`` epochs, never below ``min_lr``, skipping a cut smaller than
    ``eps`` (torch ReduceLROnPlateau, mode "min", threshold_mode "rel", no cooldown)."""

    def __init__(
        self, factor: float = 0.1, patience: int = 10, min_lr: float = 0.0, threshold: float = 1e-4, eps: float = 1e-8
    ) -> None:
        check(in_range(factor, 0, 1, low_open=True, high_open=True), "factor", factor, "in (0, 1)")
        check(is_integer(patience) and patience >= 0, "patience", patience, "an integer >= 0 (epochs)")
        check(is_number(min_lr) and min_lr >= 0, "min_lr", min_lr, "a number >= 0")
        check(is_number(threshold) and threshold >= 0, "threshold", threshold, "a number >= 0")
        check(is_number(eps) and eps >= 0, "eps", eps, "a number >= 0")
        self.factor, self.patience, self.min_lr, self.threshold, self.eps = factor, patience, min_lr, threshold, eps
        self.scale, self.best, self.bad_epochs = 1.0, math.inf, 0
        self._base_lr: float | None = None

    def lr_at(self, base_lr, epoch):
        self._base_lr = base_lr
        return base_lr * self.scale

    def observe(self, metric):
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            base = self._base_lr if self._base_lr is not None else 1.0
            scale = max(self.scale * self.factor, self.min_lr / base)
            if (self.scale - scale) * base > self.eps:  # torch skips a cut smaller than eps
                self.scale = scale
            self.bad_epochs = 0

    def state_dict(self):
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.scale, self.best, self.bad_epochs = float(state["scale"]), float(state["best"]), int(state["bad_epochs"])


def _check_gamma(gamma: float) -> None:
    check(in_range(gamma, 0, 1, low_open=True), "gamma", gamma, "in (0, 1]")
