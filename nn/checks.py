"""Argument checks of the ``nn`` constructors: one error type that names the argument.

``ArgumentError.name`` is the constructor's argument, which is also the key of its config group
(``optimizer.lr`` is ``SGD(lr=...)``), so the experiment layer can name the config key.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class ArgumentError(ValueError):
    """``name=value`` is out of range; ``allowed`` says what would be accepted."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise ``ArgumentError(name, value, allowed)`` unless ``ok``."""
    if not ok:
        raise ArgumentError(name, value, allowed)


def is_number(value: Any) -> bool:
    """A finite real number (not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def in_range(value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> bool:
    """``value`` is a finite number within ``[low, high]`` (either end open on request)."""
    if not is_number(value):
        return False
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return above and below
