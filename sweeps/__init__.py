"""Optuna sweeps over ``experiments.train.train``: the driver (``python -m sweeps.run``), the study, the
search space in Hydra's sweep syntax, MLflow parent runs, reports. The ``nnlab_optuna`` Hydra sweeper
(``hydra_plugins/``) reuses the same pieces."""
