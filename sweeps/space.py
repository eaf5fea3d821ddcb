"""Search spaces written in Hydra's sweep syntax, turned into Optuna distributions.

``interval(a, b)`` is a float range, ``range(a, b[, step])`` a stepped one (``b`` excluded, as in Python
and Hydra), ``choice(a, b, ...)`` or ``a,b`` a categorical one, and ``tag(log, ...)`` samples on a log
scale. Values that are not sweeps are fixed for every trial. Keys are any config key, or a config group
(``model=choice(wide1024,deep2x1024)``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from experiments.schema import ConfigError

PRIMITIVE = (type(None), bool, int, float, str)
PLAIN_STRING = re.compile(r"^[A-Za-z_][\w\-./]*$")


@dataclass
class Space:
    """Search dimensions (``{key: distribution}``) and fixed overrides (``["key=value", ...]``)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: the fixed ones, then ``key=value`` for each sampled param."""
        return self.fixed + [f"{key}={to_text(params[key])}" for key in self.distributions]

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Sample every dimension on ``trial``; returns ``{key: value}``."""
        return {key: suggest(trial, key, dist) for key, dist in self.distributions.items()}

    def grid(self) -> dict[str, list]:
        """Every dimension's values, for the grid sampler; raises ``ConfigError`` for a continuous one."""
        grid = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step is not None:
                count = round((dist.high - dist.low) / dist.step)
                grid[key] = [dist.low + i * dist.step for i in range(count + 1)]
            else:
                raise ConfigError(
                    f"sampler=grid needs a finite grid, but {key} is {dist}: use range(...) or choice(...) for it."
                )
        return grid


def suggest(trial: BaseTrial, key: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for one distribution."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)


def to_text(value: Any) -> str:
    """A value as Hydra override text: ``0.01``, ``true``, ``null``, ``[512,512]``, ``wide1024``, ``'a b'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{to_text(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if PLAIN_STRING.match(text) or text.startswith(("[", "{")):  # group names, or lists kept as text
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (``key=interval(...)`` and so on)."""
    sweep, key = override.value(), override.get_key_element()
    log = "log" in (getattr(sweep, "tags", None) or set())
    if isinstance(sweep, IntervalSweep):
        if sweep.start >= sweep.end:
            raise ConfigError(f"{key}: interval({sweep.start}, {sweep.end}) is empty.")
        if log and sweep.start <= 0:
            raise ConfigError(f"{key}: tag(log, interval({sweep.start}, {sweep.end})) needs a lower bound above 0.")
        return FloatDistribution(sweep.start, sweep.end, log=log)
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, 1 if sweep.step is None else sweep.step
        if all(isinstance(x, int) for x in (start, stop, step)):
            high = start + step * ((stop - start - 1) // step)
            if high < start:
                raise ConfigError(f"{key}: range({start}, {stop}, {step}) is empty.")
            if log and start <= 0:
                raise ConfigError(f"{key}: tag(log, range({start}, {stop})) needs a lower bound above 0.")
            return IntDistribution(start, high, log=log, step=1 if log else step)
        count = math.ceil((stop - start) / step - 1e-9)
        if count < 1:
            raise ConfigError(f"{key}: range({start}, {stop}, {step}) is empty.")
        if log:
            raise ConfigError(f"{key}: tag(log, range(...)) needs integer bounds; use tag(log, interval(...)).")
        return FloatDistribution(float(start), float(start + step * (count - 1)), step=float(step))
    if isinstance(sweep, ChoiceSweep):
        choices = [v if isinstance(v, PRIMITIVE) else to_text(v) for v in sweep.list]
        return CategoricalDistribution(choices)
    raise ConfigError(f"{key}: {override.input_line} is not a sweep Optuna can sample (glob?).")


def parse(params: Mapping[str, Any] | None, arguments: Iterable[str] = ()) -> tuple[Space, list[str]]:
    """A ``Space`` from ``params`` (``{key: "interval(0, 1)"}`` or plain values) and command-line ``arguments``.

    Arguments in sweep syntax add dimensions or replace those of ``params``; the other arguments are
    returned as they are (the caller composes the config with them).
    """
    parser = OverridesParser.create()
    space, rest = Space(), []
    lines = [f"{key}={value if isinstance(value, str) else to_text(value)}" for key, value in (params or {}).items()]
    for line in lines + list(arguments):
        try:
            override = parser.parse_override(line)
        except Exception as err:  # Hydra's grammar errors
            raise ConfigError(f"cannot parse sweep parameter {line!r}: {err}") from err
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed = [f for f in space.fixed if not f.startswith(f"{key}=")]
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
        elif line in lines:
            space.fixed.append(line)
        else:
            rest.append(line)
    return space, rest
