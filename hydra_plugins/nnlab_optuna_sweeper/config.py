"""Registers ``hydra/sweeper=nnlab_optuna`` (schema: ``sweeps.config.SweeperConf``) when Hydra scans plugins."""

from sweeps.config import register

register()
