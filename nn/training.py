"""The training loop: ``Trainer.train_epoch`` for harnesses that drive epochs themselves, ``fit`` for notebooks.

One update, in this order: forward and loss, backward, gradient clipping, optimizer step (which adds
L2 to the gradient, as ``torch.optim`` does) with the learning rate the schedule gives for this step.
Clipping and the step make one pass: the clipper plans the clip, the optimizer applies it as it updates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nn.callbacks import Callback, StopTraining
from nn.clipping import NoClip
from nn.losses import SoftmaxCrossEntropy
from nn.network import Network
from nn.optimizers import SGD, Optimizer
from nn.schedules import Schedule


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
    """Train ``network`` in place; returns one dict per epoch (training stats plus ``val_loss``/``val_acc``).

    Defaults: SGD with momentum 0.9 and lr 0.01, constant rate, no clipping, no augmentation.
    Each callback (``nn.callbacks``) sees the network at the start and end and each epoch's row
    (``epoch`` from 1); one raising ``StopTraining`` ends training after that epoch, e.g.
    ``EarlyStopping(monitor="val_loss")``.
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
    history = []
    for callback in callbacks:
        callback.on_train_start(network)
    for epoch in range(epochs):
        row = trainer.train_epoch(X, y, epoch).as_dict()
        if X_val is not None:
            row["val_loss"], row["val_acc"] = network.evaluate(X_val, y_val)
            trainer.end_epoch(row["val_loss"])
        history.append(row)
        if verbose:
            val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}" if X_val is not None else ""
            print(
                f"epoch {epoch + 1}/{epochs}  loss {row['loss']:.4f} acc {row['accuracy']:.4f}{val}"
                f"  lr {row['lr']:.3g}  {row['seconds']:.1f}s",
                flush=True,
            )
        try:
            for callback in callbacks:
                callback.on_epoch_end(epoch + 1, row)
        except StopTraining as stop:
            if verbose:
                print(stop, flush=True)
            break
    for callback in callbacks:
        callback.on_train_end(network)
    return history
