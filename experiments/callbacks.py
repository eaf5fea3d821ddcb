"""The harness's callbacks on ``nn.training.Loop``, and ``Callback`` with the MLflow run's id.

``train(cfg)`` runs the loop with, in this order: ``Diagnostics`` (adds ``watch/*`` metrics), the MLflow run
(``experiments.tracking.mlflow_run``, unless ``tracking=none``), ``FinalEvaluation``, ``LogProgress``,
``DivergenceCheck``, then the config's callbacks (early stopping) and the caller's (a sweep's pruning
reporter). A callback raising ``experiments.outcome.Pruned`` ends the run as pruned (closed as KILLED,
``nnlab.state=pruned``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

import nn
import nn.callbacks
from experiments import figures
from experiments.outcome import StuckAtChance, divergence_advice
from nn.diagnostics import Watch, activations

log = logging.getLogger("nnlab")

DIAGNOSTICS_SAMPLE = 1000  # validation examples that activation statistics and dead units are measured on


class Callback(nn.callbacks.Callback):
    """``nn``'s callback plus ``run_id``: the MLflow run's id, set when the run starts (None with
    ``tracking=none``)."""

    run_id: str | None = None


class Diagnostics(Callback):
    """Each epoch's per-layer statistics under ``watch/`` (MLflow shows them after the learning curves):
    ``watch``'s gradient norms and update ratios, and activations and dead units on ``val_sample``."""

    def __init__(self, watch: Watch, val_sample: np.ndarray) -> None:
        self.watch, self.val_sample = watch, val_sample

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        stats = self.watch.epoch_metrics() | activations(loop.network, self.val_sample)
        metrics |= {f"watch/{key}": value for key, value in stats.items() if math.isfinite(value)}


def best_row(loop) -> dict:
    """The best epoch's row of ``loop.history``: early stopping's best (its monitor and ``min_delta``) where the
    loop has early stopping, else the highest validation accuracy."""
    stopper = nn.callbacks.early_stopping(getattr(loop, "callbacks", []))
    if stopper is not None and stopper.best_epoch:
        return next(row for row in loop.history if row["epoch"] == stopper.best_epoch)
    return max(loop.history, key=lambda row: row["val/acc"])


class FinalEvaluation(Callback):
    """At the end, ``best_epoch`` and that epoch's validation accuracy ``val/best_acc`` (``best_row``) and,
    where there is a test set, ``test/loss`` and ``test/acc`` in ``loop.final``; ``test`` holds the test set's
    confusion counts (K, K) and probabilities (N, K). Runs after the callbacks that restore weights (early
    stopping), before the run is closed."""

    def __init__(self, dataset) -> None:
        self.dataset, self.test = dataset, None

    def on_train_end(self, loop) -> None:
        best = best_row(loop)
        loop.final |= {"val/best_acc": best["val/acc"], "best_epoch": best["epoch"]}
        test = self.dataset.test
        if test is None:
            log.warning("%s", no_test_set(self.dataset))
            return
        loss, acc, probs = loop.network.evaluate(test.X, test.y, probabilities=True)
        self.test = (figures.confusion_matrix(test.y, probs.argmax(axis=1), self.dataset.num_classes), probs)
        loop.final |= {"test/loss": loss, "test/acc": acc}
        log.info("test loss %.4f acc %.4f", loss, acc)


def no_test_set(dataset) -> str:
    """Why a run has no test metrics."""
    return (
        f"{dataset.name} has no labelled test set here (dataset.test_csv unset, or its file has no label "
        "column): no test metrics are logged; the validation metrics are the run's result"
    )


