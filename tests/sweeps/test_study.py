"""The study layer without training: samplers and pruners, the budget over workers and retries, dead workers."""

from __future__ import annotations

import multiprocessing
import os
import time

import optuna
import pytest
from optuna.trial import TrialState

from experiments.schema import ConfigError
from sweeps.config import PRUNERS, SAMPLERS, HeartbeatConf, settings
from sweeps.optuna_private import JournalFileStorage, storage_of, trial_id, unwrap
from sweeps.space import parse
from sweeps.study import (
    Heartbeat,
    ask,
    budget,
    counted,
    fail_stale,
    open_storage,
    open_study,
    progress,
    pruner,
    remaining,
    sampler,
    startup_trials,
)

SPACE = parse({"x": "interval(0, 1)", "n": "range(1, 4)"})[0]


def test_samplers_and_pruners_from_their_targets():
    assert isinstance(sampler(SAMPLERS["tpe"], SPACE), optuna.samplers.TPESampler)
    assert isinstance(sampler(SAMPLERS["random"], SPACE), optuna.samplers.RandomSampler)
    assert isinstance(sampler(SAMPLERS["cmaes"], SPACE), optuna.samplers.CmaEsSampler)
    assert isinstance(sampler(SAMPLERS["qmc"], SPACE), optuna.samplers.QMCSampler)
    tpe = sampler({"_target_": "optuna.samplers.TPESampler", "seed": 3, "n_startup_trials": 7}, SPACE, [1])
    assert isinstance(tpe, optuna.samplers.TPESampler)  # every other key goes straight to Optuna
    assert tpe._n_startup_trials == 7  # as given; unset, sized to the budget:
    assert sampler(SAMPLERS["tpe"], SPACE, n_trials=12)._n_startup_trials == startup_trials(12) == 3
    assert sampler(SAMPLERS["tpe"], SPACE, n_trials=100)._n_startup_trials == startup_trials(100) == 10
    grid = parse({"a": "choice(1,2,3)", "b": "range(0,2)"})[0]
    assert isinstance(sampler(SAMPLERS["grid"], grid), optuna.samplers.GridSampler)
    assert budget(settings({"n_trials": 100, "sampler": SAMPLERS["grid"]}), grid) == 6
    assert budget(settings({"n_trials": 100}), grid) == 100
    median = pruner({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    assert isinstance(median, optuna.pruners.MedianPruner)
    hyperband = pruner({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": 9})
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert isinstance(pruner(PRUNERS["none"]), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.sampler._target_='optuna.samplers.Bayes'"):
        sampler({"_target_": "optuna.samplers.Bayes"}, SPACE)
    with pytest.raises(ConfigError, match="must name an Optuna pruner"):
        pruner({"_target_": "optuna.samplers.TPESampler"})
    with pytest.raises(ConfigError, match=r"hydra.sweeper.pruner \(MedianPruner\)"):
        pruner({"_target_": "optuna.pruners.MedianPruner", "patience": 3})
    # keys of the sweep's own pruner are dropped when the command line chooses another one
    assert isinstance(pruner(PRUNERS["none"] | {"n_startup_trials": 5}), optuna.pruners.NopPruner)


def test_gp_sampler_without_torch_says_what_to_install():
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="PyTorch"):
            sampler(SAMPLERS["gp"], SPACE)
    else:
        assert isinstance(sampler(SAMPLERS["gp"], SPACE), optuna.samplers.GPSampler)


def in_memory(*trials: tuple[TrialState, list[int]]) -> optuna.Study:
    """A study of trials numbered in order, each ``(state, retry_history)``: a non-empty history makes it a
    retry of those failed trials, as ``sweeps.study.retry`` queues one."""
    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 1)
    for number, (state, history) in enumerate(trials):
        attrs = {"failed_trial": history[0], "retry_history": history} if history else {}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params={"x": number / 10},
                distributions={"x": x},
                value=number / 10 if state == TrialState.COMPLETE else None,
                intermediate_values={1: 0.1} if state == TrialState.PRUNED else None,
                system_attrs=attrs,
            )
        )
    return study


def test_the_budget_counts_pruned_trials_and_unretried_failures_not_retried_ones():
    study = in_memory(
        (TrialState.COMPLETE, []),  # 0: counts
        (TrialState.PRUNED, []),  # 1: counts
        (TrialState.FAIL, []),  # 2: counts (never queued again: max_retry reached)
        (TrialState.FAIL, []),  # 3: queued again as 4: does not count
        (TrialState.FAIL, [3]),  # 4: the retry of 3, queued again as 6: does not count
        (TrialState.RUNNING, []),  # 5: counts
        (TrialState.WAITING, [3, 4]),  # 6: the second retry of 3: counts, and is still to run
        (TrialState.PRUNED, []),  # 7: counts
    )
    trials = study.get_trials()
    assert [t.number for t in counted(trials)] == [0, 1, 2, 5, 6, 7]
    # to run: what the budget leaves of the 6 counted trials, plus the queued retry
    assert {n: remaining(study, n) for n in (4, 6, 7, 10)} == {4: 1, 6: 1, 7: 2, 10: 5}
    seven = progress(study, 7)
    assert (seven.trials, seven.complete, seven.pruned, seven.failed, seven.retried) == (8, 1, 2, 3, 2)
    assert (seven.running, seven.waiting, seven.budget, seven.to_run, seven.used) == (1, 1, 7, 2, False)
    assert str(seven) == (
        "8 trials in the study (1 complete, 2 pruned, 3 failed, 2 of them retried, 1 running, 1 queued), "
        "budget 7, 2 to run"
    )
    # asked for: the queued retry first, then new trials up to the budget
    asked = ask(study, 7, HeartbeatConf(1, 2), count=5)
    assert [t.number for t in asked] == [6, 8] and remaining(study, 7) == 0


def test_a_budget_used_by_complete_pruned_and_failed_trials_is_used():
    # the "4 of 2 trials so far": two failures retried, their retries complete or pruned
    study = in_memory(
        (TrialState.FAIL, []),
        (TrialState.COMPLETE, [0]),
        (TrialState.FAIL, []),
        (TrialState.PRUNED, [2]),
    )
    used = progress(study, 2)
    assert used.used and used.to_run == 0 and remaining(study, 2) == 0
    assert str(used) == "4 trials in the study (1 complete, 1 pruned, 2 failed, 2 of them retried), budget 2, 0 to run"
    assert ask(study, 2, HeartbeatConf(1, 2)) == []
    assert progress(study, 3).to_run == 1 and not progress(study, 3).used
    # pruned trials use the budget as complete ones do; a failure never queued again too
    study = in_memory((TrialState.PRUNED, []), (TrialState.PRUNED, []), (TrialState.COMPLETE, []))
    assert remaining(study, 3) == 0 and progress(study, 3).used and remaining(study, 4) == 1
    study = in_memory((TrialState.FAIL, []), (TrialState.PRUNED, []))
    assert remaining(study, 2) == 0 and str(progress(study, 2)).startswith("2 trials in the study (0 complete")
    # a trial still running uses the budget, but the budget is not used up while it runs (its worker may be dead)
    study = in_memory((TrialState.COMPLETE, []), (TrialState.RUNNING, []))
    assert remaining(study, 2) == 0 and not progress(study, 2).used
    one = in_memory((TrialState.COMPLETE, []))
    assert str(progress(one, 1)) == "1 trial in the study (1 complete, 0 pruned, 0 failed), budget 1, 0 to run"


def test_experimental_samplers_and_pruners_are_built_without_optunas_warning():
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert isinstance(sampler(SAMPLERS["qmc"], SPACE), optuna.samplers.QMCSampler)  # experimental in Optuna 5
        assert isinstance(
            pruner({"_target_": "optuna.pruners.PatientPruner", "wrapped_pruner": None, "patience": 1}),
            optuna.pruners.PatientPruner,
        )
    assert [str(w.message) for w in said] == []
    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # what was silenced, and only there
        optuna.samplers.QMCSampler(seed=0)


def journal_study(tmp_path, name="s", grace=2, n_trials=3) -> optuna.Study:
    conf = settings({"study_name": name, "n_trials": n_trials, "heartbeat": {"interval": 1, "grace_period": grace}})
    storage = open_storage(str(tmp_path / f"{name}.log"), conf.heartbeat)
    return open_study(conf, storage, SPACE, "maximize")


def test_a_trial_whose_heartbeat_stopped_is_failed_with_the_reason_and_queued_again(tmp_path):
    study = journal_study(tmp_path)
    storage = storage_of(study)
    assert isinstance(storage, JournalFileStorage) and unwrap(storage) is storage
    [alive], [dead] = ask(study, 3, HeartbeatConf(1, 2)), ask(study, 3, HeartbeatConf(1, 2))
    SPACE.suggest(dead)
    with Heartbeat(storage, trial_id(alive)):
        beat = storage.heartbeats / str(trial_id(dead))
        beat.touch()
        os.utime(beat, (time.time() - 10, time.time() - 10))  # its worker stopped beating 10 s ago
        failed = []
        assert fail_stale(study, max_retry=1, on_failed=failed.append) == [dead.number]
    assert [t.number for t in failed] == [dead.number]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert "no heartbeat" in trials[dead.number].user_attrs["fail_reason"]
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trials[dead.number].params
    assert retry.system_attrs["failed_trial"] == dead.number and "fail_reason" not in retry.user_attrs
    assert trials[alive.number].state == TrialState.RUNNING  # its heartbeat is fresh
    # the failed-and-retried trial does not count: the budget of 3 is alive + the retry + one more
    assert len(counted(trials)) == 2 and remaining(study, 3) == 2
    (again,) = ask(study, 3, HeartbeatConf(1, 2))
    assert again.number == retry.number and again.params == retry.params


def test_max_retry_bounds_the_retries(tmp_path):
    study = journal_study(tmp_path, grace=2)
    (trial,) = ask(study, 3, HeartbeatConf(1, 2))
    time.sleep(2.2)  # never beat: stale by its start time
    assert fail_stale(study, max_retry=0) == [trial.number]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]  # not queued again
    assert remaining(study, 3) == 2


