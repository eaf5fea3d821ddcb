"""The Optuna sweep engine under the ``nnlab_optuna`` Hydra sweeper (``hydra_plugins/``): its settings, the
study and its storage, the search space in Hydra's sweep syntax, trials, the MLflow parent run, reports."""
