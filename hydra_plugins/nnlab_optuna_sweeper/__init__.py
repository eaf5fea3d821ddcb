"""nnlab's Optuna sweeper for Hydra multirun (Optuna 5, with pruning): ``hydra/sweeper=nnlab_optuna``."""
