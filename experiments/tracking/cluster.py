"""Where a run ran on a cluster: the SLURM job, its array index, its node, how often SLURM restarted it and
where its stdout and stderr are, as run tags (from the job's environment)."""

from __future__ import annotations

import os

from experiments.tracking import tags as T


def slurm_tags() -> dict[str, str]:
    """The tags of the SLURM job this process runs in; none outside SLURM."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    tags = {
        T.SLURM_JOB: env["SLURM_JOB_ID"],
        T.SLURM_NODE: env.get("SLURMD_NODENAME", ""),
        T.SLURM_RESTARTS: env.get("SLURM_RESTART_COUNT", "0"),
    }
    if "SLURM_ARRAY_JOB_ID" in env:  # what squeue and scancel show: <array job>_<index>
        tags[T.SLURM_ARRAY] = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return tags | submitit_logs()


def submitit_logs() -> dict[str, str]:
    """The stdout and stderr files of a submitit job (they stay on the cluster's disk), when this is one."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return {}
    import submitit

    paths = submitit.JobEnvironment().paths
    return {T.SLURM_STDOUT: str(paths.stdout.resolve()), T.SLURM_STDERR: str(paths.stderr.resolve())}
