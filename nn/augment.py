"""Seeded, batch-vectorized data augmentation for flattened square images.

Every image gets its own inverse mapping: for each output pixel, the source
coordinate it is read from. Affine maps (shift, rotation, scale, shear about
the image centre) and an optional elastic displacement field (Simard et al.,
2003) are combined into one coordinate grid of shape (B, H, W), sampled once
with bilinear interpolation. Pixels read from outside the image are zero.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from nn.checks import check, in_range

# Images are warped in chunks of about this many pixels, so that temporaries
# stay in cache instead of being allocated (and page-faulted) per batch.
_CHUNK_PIXELS = 32 * 28 * 28


def bilinear_sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Read images at fractional coordinates with bilinear interpolation.

    Parameters
    ----------
    images : ndarray, shape (B, H, W)
        Source images.
    rows, cols : ndarray, shape (B, H_out, W_out)
        Source row and column coordinate of every output pixel, in pixels.
        Everything outside the image counts as zero.

    Returns
    -------
    ndarray, shape (B, H_out, W_out)
        Integer coordinates reproduce source pixels exactly. Each value is a
        convex combination of source pixels and zeros, so the range is kept.
    """
    n, h, w = images.shape
    # Zero border: one pixel before, two after, so that clipped coordinates in
    # [-1, H] x [-1, W] and their lower-right neighbours all land on it.
    padded = np.zeros((n, h + 3, w + 3), dtype=images.dtype)
    padded[:, 1 : h + 1, 1 : w + 1] = images
    stride = w + 3
    # In place from here on: on small chunks the allocations cost more than the arithmetic.
    coordinate_dtype = np.result_type(rows, cols, np.float32)
    row_frac = np.clip(rows, -1, h).astype(coordinate_dtype, copy=False)
    col_frac = np.clip(cols, -1, w).astype(coordinate_dtype, copy=False)
    top_left = np.floor(row_frac)
    left_col = np.floor(col_frac)
    row_frac -= top_left
    col_frac -= left_col
    top_left *= stride
    top_left += left_col
    top_left = top_left.astype(np.intp)
    top_left += (np.arange(n) * padded[0].size + stride + 1).reshape(n, 1, 1)

    flat = padded.ravel()
    # Offset views of the flat batch give the other three corners without new indices.
    top, top_right, bottom, bottom_right = (np.take(flat[offset:], top_left) for offset in (0, 1, stride, stride + 1))
    for left, right in ((top, top_right), (bottom, bottom_right)):
        right -= left
        right *= col_frac
        left += right
    bottom -= top
    bottom *= row_frac
    top += bottom
    return top


