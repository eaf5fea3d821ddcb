"""Train one configuration: ``python experiments/run.py model=wide1024 optimizer.lr=0.05``.

Every config group and key is listed by ``python experiments/run.py --help``; presets are
``experiment=<name>`` (see conf/experiment/). ``-m`` runs a multirun: ``-m optimizer.lr=0.01,0.1``
(a grid, Hydra's basic sweeper) or ``-m sweep=<name>`` (an Optuna study, see conf/sweep/).
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments import build
from experiments.schema import ConfigError
from experiments.store import StoreError
from experiments.train import RunFailed, run_command, train
from nn.data import DataError

log = logging.getLogger("nnlab")
CONF = Path(__file__).resolve().parents[1] / "conf"  # absolute: also found when run as python -m experiments.run


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        result = train(cfg)
        if result.status == "failed" and HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on with NaN
            where = f"MLflow run {result.run_id} is closed as FAILED with this reason." if result.run_id else ""
            log.error("The run failed: %s %s", result.reason, where)
            sys.exit(1)
        return result.objective
    except (ConfigError, StoreError, DataError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.error("%s", err)
        sys.exit(2)
    except RunFailed as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.debug("traceback of the failure", exc_info=err.__cause__)
        log.error("%s To see the traceback, run again with hydra.verbose=nnlab.", err.explain())
        sys.exit(1)


def refuse_unknown_keys() -> None:
    """Exit 2 with the valid keys nearby when an override names a key the config lacks (``train.epoch=3``)."""
    message = build.unknown_override(CONF, sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    refuse_unknown_keys()
    run_command(main)
