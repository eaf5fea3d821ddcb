"""A launcher that cannot start its jobs (``sbatch`` refusing: no SLURM controller) ends the sweep in one
paragraph, with the trials it was given queued again and the parent run closed, not left RUNNING."""

from __future__ import annotations

from optuna.trial import TrialState

from tests.sweeps.conftest import multirun

REFUSAL = "sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\\nsbatch: fatal: Could not establish a configuration source"  # noqa: E501


def test_a_launcher_that_cannot_submit_ends_the_sweep_in_one_paragraph_with_nothing_left_running(
    store, name, tmp_path, monkeypatch, capfd
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\nprintf "{REFUSAL}\\n" >&2\nexit 1\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    args = store.args(name, "train.epochs=1", "hydra/launcher=slurm", "hydra.launcher.partition=debug")
    args += ["hydra.sweeper.batch=2", f"hydra.launcher.submitit_folder={tmp_path / 'jobs'}"]
    assert multirun("sweep=digits_smoke", *args) == 2
    said = capfd.readouterr()
    (paragraph,) = [line for line in (said.out + said.err).splitlines() if "could not start" in line]
    paragraph = paragraph.split("] ", 1)[1]  # after the log record's time and logger
    assert paragraph.startswith("NnlabSlurmLauncher could not start trial(s) 0, 1: FailedJobError:")
    assert "Could not establish a configuration source" in paragraph and "\n" not in paragraph
    trials = store.study(name).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    (parent,) = store.runs(name)  # no trial ran: the parent alone, closed
    assert parent.info.status == "KILLED"  # as a sweep stopped before its budget: the same command goes on
