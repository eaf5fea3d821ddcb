"""What ``hydra/launcher=slurm`` (``hydra_plugins/nnlab_slurm_launcher``) adds to Hydra's submitit SLURM
launcher: quiet logs.

Each trial is one SLURM job. When SLURM preempts it or its time limit comes near, it sends the job,
``hydra.launcher.signal_delay_s`` seconds ahead, the signal submitit asks for (USR2); submitit then calls the
launcher's ``checkpoint``, requeues the job and exits, and the requeued job runs the same trial again, which
continues its MLflow run from its last completed epoch (``sweeps.continuation``).

Quiet: submitit's log records go once, through Hydra's logging (submitit's own two handlers would print each
again, a warning twice), and on a cluster without accounting, where every poll's ``sacct`` fails and submitit
asks ``squeue`` instead, that is said once rather than at every poll, with sacct's own message.
"""

from __future__ import annotations

import logging
import subprocess
import time

from submitit.slurm import slurm as submitit_slurm

log = logging.getLogger("nnlab.sweeps")


def quiet_submitit() -> None:
    """submitit's records through Hydra's handlers alone, and its job-state poller made a ``QuietWatcher``."""
    logging.getLogger("submitit").handlers.clear()
    if not isinstance(submitit_slurm.SlurmJob.watcher, QuietWatcher):
        submitit_slurm.SlurmJob.watcher = QuietWatcher(delay_s=submitit_slurm.SlurmJob.watcher._delay_s)


class QuietWatcher(submitit_slurm.SlurmInfoWatcher):
    """submitit's job-state poller (``InfoWatcher.update``): ``sacct``, or where it fails (no accounting) ``squeue``,
    which lists the jobs of the last ``MinJobAge`` seconds, ended ones too; its failure said once per process
    rather than at every poll. Without either, a job that died without a result file would be waited for forever."""

    failure_said = False

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        sacct = subprocess.run(command, capture_output=True)
        if sacct.returncode == 0:
            self._output = sacct.stdout
        else:
            if not QuietWatcher.failure_said:
                QuietWatcher.failure_said = True
                said = sacct.stderr.decode(errors="replace").strip() or f"exit status {sacct.returncode}"
                log.info("sacct cannot tell the jobs' states (%s): asking squeue instead", said)
            self._output = self.squeue()
        self._info_dict.update(self.read_info(self._output))
        self._last_status_check = time.time()
        for job in self._registered - self._finished:
            if self.is_done(job, mode="cache"):
                self._finished.add(job)

    def squeue(self) -> str:
        """The states of the registered jobs, as ``sacct -o JobID,State,NodeList --parsable2`` prints them; a job
        squeue no longer lists has ended (``NOT_LISTED``, a state submitit counts as done)."""
        listed = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i|%T|%N"], capture_output=True)
        if listed.returncode != 0:
            return ""
        rows = listed.stdout.decode(errors="replace").split()
        mains = {row.split("|")[0].split("_")[0] for row in rows}
        rows += [f"{job}|NOT_LISTED|" for job in self._registered - self._finished if job.split("_")[0] not in mains]
        return "\n".join(["JobID|State|NodeList", *rows])
