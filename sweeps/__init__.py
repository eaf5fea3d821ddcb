"""The Optuna sweep engine under the ``nnlab_optuna`` Hydra sweeper: the sweep's loop (``engine``: batches to
Hydra's launcher, worker processes), its settings, the study and its storage, the search space in Hydra's
sweep syntax, trials, the MLflow parent run, reports. Nothing here imports the plugin (``hydra_plugins/``),
a thin front that imports ``sweeps.engine`` when a sweep starts."""
