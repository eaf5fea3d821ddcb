import json

import numpy as np
import pytest

from nn.augment import Augmenter, bilinear_sample, gaussian_blur_matrix, warp_affine

NO_AFFINE = {"shift": 0.0, "rotation": 0.0, "scale": 0.0, "shear": 0.0}


def digit_like(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    """Rings of random radius and thickness around the centre, shape (n, size * size), values in [0, 1]."""
    rng = np.random.default_rng(seed)
    centre = (size - 1) / 2
    rows, cols = np.indices((size, size)) - centre
    radius = np.hypot(rows, cols)
    ring_radius = rng.uniform(5, 8, size=(n, 1, 1))
    thickness = rng.uniform(1.0, 2.0, size=(n, 1, 1))
    images = np.clip(1.5 - np.abs(radius - ring_radius) / thickness, 0.0, 1.0)
    return images.reshape(n, size * size)


def centre_of_mass(x: np.ndarray, size: int = 28) -> np.ndarray:
    """Centre of mass (row, col) of each flat image, shape (n, 2)."""
    images = x.reshape(len(x), size, size)
    rows, cols = np.indices((size, size))
    mass = images.sum(axis=(1, 2))
    return np.stack([(images * rows).sum(axis=(1, 2)), (images * cols).sum(axis=(1, 2))], axis=1) / mass[:, None]


def test_identity_settings_return_an_equal_copy():
    x = digit_like(8)
    out = Augmenter(**NO_AFFINE)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_and_dtype_kept_and_input_untouched(dtype):
    x = digit_like(40).astype(dtype)
    before = x.copy()
    out = Augmenter(shear=5.0, elastic_alpha=1.5)(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_array_equal(x, before)


def test_same_seed_is_identical_and_other_seed_differs():
    x = digit_like(16)
    augment = Augmenter(shear=5.0, elastic_alpha=1.5, probability=0.7)
    first = augment(x, np.random.default_rng(3))
    np.testing.assert_array_equal(first, augment(x, np.random.default_rng(3)))
    assert not np.array_equal(first, augment(x, np.random.default_rng(4)))


def test_shift_moves_centre_of_mass_by_at_most_shift():
    x = np.zeros((200, 28 * 28))
    x.reshape(200, 28, 28)[:, 11:17, 12:16] = 1.0  # far enough from the border to stay inside
    out = Augmenter(shift=3.0, rotation=0.0, scale=0.0)(x, np.random.default_rng(0))
    moved = centre_of_mass(out) - centre_of_mass(x)
    assert np.abs(moved).max() <= 3.0 + 1e-9
    assert np.abs(moved).max() > 2.5  # the whole range is used
    np.testing.assert_allclose(out.sum(axis=1), x.sum(axis=1), rtol=1e-5)


def test_integer_shift_is_exact():
    images = np.random.default_rng(0).random((2, 6, 7))
    shifted = warp_affine(images, np.stack([np.eye(2)] * 2), np.array([[2.0, -1.0], [-3.0, 0.0]]))
    expected = np.zeros_like(images)
    expected[0, 2:, :-1] = images[0, :-2, 1:]
    expected[1, :-3, :] = images[1, 3:, :]
    np.testing.assert_array_equal(shifted, expected)


def test_bilinear_sample_translates_by_one_pixel_and_interpolates():
    images = np.random.default_rng(0).random((3, 5, 6)).astype(np.float32)
    rows, cols = np.indices((5, 6)).astype(np.float64)[:, None].repeat(3, axis=1)
    moved = bilinear_sample(images, rows, cols - 1.0)
    np.testing.assert_array_equal(moved[:, :, 1:], images[:, :, :-1])
    np.testing.assert_array_equal(moved[:, :, 0], 0.0)
    halfway = bilinear_sample(images, rows + 0.5, cols)
    np.testing.assert_allclose(halfway[:, :-1], (images[:, :-1] + images[:, 1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(halfway[:, -1], images[:, -1] / 2, rtol=1e-6)


@pytest.mark.parametrize("size", [5, 6])
def test_quarter_turn_matrix_equals_rot90(size):
    images = np.arange(2 * size * size, dtype=np.float64).reshape(2, size, size) ** 1.5
    quarter_turn = np.array([[0.0, 1.0], [-1.0, 0.0]])
    turned = warp_affine(images, np.stack([quarter_turn] * 2))
    np.testing.assert_array_equal(turned, np.rot90(images, axes=(1, 2)))


def test_zoom_scales_spread_within_range():
    rows, cols = np.indices((28, 28)) - 13.5
    blob = np.exp(-(rows**2 + cols**2) / (2 * 3.0**2)).ravel()
    x = np.tile(blob, (100, 1))
    out = Augmenter(shift=0.0, rotation=0.0, scale=0.2)(x, np.random.default_rng(0))

    def spread(images):
        return np.sqrt((images * (rows**2 + cols**2).ravel()).sum(axis=1) / images.sum(axis=1))

    ratio = spread(out) / spread(x)
    assert ratio.min() > 0.8 - 0.03 and ratio.max() < 1.2 + 0.03
    assert ratio.min() < 0.9 and ratio.max() > 1.1


def test_elastic_changes_images_keeps_mass_and_range():
    x = digit_like(64)
    # alpha 1.4 pixels at sigma 4 matches Simard et al.'s (34, 4).
    augment = Augmenter(**NO_AFFINE, elastic_alpha=1.4, elastic_sigma=4.0)
    out = augment(x, np.random.default_rng(0))
    assert np.all(np.abs(out - x).max(axis=1) > 0.1)
    # Local stretching changes single thin strokes a lot; the batch total barely.
    assert abs(out.sum() / x.sum() - 1) < 0.1
    mass_ratio = out.sum(axis=1) / x.sum(axis=1)
    assert np.all((mass_ratio > 0.6) & (mass_ratio < 1.6))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_elastic_alpha_is_rms_displacement_in_pixels():
    # Bilinear sampling of a linear ramp is exact, so the output reveals the column displacement.
    cols = np.tile(np.arange(28.0), (28, 1))
    x = np.tile(((cols + 2) / 32).ravel(), (200, 1))
    out = Augmenter(**NO_AFFINE, elastic_alpha=2.0, elastic_sigma=3.0)(x, np.random.default_rng(0))
    displacement = (out - x).reshape(200, 28, 28)[:, 8:20, 8:20] * 32  # centre, far from the zero border
    assert 1.8 < np.sqrt(np.mean(displacement**2)) < 2.2


def test_gaussian_blur_matrix_keeps_constants():
    blur = gaussian_blur_matrix(28, 4.0)
    np.testing.assert_allclose(blur.sum(axis=1), 1.0)
    np.testing.assert_allclose(blur @ np.full(28, 0.3), 0.3)


def test_probability_zero_returns_input():
    x = digit_like(8)
    np.testing.assert_array_equal(Augmenter(elastic_alpha=2.0, probability=0.0)(x, np.random.default_rng(0)), x)


def test_probability_half_augments_about_half():
    x = digit_like(400)
    out = Augmenter(probability=0.5)(x, np.random.default_rng(0))
    changed = np.any(out != x, axis=1).mean()
    assert 0.4 < changed < 0.6


@pytest.mark.parametrize("probability", [0.2, 0.9])
def test_probability_is_the_share_of_images_augmented(probability):
    """p, not 1 - p: an asymmetric p tells them apart (at p = 0.5 both give half)."""
    n = 3000
    x = digit_like(n)
    out = Augmenter(probability=probability)(x, np.random.default_rng(0))
    changed = np.any(out != x, axis=1)
    tolerance = 5 * np.sqrt(probability * (1 - probability) / n)  # 5 binomial standard deviations: 0.037, 0.027
    assert abs(changed.mean() - probability) < tolerance, (changed.mean(), probability)
    np.testing.assert_array_equal(out[~changed], x[~changed])  # the others are returned exactly


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_shape": (0, 28)}, "image_shape"),
        ({"image_shape": (28,)}, "image_shape"),
        ({"image_shape": (28.5, 28)}, "image_shape"),
        ({"shift": -1.0}, "shift"),
        ({"shift": float("nan")}, "shift"),
        ({"rotation": -1.0}, "rotation"),
        ({"rotation": 181.0}, "rotation"),
        ({"scale": -0.1}, "scale"),
        ({"scale": 1.0}, "scale"),
        ({"shear": -1.0}, "shear"),
        ({"shear": 90.0}, "shear"),
        ({"elastic_alpha": -1.0}, "elastic_alpha"),
        ({"elastic_sigma": -1.0}, "elastic_sigma"),
        ({"elastic_alpha": 1.0, "elastic_sigma": 0.0}, "elastic_sigma"),
        ({"probability": -0.1}, "probability"),
        ({"probability": 1.5}, "probability"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Augmenter(**kwargs)


def test_invalid_batches_raise():
    augment = Augmenter()
    with pytest.raises(ValueError, match="shape"):
        augment(np.zeros((2, 27 * 28)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="floating"):
        augment(np.zeros((2, 28 * 28), dtype=np.uint8), np.random.default_rng(0))


def test_config_round_trip():
    augment = Augmenter(image_shape=(20, 24), shift=1.5, shear=3.0, elastic_alpha=1.0, probability=0.8)
    config = json.loads(json.dumps(augment.config()))
    rebuilt = Augmenter(**config)
    assert rebuilt.config() == augment.config()
    x = np.random.default_rng(0).random((5, 20 * 24))
    np.testing.assert_array_equal(rebuilt(x, np.random.default_rng(1)), augment(x, np.random.default_rng(1)))
