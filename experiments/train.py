"""``train(cfg)``: compose-time config in, one trained network and one tracked run out.

Kept free of ``@hydra.main`` so tests and sweeps call it with a composed config; ``run.py`` is the
command-line entry point around it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

import nn
from experiments import build, figures
from experiments.callbacks import Callback, Pruned
from experiments.tracking import MlflowTracker, NullTracker, ui_command
from nn.serialization import load_training_state

log = logging.getLogger("nnlab")


@dataclass
class Resume:
    """Continue MLflow run ``run_id`` from ``state_file`` (written by ``nn.serialization.save_training_state``)."""

    run_id: str
    state_file: Path


@dataclass
class TrainResult:
    """What ``train`` did: the run, how it ended and why, its metrics, and the sweep objective.

    ``status`` is "finished", "failed" (diverged: ``reason`` says how) or "pruned" (a callback raised
    ``Pruned``); Ctrl-C and errors raise instead (the run is closed as KILLED or FAILED first).
    ``history`` holds one row of metrics per epoch; ``final`` the end-of-run metrics (test, best val).
    """

    run_id: str | None
    status: str
    reason: str | None
    history: list[dict]
    final: dict
    objective: float


class RunFailed(RuntimeError):
    """Training or tracking raised: the run (``run_id``, None when untracked) is closed as FAILED.

    ``str()`` is the reason recorded on the run; the original exception is the ``__cause__``."""

    def __init__(self, run_id: str | None, reason: str) -> None:
        super().__init__(reason)
        self.run_id = run_id

    def explain(self) -> str:
        """The one-paragraph message a command prints for this failure."""
        where = (
            f"MLflow run {self.run_id} is closed as FAILED with this reason (tag nnlab.failure_reason); "
            "everything logged before the failure is kept."
            if self.run_id
            else "No MLflow run was left open."
        )
        return f"The run failed: {self}. {where}"


class StuckAtChance(RuntimeError):
    """Validation accuracy stayed at chance level: the run diverged without a non-finite loss."""


def hydra_context() -> tuple[list[str], Path | None]:
    """Command-line overrides and the ``.hydra`` folder of this job, when running under Hydra."""
    if not HydraConfig.initialized():
        return [], None
    hydra = HydraConfig.get()
    return list(hydra.overrides.task), Path(hydra.runtime.output_dir) / hydra.output_subdir


def train(cfg: DictConfig, callbacks: Sequence[Callback] = (), resume: Resume | None = None) -> TrainResult:
    """Train as ``cfg`` says and track it; returns a ``TrainResult`` (objective NaN unless finished).

    Every callback's ``on_epoch_end`` runs after each epoch is logged; one raising ``Pruned`` ends the
    run as pruned. ``resume`` continues an interrupted run in place from its last training-state file
    (see ``experiments/resume.py``).

    Raises ``ConfigError`` or ``DataError`` before anything is tracked; ``RunFailed`` when training or
    logging raises (the run closed as FAILED); Ctrl-C closes the run as KILLED with the last weights kept.
    """
    parts = build.parts(cfg)
    dtype = np.dtype(cfg.train.dtype)
    dataset = build.call("dataset", cfg.dataset, seed=cfg.seed, dtype=dtype)
    augmenter = build.augmenter(parts, dataset)
    rng = np.random.default_rng(cfg.seed)
    network = parts.make_network(
        input_dim=dataset.train.X.shape[1], num_classes=dataset.num_classes, rng=rng, dtype=dtype
    )
    trainer = nn.Trainer(
        network,
        parts.optimizer,
        parts.schedule,
        parts.clipper,
        augmenter,
        cfg.train.batch_size,
        rng,
        cfg.train.grad_norm_every,
    )
    history: list[dict] = []
    if resume is not None:
        saved, state, record = load_training_state(resume.state_file)
        network.set_params(saved.params)
        trainer.load_state_dict(state)
        history = record["history"]
    overrides, hydra_dir = hydra_context()
    tracker = (
        MlflowTracker(cfg, dataset, overrides, hydra_dir, resume.run_id if resume else None, history)
        if cfg.tracking.enabled
        else NullTracker()
    )
    epochs, epoch = cfg.train.epochs, len(history)
    try:
        tracker.start()
        log.info(
            "%s on %s: %d train / %d val examples",
            network_summary(network),
            dataset.name,
            len(dataset.train.y),
            len(dataset.val.y),
        )
        for epoch in range(len(history) + 1, epochs + 1):
            row = train_epoch(trainer, dataset, epoch, epochs, cfg.train.progress)
            _, _, val_probs = row.pop("_val")
            history.append(row)
            counts = figures.confusion_matrix(dataset.val.y, val_probs.argmax(axis=1), dataset.num_classes)
            metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
            tracker.log_epoch(epoch, metrics, network, counts, epoch == epochs, trainer, history)
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.3g  %.2fs",
                epoch,
                epochs,
                row["train/loss"],
                row["train/acc"],
                row["val/loss"],
                row["val/acc"],
                row["lr"],
                row["epoch_time"],
            )
            check_chance(row["val/acc"], epoch, dataset.num_classes, cfg.train.divergence)
            for callback in callbacks:
                callback.on_epoch_end(epoch, metrics, tracker.run_id)
        final, test = final_metrics(network, dataset, history)
        tracker.finish(network, dataset, history, final, test)
    except (nn.Diverged, StuckAtChance) as err:
        reason = str(err)
        if isinstance(err, nn.Diverged):  # nn counts epochs from 0, runs from 1
            reason = (
                f"training diverged: loss is {err.loss} at epoch {epoch}, step {err.step}. "
                "Lower optimizer.lr, or add clipping=value or clipping=norm."
            )
        log.error("run failed at epoch %d: %s", epoch, reason)
        tracker.fail(reason, epoch)
        return TrainResult(tracker.run_id, "failed", reason, history, {}, float("nan"))
    except Pruned as err:
        log.info("pruned at epoch %d: %s", epoch, err)
        tracker.prune(str(err), epoch)
        return TrainResult(tracker.run_id, "pruned", str(err), history, {}, float("nan"))
    except KeyboardInterrupt:
        log.warning("interrupted at epoch %d; run closed as KILLED with the last weights", epoch)
        tracker.kill(network, epoch)
        raise
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        tracker.fail(reason, epoch)
        raise RunFailed(tracker.run_id, reason) from err
    except BaseException as err:
        tracker.fail(f"{type(err).__name__}: {err}", epoch)
        raise
    if "test/acc" in final:
        log.info("test loss %.4f acc %.4f", final["test/loss"], final["test/acc"])
    if tracker.run_id:
        log.info("logged as MLflow run %s; browse with: %s", tracker.run_id, ui_command(tracker.uri))
    value = objective(cfg.train.objective, history[-1], final)
    return TrainResult(tracker.run_id, "finished", None, history, final, value)


def train_epoch(trainer: nn.Trainer, dataset, epoch: int, epochs: int, progress: bool) -> dict:
    """One epoch of training and its validation, as a row of metrics (plus ``_val`` results)."""
    steps = math.ceil(len(dataset.train.y) / (trainer.batch_size or len(dataset.train.y)))
    with tqdm(
        total=steps,
        desc=f"epoch {epoch}/{epochs}",
        unit="batch",
        leave=False,
        disable=None if progress else True,
        mininterval=0.5,
    ) as bar:
        result = trainer.train_epoch(dataset.train.X, dataset.train.y, epoch - 1, on_batch=lambda *_: bar.update())
    val = trainer.network.evaluate(dataset.val.X, dataset.val.y, probabilities=True)
    trainer.end_epoch(val[0])
    return {
        "epoch": epoch,
        "train/loss": result.loss,
        "train/acc": result.accuracy,
        "val/loss": val[0],
        "val/acc": val[1],
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "epoch_time": result.seconds,
        "_val": val,
    }


def check_chance(val_acc: float, epoch: int, num_classes: int, divergence: DictConfig) -> None:
    """Raise ``StuckAtChance`` when, from ``check_after`` on, validation accuracy is at chance level."""
    chance = 1.0 / num_classes
    if epoch >= divergence.check_after and val_acc < chance + divergence.chance_margin:
        raise StuckAtChance(
            f"validation accuracy {val_acc:.4f} is at chance level ({chance:.2f}) after epoch {epoch}: "
            "the run diverged. Lower optimizer.lr, or add clipping=value or clipping=norm."
        )


def final_metrics(network: nn.Network, dataset, history: list[dict]) -> tuple[dict, tuple | None]:
    """Best validation accuracy and, where there is a test set, test loss/accuracy and per-class accuracy."""
    best = max(history, key=lambda row: row["val/acc"])
    final = {"val/best_acc": best["val/acc"], "best_epoch": best["epoch"]}
    if dataset.test is None:
        return final, None
    loss, acc, probs = network.evaluate(dataset.test.X, dataset.test.y, probabilities=True)
    counts = figures.confusion_matrix(dataset.test.y, probs.argmax(axis=1), dataset.num_classes)
    final |= {"test/loss": loss, "test/acc": acc}
    final |= {f"test/acc_class_{k}": v for k, v in figures.per_class_accuracy(counts).items() if math.isfinite(v)}
    return final, (counts, probs)


def objective(name: str, last: dict, final: dict) -> float:
    value = final.get(name, last.get(name))
    if value is None:
        log.warning("objective %s was not measured (no test set?); returning NaN", name)
        return float("nan")
    return float(value)


def network_summary(network: nn.Network) -> str:
    sizes = [layer.in_features for layer in network.layers if isinstance(layer, nn.Dense)] + [network.num_classes]
    count = sum(p.size for p in network.params.values())
    return f"{'-'.join(map(str, sizes))} network ({count:,} parameters)"
