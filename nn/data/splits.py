"""Stratified splitting of labelled examples."""

from __future__ import annotations

import numpy as np

from .idx import DataError

__all__ = ["stratified_split", "stratified_subset"]


def _held_out_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """Share `total` among classes proportionally, each within 1 of its exact share.

    Largest-remainder apportionment: floor every exact share, then give the
    leftover units to the classes with the largest fractional parts (ties go
    to the lower class index).
    """
    exact = class_sizes * (total / class_sizes.sum())
    counts = np.floor(exact).astype(np.int64)
    leftover = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into kept and held-out parts, stratified by label.

    Parameters
    ----------
    y : numpy.ndarray
        Integer labels, shape (N,).
    fraction : float
        Share of examples to hold out, in (0, 1). Exactly ``round(fraction * N)``
        examples are held out, and each class contributes within one example of
        ``fraction`` times its size.
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same split.

    Returns
    -------
    keep : numpy.ndarray
        int64 indices into `y`, shape (N - M,), sorted ascending.
    held_out : numpy.ndarray
        int64 indices into `y`, shape (M,), sorted ascending, disjoint from `keep`.

    Raises
    ------
    DataError
        If `y` is not 1-D, `fraction` is outside (0, 1), or either part would be
        empty.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"stratified_split needs 1-D labels, got shape {y.shape}.")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"stratified_split needs a fraction strictly between 0 and 1, got {fraction!r}.")
    total = round(fraction * len(y))
    if not 0 < total < len(y):
        raise DataError(
            f"Cannot hold out a fraction {fraction} of {len(y)} examples: one side "
            "of the split would be empty. Use more examples or another fraction."
        )
    classes, inverse = np.unique(y, return_inverse=True)
    by_class = np.argsort(inverse, kind="stable")
    class_sizes = np.bincount(inverse, minlength=len(classes))
    counts = _held_out_counts(class_sizes, total)
    held_out = []
    for members, count in zip(np.split(by_class, np.cumsum(class_sizes)[:-1]), counts, strict=True):
        held_out.append(rng.permutation(members)[:count])
    is_held_out = np.zeros(len(y), dtype=bool)
    is_held_out[np.concatenate(held_out)] = True
    return np.flatnonzero(~is_held_out), np.flatnonzero(is_held_out)


def stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick `n` example indices, stratified by label.

    Parameters
    ----------
    y : numpy.ndarray
        Integer labels, shape (N,).
    n : int
        Number of examples to keep; if ``n >= N`` all indices are returned.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        int64 indices into `y`, shape (min(n, N),), sorted ascending.
    """
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    return stratified_split(y, n / len(y), rng)[1]
