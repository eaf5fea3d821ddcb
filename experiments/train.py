"""``train(cfg)``: compose-time config in, one trained network and one tracked run out.

Kept free of ``@hydra.main`` so tests and sweeps call it with a composed config; ``run.py`` is the
command-line entry point around it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

import nn
from experiments import build, figures
from experiments.callbacks import Callback, Pruned
from experiments.store import first_line, open_store, resolve_store, root_cause
from experiments.tracking import MlflowTracker, NullTracker
from nn.callbacks import StopTraining
from nn.diagnostics import Watch, activations
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

    def __init__(self, run_id: str | None, reason: str, unclosed: str | None = None) -> None:
        super().__init__(reason)
        self.run_id, self.unclosed = run_id, unclosed

    def explain(self) -> str:
        """The one-paragraph message a command prints for this failure."""
        if self.run_id and self.unclosed:
            where = (
                f"The store refused to record the end of MLflow run {self.run_id} too ({self.unclosed}); the next "
                "run on this host that opens the store closes it as FAILED."
            )
        elif self.run_id:
            where = (
                f"MLflow run {self.run_id} is closed as FAILED with this reason (tag nnlab.failure_reason); "
                "everything logged before the failure is kept."
            )
        else:
            where = "No MLflow run was left open."
        return f"The run failed: {self}. {where}"


def failure_reason(err: Exception) -> str:
    """The reason recorded for a run that raised: the error's first line and its root cause's, or for a full
    disk what to do about it."""
    root = root_cause(err)
    if (isinstance(root, OSError) and root.errno == errno.ENOSPC) or "disk is full" in str(root):
        return (
            f"a disk is full ({first_line(root)}). Free space on it, or point tracking.dir (the MLflow store) and "
            "hydra.run.dir (the outputs) at a disk with room"
        )
    return first_line(err) if root is err else f"{first_line(err)} (from {first_line(root)})"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, a cluster scheduler), raised by ``terminate`` and handled as Ctrl-C."""


def terminate(signum, frame) -> None:
    """The SIGTERM handler of the entry points: stop where Ctrl-C would."""
    raise Terminated()


