import logging
import math
import warnings

import numpy as np
import pytest

from experiments import figures


def test_confusion_matrix_counts_true_rows_predicted_columns():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0, 2])
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    counts = figures.confusion_matrix(y_true, y_pred, num_classes=3)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="outside"):
        figures.confusion_matrix(np.array([0, 3]), np.array([0, 1]), num_classes=3)


def test_per_class_accuracy_is_nan_for_a_class_without_examples():
    counts = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    accuracy = figures.per_class_accuracy(counts)
    assert list(accuracy) == ["0", "1", "2"]
    assert accuracy["0"] == pytest.approx(0.75)
    assert math.isnan(accuracy["1"])
    assert accuracy["2"] == pytest.approx(0.5)


def assert_rgb_image(image: np.ndarray) -> None:
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.min() < 128 < image.max()  # something is drawn on the white background


def test_confusion_figure_renders():
    rng = np.random.default_rng(0)
    counts = figures.confusion_matrix(rng.integers(0, 10, 300), rng.integers(0, 10, 300), 10)
    assert_rgb_image(figures.figure_to_array(figures.confusion_figure(counts, title="test")))


def test_confusion_figure_colours_the_errors_on_their_own_scale():
    """Hundreds right, a few wrong: the colour scale spans the errors (1 to the largest), not the diagonal's
    counts, so that a single mistake is not left white."""
    counts = np.array([[500, 3, 0], [1, 480, 7], [0, 0, 510]])
    fig = figures.confusion_figure(counts)
    errors = fig.axes[0].get_images()[-1]
    assert errors.get_clim() == (0, 7)
    shown = errors.get_array()
    assert shown.mask[np.diag_indices(3)].all() and shown[1, 2] == 7 and shown[0, 1] == 3
    assert figures.per_class_table(counts)["recall"].tolist() == [0.9940, 0.9836, 1.0]  # rounded to 4 decimals


def test_curves_figure_renders_with_missing_keys():
    history = [
        {"epoch": 1, "train/loss": 1.0, "train/acc": 0.6},
        {"epoch": 2, "train/loss": 0.5, "val/loss": 0.7, "train/acc": 0.8, "val/acc": 0.75},
    ]
    assert_rgb_image(figures.figure_to_array(figures.curves_figure(history)))
    assert_rgb_image(figures.figure_to_array(figures.curves_figure([])))


def test_misclassified_figure_with_many_mistakes_shows_at_most_max_items():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=80)
    y_pred = probs.argmax(axis=1)
    y_true = (y_pred + 1) % 10
    fig = figures.misclassified_figure(rng.random((80, 64)), y_true, y_pred, probs, image_shape=(8, 8), max_items=12)
    titles = [text.get_text() for text in fig.axes[0].texts]  # one label over each tile
    assert len(titles) == 12
    i = np.argmax(probs.max(axis=1))  # the most confident mistake comes first
    assert titles[0] == f"pred {y_pred[i]} ({probs[i].max():.2f}) / true {y_true[i]}"
    assert_rgb_image(figures.figure_to_array(fig))


def test_misclassified_figure_without_mistakes_says_so():
    probs = np.eye(3)[[0, 1, 2]]
    labels = np.array([0, 1, 2])
    fig = figures.misclassified_figure(np.zeros((3, 4)), labels, labels, probs, image_shape=(2, 2))
    assert "no misclassified" in fig.axes[0].texts[0].get_text()
    assert_rgb_image(figures.figure_to_array(fig))


def test_the_run_figures_render_without_layout_or_axis_warnings(caplog):
    """Each figure the tracker logs, at its smallest and largest, draws without a matplotlib warning (layout not
    applied, identical limits) and without category units (number-like strings plotted as categories)."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=100)
    y_pred = probs.argmax(axis=1)
    one_epoch = [{"epoch": 1, "train/loss": 1.0, "val/loss": 1.0, "train/acc": 0.5, "val/acc": 0.5}]
    caplog.set_level(logging.INFO, logger="matplotlib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fig in [
            figures.confusion_figure(np.zeros((1, 1), np.int64)),
            figures.confusion_figure(figures.confusion_matrix(y_pred, (y_pred + 1) % 10, 10), "validation, epoch 3"),
            figures.curves_figure(one_epoch),
            figures.curves_figure([{"epoch": e, "train/loss": 1 / e} for e in range(1, 301)]),
            figures.misclassified_figure(rng.random((100, 64)), (y_pred + 1) % 10, y_pred, probs, (8, 8), max_items=1),
            figures.misclassified_figure(rng.random((100, 784)), (y_pred + 1) % 10, y_pred, probs, max_items=100),
        ]:
            figures.figure_to_array(fig)
    assert not [r for r in caplog.records if r.name.startswith("matplotlib")]
