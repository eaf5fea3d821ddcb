"""The learning-rate range test of a configuration: ``python experiments/lr_find.py model=wide1024``.

It builds the network, optimizer and clipping that ``run.py`` would train with the same overrides, runs
``nn.lr_finder.lr_range_test`` on the training set (``lr_find.min_lr``, ``lr_find.max_lr``,
``lr_find.steps``), logs the smoothed loss against the learning rate as an MLflow run (``lr_find/loss``
and ``lr_find/lr`` per step, the plot ``figures/lr_find.png``, the suggestion as a param), and prints the
override to train with.
"""

from __future__ import annotations

import logging

import hydra
import mlflow
from matplotlib.figure import Figure
from omegaconf import DictConfig

from experiments import build
from experiments.exits import BAD_INPUT, leave, run_command
from experiments.run import CONF
from experiments.store import experiment_id, resolve_store, run_page, use_store
from experiments.tracking import tags as T
from experiments.tracking.naming import experiment_params, hydra_context, run_name
from nn.lr_finder import DIVERGED, RangeTest, lr_range_test

log = logging.getLogger("nnlab")


def find_lr(cfg: DictConfig, overrides: list[str]) -> RangeTest:
    """Run the range test of ``cfg`` (tracked as an MLflow run unless ``tracking=none``); returns it."""
    setup = build.setup(cfg)
    parts, dataset, network, rng = setup.parts, setup.dataset, setup.network, setup.rng
    settings = cfg.lr_find
    with build.naming("lr_find", settings):  # a bad setting: ConfigError naming lr_find.<key>
        test = lr_range_test(
            network,
            parts.optimizer,
            dataset.train.X,
            dataset.train.y,
            min_lr=settings.min_lr,
            max_lr=settings.max_lr,
            steps=settings.steps,
            batch_size=cfg.train.batch_size or len(dataset.train.y),
            clipper=parts.clipper,
            rng=rng,
        )
    command = " ".join(["python experiments/run.py", *(o for o in overrides if not o.startswith("lr_find."))])
    if test.suggestion is None:
        log.warning("the loss diverged after %d steps, too few to suggest a rate: lower lr_find.min_lr", len(test.lrs))
    else:
        log.info(
            "suggested learning rate %.3g (a tenth of the rate at the lowest smoothed loss, fastai's rule; the "
            "loss falls fastest at %.3g). Train with:\n%s",
            test.suggestion,
            test.steepest,
            f"{command} optimizer.lr={test.suggestion:.3g}",
        )
    if cfg.tracking.enabled:
        track(cfg, dataset, network, test, overrides)
    return test


def track(cfg: DictConfig, dataset, network, test: RangeTest, overrides: list[str]) -> None:
    uri, artifact_location = resolve_store(cfg.tracking)
    use_store(uri)
    client = mlflow.MlflowClient(uri)
    experiment = experiment_id(client, cfg.tracking.experiment, artifact_location)
    params = experiment_params(cfg, dataset.train.X.shape[1], dataset.num_classes)
    params |= {f"lr_find.{key}": str(value) for key, value in cfg.lr_find.items()}
    suggestion = "none" if test.suggestion is None else f"{test.suggestion:.4g}"
    steepest = "none" if test.steepest is None else f"{test.steepest:.4g}"
    with mlflow.start_run(experiment_id=experiment, run_name=f"lr_find {run_name(overrides)}") as run:
        mlflow.set_tags({T.KIND: "lr_find", T.OVERRIDES: " ".join(overrides)})
        mlflow.log_params(params | {"lr_find.suggestion": suggestion, "lr_find.steepest": steepest})
        for step, (lr, loss) in enumerate(zip(test.lrs, test.losses)):
            mlflow.log_metrics({"lr_find/loss": float(loss), "lr_find/lr": float(lr)}, step=step)
        mlflow.log_figure(figure(test), "figures/lr_find.png")
        note = (
            f"Learning-rate range test of `{' '.join(['python experiments/lr_find.py', *overrides])}`: "
            f"{len(test.lrs)} steps from {test.lrs[0]:.2g} to {test.lrs[-1]:.2g}. Suggested optimizer.lr={suggestion}."
        )
        mlflow.set_tag(T.NOTE, note)
        log.info("logged as MLflow run %s: %s", run.info.run_id, run_page(uri, experiment, run.info.run_id))


def figure(test: RangeTest) -> Figure:
    """The smoothed loss against the learning rate (log scale), the suggestion marked."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(test.lrs, test.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"training loss (smoothed; stops at {DIVERGED:g}x its lowest)")
    if test.suggestion is not None:
        ax.axvline(test.suggestion, color="tab:red", linestyle="--", label=f"suggested {test.suggestion:.3g}")
        ax.axvline(test.steepest, color="tab:gray", linestyle=":", label=f"steepest descent {test.steepest:.3g}")
        ax.legend()
    return fig


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        find_lr(cfg, hydra_context()[0])
    except BAD_INPUT as err:
        leave(err)


if __name__ == "__main__":
    run_command(main)