def affine_source_grid(
    image_shape: tuple[int, int],
    inverse_matrices: np.ndarray,
    shifts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates of an affine warp about the image centre.

    Output pixel ``p`` reads source ``c + M @ (p - c - t)``, where ``c`` is the
    image centre, ``M`` the inverse matrix and ``t`` the output-space shift.

    Parameters
    ----------
    image_shape : (H, W)
    inverse_matrices : ndarray, shape (B, 2, 2)
        Inverse maps in (row, col) coordinates.
    shifts : ndarray, shape (B, 2), optional
        Translation (rows, cols) in pixels applied to the output; zero if omitted.

    Returns
    -------
    rows, cols : ndarray, shape (B, H, W), float32
        Single precision (error ~1e-6 pixel) halves the cost of sampling.
    """
    h, w = image_shape
    centre_row, centre_col = (h - 1) / 2.0, (w - 1) / 2.0
    m = np.asarray(inverse_matrices, dtype=np.float64)[:, :, :, None, None]
    if shifts is None:
        shifts = np.zeros((m.shape[0], 2))
    shifts = np.asarray(shifts, dtype=np.float64)
    y = np.arange(h).reshape(1, h, 1) - centre_row - shifts[:, 0, None, None]
    x = np.arange(w).reshape(1, 1, w) - centre_col - shifts[:, 1, None, None]
    # Each term varies along one axis only; only the final sum is full size.
    rows = (m[:, 0, 0] * y + centre_row).astype(np.float32) + (m[:, 0, 1] * x).astype(np.float32)
    cols = (m[:, 1, 0] * y + centre_col).astype(np.float32) + (m[:, 1, 1] * x).astype(np.float32)
    return rows, cols


def warp_affine(images: np.ndarray, inverse_matrices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Apply per-image affine warps; see `affine_source_grid`.

    Parameters
    ----------
    images : ndarray, shape (B, H, W)
    inverse_matrices : ndarray, shape (B, 2, 2)
    shifts : ndarray, shape (B, 2), optional

    Returns
    -------
    ndarray, shape (B, H, W)
    """
    rows, cols = affine_source_grid(images.shape[1:], inverse_matrices, shifts)
    return bilinear_sample(images, rows, cols)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalized Gaussian weights, truncated at 4 sigma.

    Returns
    -------
    ndarray, shape (2 * radius + 1,)
    """
    radius = max(1, int(4.0 * sigma + 0.5))
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur_matrix(size: int, sigma: float) -> np.ndarray:
    """Matrix form of a 1-D Gaussian blur with reflecting boundaries.

    Parameters
    ----------
    size : int
        Signal length n.
    sigma : float
        Standard deviation in samples; the kernel is truncated at 4 sigma.

    Returns
    -------
    ndarray, shape (n, n)
        ``K @ v`` blurs ``v`` along its first axis; rows sum to 1.
    """
    weights = gaussian_kernel(sigma)
    radius = len(weights) // 2
    offsets = np.arange(-radius, radius + 1)
    # Mirror indices outside [0, n) back inside: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    period = 2 * size
    sources = (np.arange(size)[:, None] + offsets) % period
    sources = np.where(sources >= size, period - 1 - sources, sources)
    matrix = np.zeros((size, size))
    targets = np.repeat(np.arange(size), offsets.size)
    np.add.at(matrix, (targets, sources.ravel()), np.tile(weights, size))
    return matrix


def _check_range(name: str, value: float, low: float, high: float, high_open: bool = False) -> float:
    bracket = ")" if high_open else "]"
    allowed = f"a number >= {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}{bracket}"
    check(in_range(value, low, high, high_open=high_open), name, value, allowed)
    return float(value)


class Augmenter:
    """Random affine (shift, rotation, scale, shear) and elastic distortion of a batch of square images.

    Parameters
    ----------
    image_shape : (H, W)
        Shape of one image; rows of the input batch have length H * W.
    shift : float
        Maximum translation in pixels, uniform in [-shift, shift] per axis.
    rotation : float
        Maximum rotation in degrees, uniform in [-rotation, rotation].
    scale : float
        Zoom factor uniform in [1 - scale, 1 + scale].
    shear : float
        Maximum horizontal shear angle in degrees, uniform in [-shear, shear].
    elastic_alpha : float
        Root-mean-square elastic displacement per axis in pixels, away from the
        border (the reflecting boundary raises it up to about 2x in the corners);
        0 disables it. Simard et al.'s raw scale factor ``a`` corresponds to
        ``a / (sqrt(3) * 2 * sqrt(pi) * sigma)`` here: their (34, 4) is about 1.4.
    elastic_sigma : float
        Standard deviation in pixels of the Gaussian smoothing the random displacement field.
    probability : float
        Chance that each image of a batch is augmented; the others are returned unchanged.
    """

    def __init__(
        self,
        image_shape: tuple[int, int] = (28, 28),
        shift: float = 2.0,
        rotation: float = 10.0,
        scale: float = 0.1,
        shear: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        probability: float = 1.0,
    ) -> None:
        try:
            height, width = (operator.index(size) for size in image_shape)
        except (TypeError, ValueError):
            height = width = 0
        check(height >= 1 and width >= 1, "image_shape", image_shape, "two positive integers (H, W)")
        self.image_shape = (height, width)
        self.shift = _check_range("shift", shift, 0.0, math.inf)
        self.rotation = _check_range("rotation", rotation, 0.0, 180.0)
        self.scale = _check_range("scale", scale, 0.0, 1.0, high_open=True)
        self.shear = _check_range("shear", shear, 0.0, 90.0, high_open=True)
        self.elastic_alpha = _check_range("elastic_alpha", elastic_alpha, 0.0, math.inf)
        self.elastic_sigma = _check_range("elastic_sigma", elastic_sigma, 0.0, math.inf)
        check(
            self.elastic_alpha == 0 or self.elastic_sigma > 0,
            "elastic_sigma",
            elastic_sigma,
            "> 0 when elastic_alpha > 0",
        )
        self.probability = _check_range("probability", probability, 0.0, 1.0)

        if self.elastic_alpha > 0:
            # Scaled so that blur_rows @ U @ blur_cols_t, with U uniform on (-0.5, 0.5)
            # (variance 1/12), has mean square alpha**2 away from the borders.
            gain = self.elastic_alpha * np.sqrt(12.0) / np.sum(gaussian_kernel(self.elastic_sigma) ** 2)
            self._blur_rows = (gain * gaussian_blur_matrix(height, self.elastic_sigma)).astype(np.float32)
            self._blur_cols_t = gaussian_blur_matrix(width, self.elastic_sigma).T.astype(np.float32)

    @property
    def is_identity(self) -> bool:
        """True when no setting changes an image."""
        return self.probability == 0 or not any((self.shift, self.rotation, self.scale, self.shear, self.elastic_alpha))

    def config(self) -> dict:
        """Constructor arguments as a JSON-serializable dict; ``Augmenter(**config)`` rebuilds it."""
        return {
            "image_shape": list(self.image_shape),
            "shift": self.shift,
            "rotation": self.rotation,
            "scale": self.scale,
            "shear": self.shear,
            "elastic_alpha": self.elastic_alpha,
            "elastic_sigma": self.elastic_sigma,
            "probability": self.probability,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({arguments})"

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a batch; all randomness comes from ``rng``.

        Parameters
        ----------
        x : ndarray, shape (B, H * W), float32 or float64
            Flattened images with values in [0, 1]. Not modified.
        rng : numpy.random.Generator

        Returns
        -------
        ndarray, shape (B, H * W), dtype of ``x``
            A new array; values stay in the input's [0, 1] range.
        """
        height, width = self.image_shape
        if x.ndim != 2 or x.shape[1] != height * width:
            raise ValueError(f"x must have shape (B, {height * width}), got {x.shape}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"x must be a floating-point array, got {x.dtype}")
        if self.is_identity or len(x) == 0:
            return x.copy()
        if self.probability == 1:
            return self._augment(x, rng)
        out = x.copy()
        chosen = np.flatnonzero(rng.random(len(x)) < self.probability)
        if chosen.size:
            out[chosen] = self._augment(x[chosen], rng)
        return out

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(x)
        height, width = self.image_shape
        shifts = rng.uniform(-self.shift, self.shift, size=(n, 2))
        angles = np.deg2rad(rng.uniform(-self.rotation, self.rotation, size=n))
        zooms = rng.uniform(1.0 - self.scale, 1.0 + self.scale, size=n)
        shear_slopes = np.tan(np.deg2rad(rng.uniform(-self.shear, self.shear, size=n)))

        # Forward map: zoom, then shear (col += slope * row), then rotate.
        # Inverse: zoom^-1 @ shear^-1 @ rotation^T.
        cos, sin = np.cos(angles), np.sin(angles)
        inverse = np.empty((n, 2, 2))
        inverse[:, 0, 0] = cos
        inverse[:, 0, 1] = sin
        inverse[:, 1, 0] = -shear_slopes * cos - sin
        inverse[:, 1, 1] = -shear_slopes * sin + cos
        inverse /= zooms[:, None, None]

        images = x.reshape(n, height, width)
        out = np.empty_like(images)
        step = max(1, _CHUNK_PIXELS // (height * width))
        for start in range(0, n, step):
            chunk = slice(start, start + step)
            rows, cols = affine_source_grid(self.image_shape, inverse[chunk], shifts[chunk])
            if self.elastic_alpha > 0:
                noise = rng.random((2, len(rows), height, width), dtype=np.float32)
                noise -= 0.5
                # Stacked 28x28 products stay below the size at which BLAS spawns threads.
                displacement = self._blur_rows @ noise @ self._blur_cols_t
                rows += displacement[0]
                cols += displacement[1]
            out[chunk] = bilinear_sample(images[chunk], rows, cols)
        return out.reshape(n, height * width)