class LogProgress(Callback):
    """A progress bar within each epoch (on a terminal, with ``progress``) and a log line after it."""

    def __init__(self, summary: str, progress: bool) -> None:
        self.summary, self.progress, self.bar = summary, progress, None

    def on_train_start(self, loop) -> None:
        log.info("%s", self.summary)

    def on_batch_end(self, loop, step: int, num_batches: int, loss: float) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=num_batches,
                desc=f"epoch {loop.epoch}/{loop.epochs}",
                unit="batch",
                leave=False,
                disable=None if self.progress else True,
                mininterval=0.5,
            )
        self.bar.update()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        self.close_bar()
        row = loop.history[-1]
        log.info(
            "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.3g  %.2fs",
            loop.epoch,
            loop.epochs,
            row["train/loss"],
            row["train/acc"],
            row["val/loss"],
            row["val/acc"],
            row["lr"],
            row["epoch_time"],
        )

    def on_train_end(self, loop) -> None:
        if loop.stopped:
            log.info("%s", loop.stopped)

    def on_exception(self, loop, error: BaseException) -> None:
        self.close_bar()


class DivergenceCheck(Callback):
    """``check_progress`` after every epoch: raises ``StuckAtChance`` for a run that blew up, and says once
    (in the log and through ``warn``, the run's ``nnlab.warning`` tag) that a run learns too slowly."""

    def __init__(self, num_classes: int, divergence: DictConfig, warn: Callable[[str], None] | None = None) -> None:
        self.num_classes, self.divergence, self.warn, self.warned = num_classes, divergence, warn, False

    def on_epoch_end(self, loop, metrics: dict[str, float]) -> None:
        warning = check_progress(loop.history, self.num_classes, self.divergence, loop.trainer.clipper)
        if warning and not self.warned:
            log.warning("%s", warning)
            if self.warn is not None:
                self.warn(warning)
            self.warned = True


def check_progress(history: list[dict], num_classes: int, divergence: DictConfig, clipper=None) -> str | None:
    """Tell a run that blew up from one that learns too slowly, once validation accuracy sits at chance.

    From epoch ``check_after`` on, accuracy below chance + ``chance_margin`` with the training loss above
    twice a uniform guess's (ln of the classes), rising since the last epoch, a gradient norm grown
    tenfold since the first epoch, or a validation loss unchanged since the last epoch (dead units), is
    divergence: raises ``StuckAtChance`` with the ``divergence_advice`` for ``clipper``. With the loss falling
    instead, the run is too slow, not broken: returns a warning and the run goes on.
    """
    row, first = history[-1], history[0]
    epoch, accuracy, loss = row["epoch"], row["val/acc"], row["train/loss"]
    chance = 1.0 / num_classes
    if epoch < divergence.check_after or accuracy >= chance + divergence.chance_margin:
        return None
    uniform = math.log(num_classes)
    at_chance = f"validation accuracy {accuracy:.4f} is at chance level ({chance:.2f}) after epoch {epoch}"
    if loss > 2 * uniform:
        cause = f"the training loss is {loss:.4g}, above {2 * uniform:.2f} (twice a uniform guess's)"
    elif len(history) > 1 and loss > history[-2]["train/loss"] * 1.01:
        cause = f"the training loss rose from {history[-2]['train/loss']:.4f} to {loss:.4f}"
    elif math.isfinite(first["grad_norm"]) and row["grad_norm"] > 10 * first["grad_norm"]:
        cause = f"the gradient norm grew from {first['grad_norm']:.3g} to {row['grad_norm']:.3g}"
    elif len(history) > 1 and abs(row["val/loss"] - history[-2]["val/loss"]) <= 1e-5 * history[-2]["val/loss"]:
        cause = f"the validation loss is stuck at {row['val/loss']:.5f}: units are dead or saturated"
    else:
        return (
            f"{at_chance}, but the loss is falling (training loss {first['train/loss']:.4f} in epoch "
            f"{first['epoch']}, validation loss {row['val/loss']:.4f} now): the run learns too slowly rather than "
            "diverging. Raise optimizer.lr (or train longer); it goes on."
        )
    raise StuckAtChance(f"{at_chance} and {cause}: the run diverged. {divergence_advice(clipper)}")
