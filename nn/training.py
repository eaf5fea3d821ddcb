"""The training loop: ``Loop`` runs epochs of ``Trainer.train_epoch`` with callbacks; ``fit`` builds both.

``Loop`` is the one loop of the project: ``fit`` (and ``Network.fit``) run it from a notebook, the harness's
``train(cfg)`` runs it with its tracking, checkpoint, divergence and pruning callbacks. Each epoch's row uses
the harness's metric names: ``epoch``, ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc`` (with a
validation set), ``lr``, ``grad_norm``, ``epoch_time``.

One update, in this order: forward and loss, backward, gradient clipping, optimizer step (which adds
L2 to the gradient, as ``torch.optim`` does) with the learning rate the schedule gives for this step.
Clipping and the step make one pass: the clipper plans the clip, the optimizer applies it as it updates.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nn.callbacks import Callback, PrintProgress, StopTraining
from nn.clipping import NoClip
from nn.losses import SoftmaxCrossEntropy
from nn.network import Network
from nn.optimizers import SGD, Optimizer
from nn.schedules import Schedule

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """The training loss stopped being finite; ``explanation`` says what the gradients did before (a
    ``Watch`` names the layer whose gradient norm exploded first), or is empty without one."""

    def __init__(self, epoch: int, step: int, loss: float, explanation: str = "") -> None:
        because = f" ({explanation})" if explanation else ""
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch}, step {step}{because}. "
            "Lower the learning rate, add gradient clipping, or check the input scaling."
        )
        self.epoch, self.step, self.loss, self.explanation = epoch, step, loss, explanation


@dataclass
class EpochResult:
    epoch: int
    loss: float  # mean training loss over the epoch's batches
    accuracy: float  # training accuracy of the batches as they were trained on (dropout, augmentation on)
    lr: float  # learning rate of the epoch's last step
    grad_norm: float  # mean global gradient norm before clipping, sampled every ``grad_norm_every`` steps
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Trains ``network`` one epoch at a time.

    Parameters
    ----------
    batch_size : int or None; None or 0 means full-batch gradient descent.
    rng : shuffles the data and draws augmentations (dropout has the generator given to its layer).
    grad_norm_every : measure the gradient norm every this many steps (it costs one pass over the grads).
    watch : a ``nn.diagnostics.Watch`` of the network: per-layer gradient norms and update ratios at its
        sampled steps (which then also give the global norm); None to keep none.
    """

    def __init__(
        self,
        network: Network,
        optimizer: Optimizer,
        schedule: Schedule | None = None,
        clipper=None,
        augmenter=None,
        batch_size: int | None = 128,
        rng: np.random.Generator | None = None,
        grad_norm_every: int = 10,
        watch=None,
    ) -> None:
        self.network, self.optimizer = network, optimizer
        self.schedule = schedule if schedule is not None else Schedule()
        self.clipper = clipper if clipper is not None else NoClip()
        self.augmenter = augmenter
        self.batch_size = batch_size
        self.rng = rng if rng is not None else np.random.default_rng()
        self.grad_norm_every = grad_norm_every
        self.watch = watch
        self.loss = SoftmaxCrossEntropy()

    def train_epoch(
        self, X: np.ndarray, y: np.ndarray, epoch: int, on_batch: Callable[[int, int, float], None] | None = None
    ) -> EpochResult:
        """One pass over X (N, D), y (N,) in a fresh random order; raises ``Diverged`` on a non-finite loss.

        ``on_batch(step, num_batches, loss)`` is called after every update (for progress bars).
        """
        start = time.perf_counter()
        net, optimizer, loss_fn = self.network, self.optimizer, self.loss
        params, grads = net.params, net.grads
        n = len(X)
        batch = self.batch_size or n
        num_batches = math.ceil(n / batch)
        order = self.rng.permutation(n)
        loss_sum, correct, norms = 0.0, 0, []
        lr = optimizer.lr
        watch = self.watch
        if watch is not None:
            watch.begin_epoch()
        for step in range(num_batches):
            idx = order[step * batch : (step + 1) * batch]
            xb, yb = X[idx], y[idx]
            if self.augmenter is not None:
                xb = self.augmenter(xb, self.rng)
            lr = self.schedule.lr_at(optimizer.lr, epoch + step / num_batches)
            logits = net.forward(xb, training=True)
            loss = loss_fn.forward(logits, yb)
            if not math.isfinite(loss):
                if watch is not None and step > 0:  # the gradients of the last update are still in place
                    watch.gradients(epoch, step - 1, force=True)
                raise Diverged(epoch, step, loss, watch.explain() if watch is not None else "")
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
            loss_sum += loss * len(idx)
            net.backward(loss_fn.backward())
            measure = watch is None and step % self.grad_norm_every == 0
            if watch is not None:  # per layer at the watch's sampled steps; the global norm follows from them
                layered = watch.gradients(epoch, step)
                if layered is not None:
                    norms.append(layered)
            norm, clip = self.clipper.plan(grads, measure=measure)
            if norm is not None and measure:
                norms.append(norm)
            if watch is not None:
                watch.before_update(step)
            optimizer.step(params, grads, lr, clip)
            if watch is not None:
                watch.after_update(step)
            if on_batch is not None:
                on_batch(step, num_batches, loss)
        return EpochResult(
            epoch=epoch,
            loss=loss_sum / n,
            accuracy=correct / n,
            lr=lr,
            grad_norm=float(np.mean(norms)) if norms else float("nan"),
            seconds=time.perf_counter() - start,
        )

    def end_epoch(self, val_loss: float) -> None:
        """Tell the schedule how the epoch went (plateau schedules act on it)."""
        self.schedule.observe(val_loss)

    def state_dict(self) -> dict:
        """Optimizer, schedule and random-generator state: what a resumed run needs besides the weights."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.rng.bit_generator.state = state["rng"]


class Loop:
    """Epochs ``len(history) + 1 .. epochs`` of ``trainer`` on X (N, D), y (N,), each followed by the validation
    of X_val, y_val when given, with ``callbacks`` (``nn.callbacks``) at every step; ``run()`` returns the history.

    What callbacks read: ``network``, ``trainer``, ``epochs``, ``epoch`` (the current one, from 1), ``history``
    (one row per epoch, a resumed run's earlier epochs first), ``val_probs`` (N_val, C) of the latest
    validation, ``stopped`` (why a callback ended training, else None), ``callbacks``, and ``final``: the
    end-of-run metrics that callbacks add (the harness's best validation and test metrics). ``unseen``: the
    callbacks that have not seen the last epoch of ``history`` (a resumed run's state was saved before they
    saw it); ``run`` shows it to them after ``on_train_start``.
    """

    def __init__(
        self,
        trainer: Trainer,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        epochs: int = 10,
        callbacks: Sequence[Callback] = (),
        history: list[dict] | None = None,
    ) -> None:
        self.trainer, self.network = trainer, trainer.network
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val
        self.epochs, self.callbacks = epochs, list(callbacks)
        self.history: list[dict] = history if history is not None else []
        self.epoch = len(self.history)
        self.val_probs: np.ndarray | None = None
        self.stopped: str | None = None
        self.final: dict[str, float] = {}
        self.unseen: list[Callback] = []  # callbacks a restored state was saved before: shown its last epoch

    def run(self) -> list[dict]:
        """Train to ``epochs`` or until a callback stops it; any exception goes to every callback's
        ``on_exception`` (last callback first; one that raises there is logged and skipped) and is re-raised."""
        callbacks = self.callbacks
        per_batch = [c for c in callbacks if type(c).on_batch_end is not Callback.on_batch_end]
        try:
            for callback in callbacks:
                callback.on_train_start(self)
            if self.unseen and self.history:
                self.end_epoch(self.history[-1], self.unseen)
            last = self.epochs if self.stopped is None else len(self.history)
            for epoch in range(len(self.history) + 1, last + 1):
                self.epoch = epoch
                with np.errstate(over="ignore", invalid="ignore"):  # a diverging run ends in Diverged, which says so
                    row = self.train_epoch(per_batch)
                self.history.append(row)
                if self.end_epoch(row, callbacks):
                    break
            for callback in reversed(callbacks):
                callback.on_train_end(self)
        except BaseException as error:
            for callback in reversed(callbacks):
                try:
                    callback.on_exception(self, error)
                except Exception:  # the others still close what they opened; the first error is the one raised
                    log.exception("%s.on_exception failed while handling %r", type(callback).__name__, error)
            raise
        return self.history

    def end_epoch(self, row: dict, callbacks: Sequence[Callback]) -> bool:
        """Show ``callbacks`` the epoch's row (its finite metrics); True when one of them stopped training (the
        reason is in ``stopped``)."""
        metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
        try:
            for callback in callbacks:
                callback.on_epoch_end(self, metrics)
        except StopTraining as stop:
            self.stopped = str(stop)
            return True
        return False

    def train_epoch(self, per_batch: Sequence[Callback]) -> dict:
        """Epoch ``self.epoch``'s training pass and validation: its row of metrics."""
        trainer, network = self.trainer, self.network
        on_batch = None
        if per_batch:

            def on_batch(step: int, num_batches: int, loss: float) -> None:
                for callback in per_batch:
                    callback.on_batch_end(self, step, num_batches, loss)

        result = trainer.train_epoch(self.X, self.y, self.epoch - 1, on_batch=on_batch)
        row = {"epoch": self.epoch, "train/loss": result.loss, "train/acc": result.accuracy}
        if self.X_val is not None:
            val_loss, val_acc, self.val_probs = network.evaluate(self.X_val, self.y_val, probabilities=True)
            trainer.end_epoch(val_loss)
            row |= {"val/loss": val_loss, "val/acc": val_acc}
        return row | {"lr": result.lr, "grad_norm": result.grad_norm, "epoch_time": result.seconds}


def fit(
    network: Network,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    epochs: int = 10,
    batch_size: int | None = 128,
    optimizer: Optimizer | None = None,
    schedule: Schedule | None = None,
    clipper=None,
    augmenter=None,
    rng: np.random.Generator | None = None,
    verbose: bool = True,
    callbacks: Sequence[Callback] = (),
) -> list[dict]:
    """Train ``network`` in place with ``Loop``; returns one row of metrics per epoch (see the module docstring).

    Defaults: SGD with momentum 0.9 and lr 0.01, constant rate, no clipping, no augmentation.
    ``verbose`` prints a line per epoch (``nn.callbacks.PrintProgress``). A callback raising
    ``StopTraining`` ends training after that epoch, e.g. ``EarlyStopping()`` (it monitors ``val/loss``).
    """
    X = np.asarray(X, dtype=network.dtype)
    trainer = Trainer(
        network,
        optimizer if optimizer is not None else SGD(lr=0.01, momentum=0.9),
        schedule,
        clipper,
        augmenter,
        batch_size,
        rng,
    )
    callbacks = [PrintProgress(), *callbacks] if verbose else list(callbacks)
    return Loop(trainer, X, y, X_val, y_val, epochs, callbacks).run()
