"""The launcher of ``hydra/launcher=slurm`` as Hydra sees it: Hydra's submitit SLURM launcher, made quiet.

Hydra imports every plugin module on every run and instantiates launchers only from this package, so this
module holds only the class; what it adds (``sweeps.slurm``), and with it submitit, is imported when it
launches jobs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger("nnlab.sweeps")


class NnlabSlurmLauncher(SlurmLauncher):
    """``hydra_submitit_launcher``'s SLURM launcher, with submitit's records said once (``sweeps.slurm``)."""

    def launch(self, job_overrides, initial_job_idx: int):
        from sweeps.slurm import quiet_submitit

        quiet_submitit()
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The job, on the cluster: submitit's records there go through the job's Hydra logging alone, and its
        preemption signal waits for the end of a batch (``sweeps.continuation.PreemptionPoint``)."""
        import submitit

        from sweeps.continuation import PreemptionPoint

        logging.getLogger("submitit").handlers.clear()
        PreemptionPoint.hold(submitit.JobEnvironment._usr_sig())
        return super().__call__(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit in the job on the preemption or time-limit signal, before it requeues the job: the
        requeued job runs the trial again, which continues its run (``sweeps.continuation``)."""
        job = os.environ.get("SLURM_JOB_ID", "?")
        log.warning("SLURM job %s: preempted or near its time limit; requeued, its trial will continue its run", job)
        return super().checkpoint(*args, **kwargs)
