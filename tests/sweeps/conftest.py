"""Fixtures for the sweep tests: one MLflow store for the session, quick overrides, study and run readers.

Every test names its own study (``hydra.sweeper.study_name``) and MLflow experiment, so tests sharing the
store never see each other's trials or runs. ``multirun(...)`` is ``python experiments/run.py -m ...`` in
this process (so that tests can patch what a trial does); ``RUN`` is the script, for subprocesses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import optuna  # noqa: E402
import pytest  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "experiments" / "run.py"

from sweeps.study import open_storage  # noqa: E402


def multirun(*overrides: str) -> int:
    """``python experiments/run.py -m *overrides`` in this process; its exit code (130 for Ctrl-C)."""
    import sys
    import tempfile

    from hydra.core.global_hydra import GlobalHydra

    from experiments.run import main

    argv = sys.argv
    with tempfile.TemporaryDirectory(prefix="nnlab-multirun-") as tmp:
        sys.argv = ["run.py", "-m", f"hydra.sweep.dir={tmp}", *overrides]
        GlobalHydra.instance().clear()
        try:
            main()
        except SystemExit as exit:
            return int(exit.code or 0)
        except KeyboardInterrupt:
            return 130
        finally:
            sys.argv = argv
            GlobalHydra.instance().clear()
    return 0


# tracked, but without the costly parts: no model, no checkpoints, no misclassified grid, no progress bar
QUICK = [
    "train.progress=false",
    "tracking.log_model=false",
    "tracking.checkpoints.policy=none",
    "tracking.misclassified=0",
]
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "grad_norm", "epoch_time")


class Store:
    """The session's MLflow store (SQLite in ``dir``) and the sweeps' journal files under ``dir/optuna``."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        MlflowClient(self.uri).search_experiments()  # create the database once (its migrations take seconds)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def args(self, name: str, *extra: str) -> list[str]:
        """Overrides of a quick sweep named ``name`` (study and experiment) tracked in this store."""
        return [
            *QUICK,
            f"tracking.dir={self.dir}",
            f"tracking.experiment={name}",
            f"hydra.sweeper.study_name={name}",
            *extra,
        ]

    def study(self, name: str, storage: str | None = None) -> optuna.Study:
        url = storage or str(self.dir / "optuna" / f"{name}.log")
        return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None))

    def runs(self, experiment: str, client: MlflowClient | None = None) -> list[Run]:
        client = client or self.client
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("sweeps-store"))


@pytest.fixture
def name(request) -> str:
    """A study and experiment name of this test alone."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")[:80]


def split_runs(runs: list[Run]) -> tuple[Run, dict[int, Run]]:
    """(the parent run, {trial number: child run}); asserts there is exactly one parent."""
    parents = [r for r in runs if "nnlab.sweep" in r.data.tags]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = [r for r in runs if "nnlab.trial" in r.data.tags]
    numbers = [int(r.data.tags["nnlab.trial"]) for r in children]
    assert len(numbers) == len(set(numbers)), f"a trial has several runs: {sorted(numbers)}"
    return parents[0], dict(zip(numbers, children))


def epochs_logged(client: MlflowClient, run: Run) -> dict[str, list[int]]:
    """Steps logged for each per-epoch metric of ``run``."""
    return {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in METRICS}


def check_trial_runs(client: MlflowClient, study: optuna.Study, runs: list[Run], epochs: int) -> dict[int, Run]:
    """Every finished trial has one child run of the parent, tagged with it, with all its epochs' metrics."""
    parent, children = split_runs(runs)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.FAIL and trial.number not in children:
            continue  # failed before its run started (e.g. a config error)
        run = children[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["nnlab.study"] == study.study_name
        expected = {
            optuna.trial.TrialState.COMPLETE: ("FINISHED", epochs),
            optuna.trial.TrialState.PRUNED: ("KILLED", max(trial.intermediate_values, default=0)),
        }.get(trial.state)
        if expected is not None:
            status, last = expected
            assert run.info.status == status, (trial.number, trial.state, run.info.status)
            steps = epochs_logged(client, run)
            assert all(s == list(range(1, last + 1)) for s in steps.values()), (trial.number, steps)
    return children
