"""MLflow tracking of a run, one module a job.

- ``tags``: the ``nnlab.*`` tag names and the run states (one vocabulary)
- ``mlflow_run``: the run's life as a training callback (start, metrics every epoch, figures and models at
  the end, closed as FINISHED, FAILED or KILLED)
- ``checkpoints``: the checkpoint policy and the resume-state format (written and read back)
- ``naming``: run names, params and the description
- ``provenance``: where and from what a run was made (git, versions, host), and closing orphaned runs
- ``signals``: Ctrl-C and SIGTERM held while a SQLite store is written
"""
