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
from experiments.exits import ENDINGS, FAILED, USAGE, diverged, leave, run_command
from experiments.tracking.tags import DIVERGED

log = logging.getLogger("nnlab")
CONF = Path(__file__).resolve().parents[1] / "conf"  # absolute: also found when run as python -m experiments.run


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float:
    from experiments.train import train  # here: --help, --cfg and refused overrides start without MLflow

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN  # a sweep goes on: its sweeper records each failure
    try:
        result = train(cfg)
    except ENDINGS as err:
        if multirun or isinstance(err, KeyboardInterrupt):
            raise
        leave(err)
    if result.status == DIVERGED and not multirun:
        log.error("%s", diverged(result.reason, result.run_id))
        sys.exit(FAILED)
    return result.objective


MODES = {
    "-m": "--multirun",
    "--multirun": "--multirun",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "--run": "--run",
    "-sc": "--shell-completion",
    "--shell-completion": "--shell-completion",
}


def refuse_unknown_keys() -> None:
    """Exit 2 with the valid keys nearby when an override names a key the config lacks (``train.epoch=3``), and
    in one line when Hydra's modes are mixed (``-m ... --cfg hydra``, which Hydra refuses with a traceback)."""
    modes = sorted({MODES[a] for a in sys.argv[1:] if a in MODES})
    if len(modes) > 1:
        print(
            f"{' and '.join(modes)} cannot be combined: drop one (-m, to print a config; "
            "-m ... hydra.sweeper.dry_run=true prints a sweep's space and settings)",
            file=sys.stderr,
        )
        sys.exit(USAGE)
    message = build.unknown_override(CONF, sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        sys.exit(USAGE)


if __name__ == "__main__":
    refuse_unknown_keys()
    run_command(main)
