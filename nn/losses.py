"""Losses. Both reduce by the **mean over the batch**; labels are integer class indices ``(B,)``."""

from __future__ import annotations

import numpy as np

from nn.activations import softmax


def _check_labels(y: np.ndarray, batch: int, classes: int) -> None:
    if y.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {y.shape}")
    if batch and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got range [{y.min()}, {y.max()}]")


class SoftmaxCrossEntropy:
    """Softmax fused with categorical cross-entropy, on logits.

    loss = mean_i( logsumexp(z_i) - z_i[y_i] ); gradient wrt logits = (softmax(z) - onehot(y)) / B.
    """

    def forward(self, logits: np.ndarray, y: np.ndarray) -> float:
        """logits: (B, K), y: (B,) -> scalar mean loss."""
        batch, classes = logits.shape
        _check_labels(y, batch, classes)
        shifted = logits - logits.max(axis=1, keepdims=True)
        self._picked = (np.arange(batch), y)
        log_likelihood = shifted[self._picked]
        exp = np.exp(shifted, out=shifted)
        sums = exp.sum(axis=1, keepdims=True)
        exp /= sums
        self._probs = exp
        log_likelihood -= np.log(sums[:, 0])
        return -float(log_likelihood.sum(dtype=np.float64) / batch)  # NaN for an empty batch

    def backward(self) -> np.ndarray:
        """-> (B, K) gradient of the mean loss wrt the logits."""
        grad = self._probs
        grad[self._picked] -= 1
        grad /= grad.shape[0]
        self._probs = None
        return grad

    @property
    def probs(self) -> np.ndarray:
        return self._probs


class CrossEntropy:
    """Categorical cross-entropy on probabilities (the unfused half of the pair softmax -> CE).

    loss = -mean_i log p_i[y_i]; gradient wrt p = -onehot(y) / (p * B). Kept to test the fused loss.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def forward(self, probs: np.ndarray, y: np.ndarray) -> float:
        """probs: (B, K) rows summing to 1, y: (B,) -> scalar mean loss."""
        batch, classes = probs.shape
        _check_labels(y, batch, classes)
        self._probs, self._y = probs, y
        picked = np.maximum(probs[np.arange(batch), y], self.eps)
        return float(-np.mean(np.log(picked), dtype=np.float64))

    def backward(self) -> np.ndarray:
        batch = self._probs.shape[0]
        grad = np.zeros_like(self._probs)
        rows = np.arange(batch)
        grad[rows, self._y] = -1.0 / (np.maximum(self._probs[rows, self._y], self.eps) * batch)
        return grad


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss and probabilities (B, K) of logits (B, K) against labels (B,), without gradients."""
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, y)
    return value, loss.probs if loss.probs is not None else softmax(logits)
