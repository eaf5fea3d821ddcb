"""``train(cfg)``: compose-time config in, one trained network and one tracked run out.

Kept free of ``@hydra.main`` so tests and sweeps call it with a composed config; ``run.py`` is the
command-line entry point around it. It reads as lightning-hydra-template's ``train``: build, callbacks,
fit (``nn.Loop``), evaluate (a callback at the end of the loop), return the result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

import nn
from experiments import build
from experiments.callbacks import DIAGNOSTICS_SAMPLE, Diagnostics, DivergenceCheck, FinalEvaluation, LogProgress
from experiments.outcome import RunFailed, interruption, outcome
from experiments.tracking import tags as T
from experiments.tracking.checkpoints import restore
from experiments.tracking.mlflow_run import MlflowRun
from experiments.tracking.naming import hydra_context
from nn.diagnostics import Watch

log = logging.getLogger("nnlab")


@dataclass
class Resume:
    """Continue MLflow run ``run_id`` from ``state_file`` (written by ``experiments.tracking.checkpoints``)."""

    run_id: str
    state_file: Path


@dataclass
class TrainResult:
    """What ``train`` did: the run, how it ended and why, its metrics, and the sweep objective.

    ``status`` is ``finished``, ``diverged`` (``reason`` says how) or ``pruned`` (a callback raised
    ``Pruned``), the states of ``experiments.tracking.tags``; Ctrl-C and errors raise instead (the run is
    closed as KILLED or FAILED first). ``history`` holds one row of metrics per epoch; ``final`` the
    end-of-run metrics (test, best val).
    """

    run_id: str | None
    status: str
    reason: str | None
    history: list[dict]
    final: dict
    objective: float


def train(
    cfg: DictConfig, callbacks: Sequence[nn.callbacks.Callback] = (), resume: Resume | None = None
) -> TrainResult:
    """Train as ``cfg`` says and track it; returns a ``TrainResult`` (objective NaN unless finished).

    ``callbacks`` run after the config's own (early stopping) every epoch, once the epoch is logged (their
    ``on_train_end`` runs first, before early stopping restores the best weights); one raising ``Pruned``
    ends the run as pruned. ``resume`` continues an interrupted run in place from its last
    training-state file (see ``experiments/resume.py``).

    Raises ``ConfigError``, ``StoreError`` or ``DataError`` before anything is tracked; ``RunFailed`` when training or
    logging raises (the run closed as FAILED); Ctrl-C closes the run as KILLED with the last weights kept.
    """
    setup = build.setup(cfg)
    dataset, network = setup.dataset, setup.network
    watch = Watch(network, every=cfg.train.grad_norm_every) if cfg.train.diagnostics else None
    trainer = nn.Trainer(
        network,
        setup.parts.optimizer,
        setup.parts.schedule,
        setup.parts.clipper,
        build.augmenter(setup.parts, dataset),
        cfg.train.batch_size,
        setup.rng,
        cfg.train.grad_norm_every,
        watch,
    )
    evaluation = FinalEvaluation(dataset)
    tracker = None
    if cfg.tracking.enabled:
        overrides, hydra_dir, swept = hydra_context()
        tracker = MlflowRun(cfg, dataset, evaluation, overrides, hydra_dir, resume and resume.run_id, swept)
    sizes = f"{len(dataset.train.y)} train / {len(dataset.val.y)} val examples"
    summary = f"{network_summary(network)} on {dataset.name}: {sizes}"
    loop = nn.Loop(
        trainer,
        dataset.train.X,
        dataset.train.y,
        dataset.val.X,
        dataset.val.y,
        cfg.train.epochs,
        [
            *([Diagnostics(watch, dataset.val.X[:DIAGNOSTICS_SAMPLE])] if watch is not None else []),
            *([tracker] if tracker is not None else []),
            evaluation,
            LogProgress(summary, cfg.train.progress),
            DivergenceCheck(dataset.num_classes, cfg.train.divergence, tracker and tracker.warn),
            *setup.parts.callbacks,
            *callbacks,
        ],
    )
    if resume is not None:
        restore(resume.state_file, loop)
    try:
        loop.run()
    except KeyboardInterrupt as err:
        if tracker is not None and T.TRIAL not in cfg.tracking.tags:  # a sweep's trial: the sweep's command resumes
            err.run_id = tracker.run_id  # the command's last line says how to continue it
        if tracker is None or tracker.state == T.KILLED:
            log.warning("%s at epoch %d; run closed as KILLED with the last weights", interruption(err), loop.epoch)
        raise
    except Exception as err:
        state, reason = outcome(err, loop)
        run_id = tracker.run_id if tracker is not None else None
        if state == T.CRASHED:
            raise RunFailed(run_id, reason, tracker.unclosed if tracker is not None else None) from err
        if state == T.DIVERGED:
            log.error("run failed at epoch %d: %s", loop.epoch, reason)
        else:
            log.info("pruned at epoch %d: %s", loop.epoch, reason)
        return TrainResult(run_id, state, reason, loop.history, {}, float("nan"))
    if tracker is not None and tracker.unclosed:  # trained to the end, but the store did not take the run's end
        reason = f"it trained to the end, but the store did not record that ({tracker.unclosed})"
        raise RunFailed(tracker.run_id, reason, tracker.unclosed)
    run_id = None
    if tracker is not None:
        run_id = tracker.run_id
        log.info("logged as MLflow run %s: %s", run_id, tracker.page())
    value = objective(cfg.train.objective, loop.history[-1], loop.final)
    return TrainResult(run_id, T.FINISHED, None, loop.history, loop.final, value)


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
