"""A trial failed by Ctrl-C (or its heartbeats) is queued again, and the sweep command run again continues the
failed trial's MLflow run in the retry (``sweeps.continuation``), to the weights of a trial that was not stopped.
The SLURM cases (preempted, killed and requeued, timed out) are in ``test_slurm.py``."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from optuna.trial import TrialState

import nn
from experiments.tracking import tags as T
from sweeps.trial import Reporter
from tests.sweeps.conftest import check_trial_runs, epochs_logged, multirun

ONE_TRIAL = ["sweep=digits_smoke", "optimizer.lr=choice(0.1)", "hydra.sweeper.n_trials=1", "train.epochs=4"]
RESUMABLE = ["tracking.checkpoints.policy=last"]


def final_weights(store, run) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        return nn.load(store.client.download_artifacts(run.info.run_id, "checkpoints/last.npz", folder)).params


@pytest.mark.slow
def test_a_trial_interrupted_and_run_again_continues_its_run(store, name, monkeypatch):
    assert multirun(*ONE_TRIAL, *store.args(f"{name}-ref"), *RESUMABLE) == 0
    (reference,) = [r for r in store.runs(f"{name}-ref") if T.TRIAL in r.data.tags]
    original = Reporter.on_epoch_end

    def interrupt_at_epoch_2(self, loop, metrics):
        original(self, loop, metrics)
        if loop.epoch == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Reporter, "on_epoch_end", interrupt_at_epoch_2)
        assert multirun(*ONE_TRIAL, *store.args(name), *RESUMABLE) == 130
    assert multirun(*ONE_TRIAL, *store.args(name), *RESUMABLE) == 0  # the same command: the retry, trial 1

    study = store.study(name)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].intermediate_values.keys() == {1, 2, 3, 4}  # the continued epochs reported too
    children = check_trial_runs(store.client, study, store.runs(name), epochs=4)
    assert list(children) == [1]  # the one run, now the retry's
    run = children[1]
    assert run.data.tags[T.REQUEUES] == "1" and run.data.tags[T.RESUMED_FROM_EPOCH] == "2"
    assert run.info.run_name.startswith("#1 ")
    assert epochs_logged(store.client, run)["val/acc"] == [1, 2, 3, 4]
    ours, theirs = final_weights(store, run), final_weights(store, reference)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def test_the_exit_of_a_requeued_slurm_job_closes_the_run_as_killed_not_crashed():
    """submitit exits the job (``SystemExit``) once it has requeued it: the run is KILLED until the job goes on."""
    from experiments.outcome import outcome

    state, reason = outcome(SystemExit(-1), loop=None)
    assert state == T.KILLED and "preempted or timed out" in reason
