"""Figures and tables logged to MLflow: confusion matrix, per-class results, learning curves, misclassified examples.

Every figure is built with matplotlib's object-oriented API (``Figure``, never pyplot), so it can
be rendered from any thread; ``figure_to_array`` turns one into an RGB array for ``mlflow.log_image``.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CONFUSION_TRUE = "true / predicted"  # the first column of a confusion table
CURVE_PANELS = (("loss", ("train/loss", "val/loss")), ("accuracy", ("train/acc", "val/acc")))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Count (true, predicted) label pairs.

    Parameters
    ----------
    y_true, y_pred : (N,) integer labels in ``[0, num_classes)``.
    num_classes : K.

    Returns
    -------
    (K, K) int64 counts; rows are true labels, columns predicted labels.
    """
    y_true = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside [0, {num_classes}): {labels.min()}..{labels.max()}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(counts: np.ndarray) -> dict[str, float]:
    """Recall of each class from (K, K) confusion counts: ``{"0": acc, ...}``; nan for a class without examples."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(totals > 0, np.diag(counts) / totals, np.nan)
    return {str(k): float(a) for k, a in enumerate(accuracy)}


def per_class_table(counts: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class from (K, K) confusion counts (rows true, columns
    predicted): one row per class; nan where a class has no examples or no predictions."""
    counts = np.asarray(counts, dtype=np.float64)
    correct, true, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = correct / predicted, correct / true
        f1 = 2 * precision * recall / (precision + recall)
    return pd.DataFrame(
        {
            "class": np.arange(len(counts)),
            "precision": precision.round(TABLE_DIGITS),
            "recall": recall.round(TABLE_DIGITS),
            "f1": f1.round(TABLE_DIGITS),
            "support": true.astype(np.int64),
        }
    )


TABLE_DIGITS = 4  # decimals of the per-class table's ratios


def confusion_table(counts: np.ndarray) -> pd.DataFrame:
    """(K, K) confusion counts as a table: the true class in column ``true / predicted``, then one column per
    predicted class, ``0`` .. ``K-1``."""
    counts = np.asarray(counts)
    table = pd.DataFrame(counts, columns=[str(k) for k in range(counts.shape[1])])
    table.insert(0, CONFUSION_TRUE, np.arange(counts.shape[0]))
    return table


def confusion_figure(counts: np.ndarray, title: str = "") -> Figure:
    """Heatmap of (K, K) confusion counts with the count in each cell and each class's accuracy on its row label.

    The errors (off the diagonal) are coloured on their own scale, from 1 to the largest error, so that a few
    mistakes show beside hundreds of correct answers; the diagonal is grey, its counts written in bold."""
    counts = np.asarray(counts)
    num_classes = counts.shape[0]
    side = max(4.0, 0.5 * num_classes + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    diagonal = np.eye(num_classes, dtype=bool)
    errors = np.ma.masked_where(diagonal | (counts == 0), counts)
    ax.imshow(np.where(diagonal, 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)  # the diagonal in light grey
    largest = max(int(errors.max()) if errors.count() else 1, 1)
    image = ax.imshow(errors, cmap="OrRd", vmin=0, vmax=largest)
    fig.colorbar(image, ax=ax, shrink=0.8, label="errors (count)")
    for (row, col), count in np.ndenumerate(counts):
        if count:
            color = "white" if not diagonal[row, col] and count > largest / 2 else "black"
            weight = "bold" if diagonal[row, col] else "normal"
            ax.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8, fontweight=weight)
    accuracy = per_class_accuracy(counts)
    ax.set_xticks(range(num_classes), [str(k) for k in range(num_classes)])
    ax.set_yticks(range(num_classes), [_row_label(k, accuracy[str(k)]) for k in range(num_classes)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (class accuracy)")
    total = counts.sum()
    overall = np.trace(counts) / total if total else float("nan")
    ax.set_title(f"{title} (accuracy {overall:.2%})" if title else f"accuracy {overall:.2%}")
    return fig


def _row_label(label: int, accuracy: float) -> str:
    return f"{label} (—)" if math.isnan(accuracy) else f"{label} ({accuracy:.0%})"


def curves_figure(history: list[dict]) -> Figure:
    """Loss and accuracy per epoch, train and validation, in two side-by-side panels.

    Parameters
    ----------
    history : one dict per epoch with any of the keys ``epoch``, ``train/loss``, ``val/loss``,
        ``train/acc``, ``val/acc``; missing keys or None values leave gaps. Without ``epoch``
        the row index (from 1) is used.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, (ylabel, keys) in zip(fig.subplots(1, 2), CURVE_PANELS, strict=True):
        plotted = False
        for key in keys:
            points = [(e, row[key]) for e, row in zip(epochs, history, strict=True) if row.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=key)
                plotted = True
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {ylabel} recorded", ha="center", va="center", transform=ax.transAxes)
    return fig


def misclassified_figure(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    image_shape: tuple[int, int] = (28, 28),
    max_items: int = 36,
) -> Figure:
    """Grid of wrongly predicted images, most confident mistakes first, titled ``"pred 3 (0.91) / true 5"``.

    Parameters
    ----------
    images : (N, H*W) pixels in [0, 1].
    y_true, y_pred : (N,) labels.
    probs : (N, K) predicted class probabilities.
    image_shape : (H, W) to reshape each row into.
    max_items : at most this many images are drawn.
    """
    y_true, y_pred, probs = np.asarray(y_true), np.asarray(y_pred), np.asarray(probs)
    wrong = np.flatnonzero(y_true != y_pred)
    if wrong.size == 0:
        fig = Figure(figsize=(4, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no misclassified examples\n(out of {len(y_true)})", ha="center", va="center")
        return fig
    confidence = probs[wrong, y_pred[wrong]]
    shown = wrong[np.argsort(-confidence, kind="stable")][:max_items]
    cols = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / cols)
    # one image of tiles, each under its label: one axes draws in a tenth of the time of rows x cols axes
    height, width = image_shape
    band, gap = math.ceil(0.35 * height), max(1, width // 8)  # pixels: the label's band above a tile, between tiles
    cell_h, cell_w = band + height, gap + width
    mosaic = np.full((rows * cell_h, cols * cell_w - gap), np.nan)  # NaN: blank (the colormap's "bad" colour)
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows + 0.4), layout="constrained")
    fig.suptitle(f"{wrong.size} of {len(y_true)} misclassified (showing the {len(shown)} most confident)")
    ax = fig.add_subplot()
    ax.axis("off")
    for k, i in enumerate(shown):
        top, left = (k // cols) * cell_h, (k % cols) * cell_w
        mosaic[top + band : top + cell_h, left : left + width] = np.asarray(images[i]).reshape(image_shape)
        label = f"pred {y_pred[i]} ({probs[i, y_pred[i]]:.2f}) / true {y_true[i]}"
        ax.text(left + width / 2, top + band - 1, label, ha="center", va="bottom", fontsize=8)
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` with the Agg canvas into an (H, W, 3) uint8 RGB array (for ``mlflow.log_image``)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
