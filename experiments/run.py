"""Train one configuration: ``python experiments/run.py model=wide1024 optimizer.lr=0.05``.

Every config group and key is listed by ``python experiments/run.py --help``; presets are
``experiment=<name>`` (see conf/experiment/).
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.schema import ConfigError
from experiments.train import RunFailed, train
from nn.data import DataError

log = logging.getLogger("nnlab")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg).objective
    except (ConfigError, DataError) as err:
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


if __name__ == "__main__":
    main()
