"""Each default is written once: in the schema (experiments/schema.py), not again in a group's YAML.

A group option (conf/dataset/, conf/model/, conf/tracking/) and the root config's own keys may set only
what differs from the schema's default for that node; a key repeating the default is a second home for it
(``tracking.confusion_every: 5`` once sat in both conf/tracking/mlflow.yaml and ``TrackingConf``).
The experiment presets (conf/experiment/) pin whole recipes on purpose and are not checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from experiments.schema import Config

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("dataset", "model", "tracking")  # the groups typed by a schema dataclass with defaults
FILES = [path for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
ROOT_ONLY = ("defaults", "hydra")  # the root config's keys that are not the schema's


def repeated_defaults(given: Any, default: Any, where: str) -> list[str]:
    """The keys under ``where`` whose value in ``given`` equals the schema's ``default`` (unresolved)."""
    if isinstance(given, dict) and given and isinstance(default, dict):
        return [
            found
            for key, value in given.items()
            if key in default
            for found in repeated_defaults(value, default[key], f"{where}.{key}" if where else str(key))
        ]
    return [f"{where}: {given!r}"] if given == default else []


def schema(node: str | None = None) -> dict:
    """The schema's defaults for the root config or one of its nodes, interpolations and ``???`` unresolved."""
    typed = OmegaConf.structured(Config)
    return OmegaConf.to_container(typed if node is None else typed[node], resolve=False)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}={p.stem}" for p in FILES])
def test_a_group_option_sets_only_what_differs_from_the_schema(path):
    given = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    group = path.parent.name
    repeated = repeated_defaults(given, schema(group), group)
    assert not repeated, f"conf/{group}/{path.name} repeats the schema's default (experiments/schema.py): {repeated}"


def test_the_root_config_sets_only_what_differs_from_the_schema():
    given = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    given = {key: value for key, value in given.items() if key not in ROOT_ONLY}
    repeated = repeated_defaults(given, schema(), "")
    assert not repeated, f"conf/config.yaml repeats the schema's default (experiments/schema.py): {repeated}"


def test_every_checked_key_is_a_schema_key():
    """A key the schema lacks would be compared with nothing: the check above would pass it silently."""
    for path in FILES:
        given, known = OmegaConf.load(path), schema(path.parent.name)
        assert set(given) <= set(known), f"{path}: {set(given) - set(known)} not in the schema"


def test_a_repeated_default_is_found():
    tracking = schema("tracking")
    assert repeated_defaults({"confusion_every": 5, "enabled": False}, tracking, "tracking") == [
        "tracking.confusion_every: 5"
    ]
    assert repeated_defaults({"checkpoints": {"every": 5}}, tracking, "tracking") == ["tracking.checkpoints.every: 5"]
    assert repeated_defaults({"tags": {}}, tracking, "tracking") == ["tracking.tags: {}"]
