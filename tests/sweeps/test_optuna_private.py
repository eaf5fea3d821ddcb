"""The private Optuna names of ``sweeps/optuna_private.py`` still exist and mean what it takes them for;
and no other module of the project uses a private Optuna name."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage

from sweeps import optuna_private
from sweeps.optuna_private import JournalFileStorage

REPO = Path(__file__).resolve().parents[2]
MODULE = "sweeps/optuna_private.py"
PRIVATE = re.compile(r"\._(storage|study_id|trial_id|backend|return_value|get_stale_trial_ids)\b|optuna\.\w+\._\w")


def broken(name: str, err: Exception) -> str:
    return (
        f"Optuna {optuna.__version__} changed the private name {name} that {MODULE} relies on ({err!r}): "
        f"update {MODULE} (and only it) to the new name, or to a public API if there is one now."
    )


def check(name: str, get):
    try:
        return get()
    except (AttributeError, ImportError, TypeError) as err:
        pytest.fail(broken(name, err))


def test_the_study_trial_and_storage_names_still_work(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    trial = study.ask()
    storage = check("Study._storage", lambda: optuna_private.storage_of(study))
    identifier = check("Study._study_id", lambda: optuna_private.study_id(study))
    number = check("Trial._trial_id", lambda: optuna_private.trial_id(trial))
    assert storage.get_study_id_from_name("s") == identifier
    assert storage.get_trial(number).number == trial.number
    assert optuna_private.trial_id(study.trials[0]) == number  # FrozenTrial too
    assert isinstance(check("_CachedStorage._backend", lambda: optuna_private.unwrap(storage)), RDBStorage)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_heartbeat_protocol_still_has_the_method_we_implement(tmp_path):
    check("BaseHeartbeat._get_stale_trial_ids", lambda: optuna_private.BaseHeartbeat._get_stale_trial_ids)
    storage = JournalFileStorage(tmp_path / "s.log", heartbeat_interval=1, grace_period=0)
    assert isinstance(storage, optuna_private.BaseHeartbeat)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    stale = check(
        "BaseHeartbeat._get_stale_trial_ids",
        lambda: optuna_private.stale_trial_ids(storage, optuna_private.study_id(study)),
    )
    assert stale == [optuna_private.trial_id(trial)]  # no heartbeat recorded and no grace: stale at once


def test_no_other_module_uses_a_private_optuna_name():
    offenders = []
    for path in [*REPO.glob("sweeps/*.py"), *REPO.glob("hydra_plugins/**/*.py"), *REPO.glob("experiments/*.py"),
                 *REPO.glob("tests/**/*.py")]:  # fmt: skip
        relative = path.relative_to(REPO).as_posix()
        if relative in (MODULE, "tests/sweeps/test_optuna_private.py"):
            continue
        offenders += [
            f"{relative}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)
        ]
    assert offenders == [], f"private Optuna names outside {MODULE}: {offenders}"
