"""The ``nnlab.*`` run tags and the states a run ends in: the one vocabulary of every module and command."""

# how a run ended (tag STATE; ``TrainResult.status`` for those train() returns rather than raises)
FINISHED, DIVERGED, PRUNED, CRASHED, KILLED = "finished", "diverged", "pruned", "crashed", "killed"
MLFLOW_STATUS = {FINISHED: "FINISHED", DIVERGED: "FAILED", CRASHED: "FAILED", PRUNED: "KILLED", KILLED: "KILLED"}

STATE = "nnlab.state"
FAILURE_REASON = "nnlab.failure_reason"
FAILED_EPOCH = "nnlab.failed_epoch"
ENDING = (STATE, FAILURE_REASON, FAILED_EPOCH)  # how a run ended: removed when it is reopened and goes on
WARNING = "nnlab.warning"
STOPPED_EARLY = "nnlab.stopped_early"  # the epoch training stopped at
KEPT_EPOCH = "nnlab.kept_epoch"  # the epoch whose weights the final model holds
RESULT = "nnlab.result"  # one line: test and val accuracy, epoch kept, state (a runs-table column)
RESUMED_FROM_EPOCH = "nnlab.resumed_from_epoch"
OVERRIDES = "nnlab.overrides"  # the command line's overrides
HOST, PID = "nnlab.host", "nnlab.pid"  # the process holding the run open
PID_SPACE = "nnlab.pid_space"  # the kernel boot and PID namespace its pid is counted in (provenance.pid_space)
KIND = "nnlab.kind"  # lr_find on a range test's run (absent on a training run)
CHECKPOINT = "nnlab.checkpoint"  # a logged model's: last or best
STUDY, TRIAL = "nnlab.study", "nnlab.trial"  # a sweep's trial
REQUEUES = "nnlab.requeues"  # times a trial's run was continued by its requeued or re-run job
# the SLURM job that ran (or last continued) the run: id, array job_index, node, restarts, log files
SLURM_JOB, SLURM_ARRAY, SLURM_NODE = "slurm.job_id", "slurm.array_job", "slurm.node"
SLURM_RESTARTS, SLURM_STDOUT, SLURM_STDERR = "slurm.restart_count", "slurm.stdout", "slurm.stderr"
SWEEP = "nnlab.sweep"  # a sweep's parent run: the study name
SWEEP_TRIALS, SWEEP_STORAGE = "nnlab.sweep.n_trials", "nnlab.sweep.storage"  # its budget and study storage
REPRODUCES = "nnlab.reproduces"
RERUN_OF = "nnlab.rerun_of"  # a run of ``sweeps.rerun``: <study>#<trial> whose settings it runs again
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