def interruption(err: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"


def run_command(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry point's ``main`` with SIGTERM handled as Ctrl-C; either ends in one line on stderr and
    exit code 143 (SIGTERM) or 130 (Ctrl-C), the run in progress already closed as KILLED."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        code = main()
    except KeyboardInterrupt as err:
        print(
            f"{interruption(err)}: a run still in progress is closed as KILLED with its last weights "
            "(python experiments/resume.py <run id> continues it); rerun a sweep's command to resume the sweep.",
            file=sys.stderr,
        )
        sys.exit(143 if isinstance(err, Terminated) else 130)
    sys.exit(code or 0)


class StuckAtChance(RuntimeError):
    """Validation accuracy stayed at chance level: the run diverged without a non-finite loss."""


def hydra_context() -> tuple[list[str], Path | None, set[str]]:
    """Command-line overrides and the ``.hydra`` folder of this job, when running under Hydra, and the keys
    its multirun sweeps (``optimizer.lr=0.01,0.1``), read from the sweep's ``multirun.yaml``."""
    if not HydraConfig.initialized():
        return [], None, set()
    hydra = HydraConfig.get()
    swept = set()
    if hydra.mode == RunMode.MULTIRUN:
        sweep = Path(hydra.runtime.cwd) / hydra.sweep.dir / "multirun.yaml"
        with contextlib.suppress(OSError, OmegaConfBaseException, HydraException):
            parsed = OverridesParser.create().parse_overrides(list(OmegaConf.load(sweep).hydra.overrides.task))
            swept = {override.get_key_element().lstrip("+~") for override in parsed if override.is_sweep_override()}
    return list(hydra.overrides.task), Path(hydra.runtime.output_dir) / hydra.output_subdir, swept


def train(cfg: DictConfig, callbacks: Sequence[Callback] = (), resume: Resume | None = None) -> TrainResult:
    """Train as ``cfg`` says and track it; returns a ``TrainResult`` (objective NaN unless finished).

    Every callback's ``on_epoch_end`` runs after each epoch is logged; one raising ``Pruned`` ends the
    run as pruned. ``resume`` continues an interrupted run in place from its last training-state file
    (see ``experiments/resume.py``).

    Raises ``ConfigError``, ``StoreError`` or ``DataError`` before anything is tracked; ``RunFailed`` when training or
    logging raises (the run closed as FAILED); Ctrl-C closes the run as KILLED with the last weights kept.
    """
    parts = build.parts(cfg)
    if cfg.tracking.enabled:
        open_store(resolve_store(cfg.tracking)[0])
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
        Watch(network, every=cfg.train.grad_norm_every) if cfg.train.diagnostics else None,
    )
    callbacks = [*parts.callbacks, *callbacks]
    history: list[dict] = []
    if resume is not None:
        saved, state, record = load_training_state(resume.state_file)
        network.set_params(saved.params)
        trainer.load_state_dict(state)
        history = record["history"]
        load_callback_states(callbacks, record)
    overrides, hydra_dir, swept = hydra_context()
    tracker = (
        MlflowTracker(cfg, dataset, overrides, hydra_dir, resume.run_id if resume else None, history, swept)
        if cfg.tracking.enabled
        else NullTracker()
    )
    tracker.callbacks = callbacks
    epochs, epoch, stopped = cfg.train.epochs, len(history), None
    val_sample = dataset.val.X[: build.DIAGNOSTICS_SAMPLE]
    try:
        tracker.start()
        for callback in callbacks:
            if isinstance(callback, Callback):
                callback.run_id = tracker.run_id
            callback.on_train_start(network)
        if resume is not None and history:  # the state was saved before the callbacks saw its epoch
            stopped = replay_last_epoch(callbacks, history[-1])
        log.info(
            "%s on %s: %d train / %d val examples",
            network_summary(network),
            dataset.name,
            len(dataset.train.y),
            len(dataset.val.y),
        )
        warned = None
        last = epochs if stopped is None else len(history)  # a resumed run its callbacks stop trains no more
        for epoch in range(len(history) + 1, last + 1):
            row, val_probs = train_epoch(trainer, dataset, epoch, epochs, cfg.train.progress)
            history.append(row)
            counts = figures.confusion_matrix(dataset.val.y, val_probs.argmax(axis=1), dataset.num_classes)
            metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
            watched = diagnostics(trainer.watch, network, val_sample)
            tracker.log_epoch(epoch, metrics | watched, network, counts, epoch == epochs, trainer, history)
            tracker.dead = {k: v for k, v in watched.items() if k.endswith("dead_fraction") and v > 0.5}
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
            warning = check_progress(history, dataset.num_classes, cfg.train.divergence)
            if warning and warned is None:  # said once; the run goes on
                log.warning("%s", warning)
                tracker.warn(warning)
                warned = warning
            try:
                for callback in callbacks:
                    callback.on_epoch_end(epoch, metrics)
            except StopTraining as stop:
                stopped = str(stop)
                log.info("%s", stopped)
                break
        for callback in callbacks:
            callback.on_train_end(network)
        final, test = final_metrics(network, dataset, history)
        kept = next((c.best_epoch for c in callbacks if getattr(c, "restore_best", False) and c.best_epoch), None)
        tracker.finish(network, dataset, history, final, test, stopped, kept)
    except (nn.Diverged, StuckAtChance) as err:
        reason = str(err)
        if isinstance(err, nn.Diverged):  # nn counts epochs from 0, runs from 1
            because = f" ({trainer.watch.explain(first_epoch=1)})" if trainer.watch is not None else ""
            reason = (
                f"training diverged: loss is {err.loss} at epoch {epoch}, step {err.step}{because}. "
                "Lower optimizer.lr, or add clipping=value or clipping=norm."
            )
        log.error("run failed at epoch %d: %s", epoch, reason)
        tracker.fail(reason, epoch, "diverged")
        return TrainResult(tracker.run_id, "failed", reason, history, {}, float("nan"))
    except Pruned as err:
        log.info("pruned at epoch %d: %s", epoch, err)
        tracker.prune(str(err), epoch)
        return TrainResult(tracker.run_id, "pruned", str(err), history, {}, float("nan"))
    except KeyboardInterrupt as err:
        if tracker.run_id is None or tracker.is_open():
            log.warning("%s at epoch %d; run closed as KILLED with the last weights", interruption(err), epoch)
            tracker.kill(network, epoch, interruption(err))
        raise
    except Exception as err:
        reason = failure_reason(err)
        tracker.fail(reason, epoch)
        raise RunFailed(tracker.run_id, reason, tracker.unclosed) from err
    except BaseException as err:
        tracker.fail(f"{type(err).__name__}: {err}", epoch)
        raise
    if tracker.unclosed:  # trained to the end, but the store did not take the run's end (a full disk)
        reason = f"it trained to the end, but the store did not record that ({tracker.unclosed})"
        raise RunFailed(tracker.run_id, reason, tracker.unclosed)
    if "test/acc" in final:
        log.info("test loss %.4f acc %.4f", final["test/loss"], final["test/acc"])
    if tracker.run_id:
        log.info("logged as MLflow run %s: %s", tracker.run_id, tracker.page())
    value = objective(cfg.train.objective, history[-1], final)
    return TrainResult(tracker.run_id, "finished", None, history, final, value)


def diagnostics(watch: Watch | None, network: nn.Network, val_sample: np.ndarray) -> dict[str, float]:
    """This epoch's per-layer statistics under ``watch/`` (MLflow shows them after the learning curves), or
    none when ``train.diagnostics=false``."""
    if watch is None:
        return {}
    stats = watch.epoch_metrics() | activations(network, val_sample)
    return {f"watch/{key}": value for key, value in stats.items() if math.isfinite(value)}


def replay_last_epoch(callbacks: Sequence, row: dict) -> str | None:
    """Show the stateful callbacks (early stopping) the resumed state's last epoch, which they had not seen
    when it was written; returns why training stops if one stops it there."""
    metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
    try:
        for callback in callbacks:
            if hasattr(callback, "load_state_dict"):
                callback.on_epoch_end(row["epoch"], metrics)
    except StopTraining as stop:
        return str(stop)
    return None


def load_callback_states(callbacks: Sequence, record: dict) -> None:
    """Give each stateful callback (early stopping) what it had when the resumed state was written."""
    states, arrays = record.get("callbacks", {}), record.get("arrays", {})
    for index, callback in enumerate(callbacks):
        if hasattr(callback, "load_state_dict") and str(index) in states:
            prefix = f"callback{index}/"
            params = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)} or None
            callback.load_state_dict(states[str(index)] | {"params": params})


