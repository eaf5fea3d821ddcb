"""Before and during a sweep: ``hydra.sweeper.dry_run`` prints the space and settings and runs nothing; the
sweep logs its expected remaining time after each trial."""

from __future__ import annotations

from tests.sweeps.conftest import multirun


def test_a_dry_run_prints_the_space_and_settings_and_creates_nothing(store, name, capsys):
    args = ["sweep=lr_momentum_l2", *store.args(name), "dataset=digits", "model=mlp128", "hydra.sweeper.n_trials=12"]
    assert multirun(*args, "optimizer.lr=tag(log,interval(0.01,0.5))", "hydra.sweeper.dry_run=true") == 0
    said = capsys.readouterr().out
    assert f"sweep {name}: 12 trials, maximize val/acc" in said
    assert "  optimizer.lr: float in [0.01, 0.5], log scale" in said  # the command line's dimension
    assert "  optimizer.momentum: float in [0.5, 0.99]" in said and "  model=wide1024" not in said
    assert "  model=mlp128" in said  # the command line's value wins over the sweep's fixed one
    assert "sampler: TPESampler" in said and "n_startup_trials=3" in said  # sized to the budget of 12
    assert "pruner: PercentilePruner percentile=10.0, n_startup_trials=1, n_warmup_steps=3" in said
    assert not (store.dir / "optuna" / f"{name}.log").exists() and store.runs(name) == []


def test_the_sweep_logs_its_remaining_time_after_each_trial_but_the_last(store, name, capsys):
    assert multirun("sweep=digits_smoke", *store.args(name, "train.epochs=1", "tracking=none")) == 0
    said = capsys.readouterr()
    estimates = [line for line in (said.out + said.err).splitlines() if "to run: about" in line]
    assert len(estimates) == 2  # after trials 0 and 1 of 3
    assert "2 trial(s) to run: about " in estimates[0] and "1 trial(s) to run: about " in estimates[1]