def ask_and_tell(url: str, n_trials: int, seconds: float) -> None:
    """A worker process: ask within the budget and tell right away until the budget is used."""
    conf = settings({"study_name": "shared", "n_trials": n_trials, "sampler": SAMPLERS["random"] | {"seed": None}})
    study = open_study(conf, open_storage(url, conf.heartbeat), SPACE, "maximize")
    while trials := ask(study, n_trials, conf.heartbeat):
        time.sleep(seconds)
        study.tell(trials[0], SPACE.suggest(trials[0])["x"])


def ask_from_processes(url: str, n_trials: int, processes: int = 4) -> list[optuna.trial.FrozenTrial]:
    """``processes`` forked workers asking for trials of study "shared" at once; its trials afterwards."""
    open_study(settings({"study_name": "shared"}), open_storage(url, None), SPACE, "maximize")  # create it
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=ask_and_tell, args=(url, n_trials, 0.01 * i)) for i in range(processes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * processes
    return optuna.load_study(study_name="shared", storage=open_storage(url, None)).get_trials()


def test_workers_asking_at_once_meet_the_budget_exactly(tmp_path):
    trials = ask_from_processes(str(tmp_path / "shared.log"), 13)
    assert len(trials) == 13 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(13))


def test_the_budget_lock_makes_counting_and_asking_one_step(tmp_path, monkeypatch):
    """Four askers whose count is slowed down, so that without the lock each would see 3 trials left
    and ask: with it, exactly the budget of 3 trials is asked for, every time."""
    import threading

    import sweeps.study as study_module

    url = str(tmp_path / "locked.log")
    open_study(settings({"study_name": "locked"}), open_storage(url, None), SPACE, "maximize")
    counted_remaining = study_module.remaining

    def slow_remaining(study, n_trials):
        left = counted_remaining(study, n_trials)
        time.sleep(0.3)  # another asker counts meanwhile, unless the lock holds it off
        return left

    monkeypatch.setattr(study_module, "remaining", slow_remaining)
    conf = settings({"study_name": "locked", "n_trials": 3})

    def asker():
        study = open_study(conf, open_storage(url, conf.heartbeat), SPACE, "maximize")
        ask(study, 3, conf.heartbeat, count=3)

    threads = [threading.Thread(target=asker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(optuna.load_study(study_name="locked", storage=open_storage(url, None)).trials) == 3


def open_and_ask(url: str, barrier, results) -> None:
    """An opener of study "same" (TPE, seed 0) that opens it when the others do and asks for 3 trials."""
    conf = settings({"study_name": "same", "n_trials": 100, "heartbeat": {"interval": 1, "grace_period": 5}})
    barrier.wait(30)
    study = open_study(conf, open_storage(url, conf.heartbeat), SPACE, "maximize")
    params = []
    for trial in ask(study, 100, conf.heartbeat, count=3):
        params.append(SPACE.suggest(trial))
        study.tell(trial, 0.5)
    results.put(params)


@pytest.mark.slow
def test_two_processes_opening_one_study_at_once_draw_different_parameters(tmp_path):
    """Two processes (two machines' sweeps started together) open one study with the same seed at the same
    moment: each gets its own sampler stream, so no trial of one repeats a trial of the other."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    url = str(tmp_path / "same.log")
    openers = [context.Process(target=open_and_ask, args=(url, barrier, results)) for _ in range(2)]
    for opener in openers:
        opener.start()
    drawn = [results.get(timeout=120) for _ in openers]
    for opener in openers:
        opener.join(60)
    assert [opener.exitcode for opener in openers] == [0, 0]
    first, second = ({tuple(sorted(p.items())) for p in params} for params in drawn)
    assert len(first) == len(second) == 3 and not first & second


def test_a_sweep_run_in_one_process_is_reproducible_from_its_seed(tmp_path):
    """The first opener of a new study draws from the configured seed as it is: the same points each time;
    a second opener of the same study draws others."""
    conf = settings({"study_name": "again", "n_trials": 10})

    def first_params(url: str) -> dict:
        study = open_study(conf, open_storage(url, conf.heartbeat), SPACE, "maximize")
        (trial,) = ask(study, 10, conf.heartbeat)
        return SPACE.suggest(trial)

    assert first_params(str(tmp_path / "a.log")) == first_params(str(tmp_path / "b.log"))
    assert first_params(str(tmp_path / "a.log")) != first_params(str(tmp_path / "c.log"))