def train_epoch(trainer: nn.Trainer, dataset, epoch: int, epochs: int, progress: bool) -> tuple[dict, np.ndarray]:
    """One epoch of training and its validation: the row of metrics and the validation probabilities (N, C)."""
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
    val_loss, val_acc, val_probs = trainer.network.evaluate(dataset.val.X, dataset.val.y, probabilities=True)
    trainer.end_epoch(val_loss)
    row = {
        "epoch": epoch,
        "train/loss": result.loss,
        "train/acc": result.accuracy,
        "val/loss": val_loss,
        "val/acc": val_acc,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "epoch_time": result.seconds,
    }
    return row, val_probs


def check_progress(history: list[dict], num_classes: int, divergence: DictConfig) -> str | None:
    """Tell a run that blew up from one that learns too slowly, once validation accuracy sits at chance.

    From epoch ``check_after`` on, accuracy below chance + ``chance_margin`` with the training loss above
    twice a uniform guess's (ln of the classes), rising since the last epoch, a gradient norm grown
    tenfold since the first epoch, or a validation loss unchanged since the last epoch (dead units), is
    divergence: raises ``StuckAtChance``. With the loss falling
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
    raise StuckAtChance(
        f"{at_chance} and {cause}: the run diverged. Lower optimizer.lr, or add clipping=value or clipping=norm."
    )


def final_metrics(network: nn.Network, dataset, history: list[dict]) -> tuple[dict, tuple | None]:
    """Best validation accuracy and, where there is a test set, test loss and accuracy with the test set's
    confusion counts (K, K) and probabilities (N, K)."""
    best = max(history, key=lambda row: row["val/acc"])
    final = {"val/best_acc": best["val/acc"], "best_epoch": best["epoch"]}
    if dataset.test is None:
        return final, None
    loss, acc, probs = network.evaluate(dataset.test.X, dataset.test.y, probabilities=True)
    counts = figures.confusion_matrix(dataset.test.y, probs.argmax(axis=1), dataset.num_classes)
    final |= {"test/loss": loss, "test/acc": acc}
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
