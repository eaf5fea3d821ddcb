"""Hydra sweep syntax to Optuna distributions (``sweeps.space``), and the sweep settings' checks."""

from __future__ import annotations

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from experiments.schema import ConfigError
from experiments.tracking.naming import flatten
from sweeps.config import direction, report_metric, settings
from sweeps.space import parse, to_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval(0.5, 0.99)", FloatDistribution(0.5, 0.99)),
        ("tag(log, interval(1e-3, 1))", FloatDistribution(1e-3, 1.0, log=True)),
        ("range(1, 5)", IntDistribution(1, 4)),
        ("range(16, 129, 16)", IntDistribution(16, 128, step=16)),
        ("tag(log, range(1, 100))", IntDistribution(1, 99, log=True)),
        ("range(0, 0.5, 0.1)", FloatDistribution(0.0, 0.4, step=0.1)),
        ("choice(wide1024, deep2x1024)", CategoricalDistribution(["wide1024", "deep2x1024"])),
        ("adam,sgd", CategoricalDistribution(["adam", "sgd"])),
        ("choice(1, 0.5, true)", CategoricalDistribution([1, 0.5, True])),
        ("choice([256],[512,512])", CategoricalDistribution(["[256]", "[512,512]"])),
    ],
)
def test_sweep_syntax_becomes_the_optuna_distribution(text, expected):
    space, rest = parse({"key": text})
    assert space.distributions == {"key": expected} and space.fixed == [] and rest == []


def test_plain_values_are_fixed_and_the_command_line_wins():
    params = flatten({"model": "wide1024", "optimizer": {"lr": "interval(0.01, 0.1)", "momentum": 0.9}})
    space, rest = parse(params, ["optimizer.lr=0.05", "optimizer.weight_decay=tag(log,interval(1e-6,1e-2))", "seed=3"])
    assert space.fixed == ["model=wide1024", "optimizer.momentum=0.9"]
    assert list(space.distributions) == ["optimizer.weight_decay"]  # lr fixed by the command line
    assert rest == ["optimizer.lr=0.05", "seed=3"]


def test_trial_overrides_round_trip_through_hydra():
    space, _ = parse(
        {"model": "choice(wide1024,deep2x1024)", "model.hidden": "choice([64],[32,32])", "lr": "interval(0,1)"}
    )
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = space.suggest(trial)
    parser = OverridesParser.create()
    values = {o.key_or_group: o.value() for o in parser.parse_overrides(space.overrides(params))}
    assert values["model"] == params["model"] and values["lr"] == params["lr"]
    assert values["model.hidden"] in ([64], [32, 32])


@pytest.mark.parametrize("value", [None, True, 3, 0.25, "wide1024", "a b", "it's", [1, 2], "/tmp/x.log"])
def test_to_text_is_read_back_by_hydra(value):
    assert OverridesParser.create().parse_override(f"k={to_text(value)}").value() == value


def test_grid_needs_finite_dimensions():
    space, _ = parse({"a": "choice(1,2)", "b": "range(0,3)"})
    assert space.grid() == {"a": [1, 2], "b": [0, 1, 2]}
    with pytest.raises(ConfigError, match="finite grid"):
        parse({"c": "interval(0,1)"})[0].grid()


@pytest.mark.parametrize("text", ["interval(1, 0)", "range(5, 5)", "glob(*)"])
def test_empty_or_unsupported_sweeps_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse({"key": text})


def test_settings_are_checked_and_direction_follows_the_objective():
    conf = settings({"study_name": "s", "n_trials": 3})
    assert (conf.n_trials, conf.workers, conf.batch) == (3, 1, None)
    assert (conf.sampler["_target_"], conf.pruner["_target_"]) == (
        "optuna.samplers.TPESampler",
        "optuna.pruners.MedianPruner",
    )
    assert direction(conf, "val/acc") == "maximize" and direction(conf, "val/loss") == "minimize"
    assert report_metric("test/acc") == "val/acc" and report_metric("train/loss") == "train/loss"
    for given, key in [
        ({"direction": "up"}, "hydra.sweeper.direction"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials"),
        ({"workers": 0}, "hydra.sweeper.workers"),
        ({"study_name": "a b"}, "hydra.sweeper.study_name"),
        ({"heartbeat": {"interval": 5, "grace_period": 5}}, "hydra.sweeper.heartbeat.grace_period"),
        ({"sampler": {"seed": 1, "_target_": None}}, "hydra.sweeper.sampler"),
    ]:
        with pytest.raises(ConfigError, match=f"{key}=.* is not allowed"):
            settings(given)
    with pytest.raises(ConfigError, match="invalid sweep setting"):
        settings({"n_trials": "many"})
