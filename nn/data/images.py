"""Digit images as MNIST's networks saw them: white on black, cropped, scaled to 20 px, centred in 28x28.

Shared by ``experiments/predict.py`` (image files) and the logged MLflow model
(``experiments/digit_model.py``, base64-encoded images in a request), so both prepare an image the same
way. An image may be of any size and either polarity; :func:`image_features` makes it one input row.
Every problem raises :class:`ImageError`, whose message names it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MNIST_SIDE, DIGIT_BOX = 28, 20  # MNIST: the digit's longer side is 20 px inside a 28x28 field
INK = 0.1  # a pixel is ink above this share of the full contrast (for the bounding box)
MAX_PIXELS = 25_000_000  # a 5000x5000 photo; its float64 copies stay under a gigabyte


class ImageError(ValueError):
    """An image cannot be read or holds no digit; the message says which."""


def read_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Grey levels in [0, 1], shape (H, W), of an image file or its bytes; transparent areas become background."""
    name = "the image" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source)) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{name}: the image is {width}x{height} pixels, more than the {MAX_PIXELS // 10**6} million this "
                    "reads (decoding it would take gigabytes); a digit needs far fewer. Scale it down or crop it."
                )
            image = ImageOps.exif_transpose(image)
            image.load()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...).") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{name}: the image could not be read ({err}); it may be truncated or damaged.") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
        opaque = alpha > 0.5
        # Strokes drawn on a transparent sheet: put them on a background that contrasts with them.
        ink_level = grey[opaque].mean() if opaque.any() and not opaque.all() else 0.0
        background = 0.0 if ink_level > 0.5 else 1.0
        return grey * alpha + background * (1.0 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def to_white_on_black(grey: np.ndarray) -> np.ndarray:
    """Ink at 1, background at 0: inverts dark-on-light images (judged by the border) and stretches contrast.

    The background level is the median of the one-pixel border (the mean brightness when the border is
    mixed); a light background means dark ink, so the image is inverted.
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"expected a 2-D grey image, got shape {grey.shape}")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    level = float(np.median(border))
    if abs(level - 0.5) < 0.1:  # a border as much ink as paper: go by the whole picture
        level = float(grey.mean())
    if level > 0.5:
        grey = 1.0 - grey
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    top = float(grey.max())
    if top - background < 0.05:
        return np.zeros_like(grey)
    return np.clip((grey - background) / (top - background), 0.0, 1.0)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre of ``image``, in pixel indices."""
    total = image.sum()
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    return float(image.sum(axis=1) @ rows / total), float(image.sum(axis=0) @ cols / total)


def mnist_like(grey: np.ndarray, side: int = MNIST_SIDE, box: int = DIGIT_BOX) -> np.ndarray:
    """MNIST's preprocessing of a digit image: float32 (side, side) in [0, 1], white digit on black.

    Steps: :func:`to_white_on_black`; crop to the bounding box of the ink; scale (anti-aliased, keeping
    the aspect ratio) so that the longer side is ``box`` pixels; paste into ``side`` x ``side`` so the
    centre of mass lands on pixel (side/2, side/2), as LeCun et al. did for MNIST. ImageError when the
    image holds no ink.
    """
    image = to_white_on_black(grey)
    ink = image > INK
    if not ink.any():
        raise ImageError("the image is blank: no digit stands out from the background")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(digit, dtype=np.float64), 0.0, 1.0)
    out = np.zeros((side, side), dtype=np.float64)
    com_row, com_col = center_of_mass(digit)
    top = int(np.clip(round(side / 2 - com_row), 0, side - digit.shape[0]))
    left = int(np.clip(round(side / 2 - com_col), 0, side - digit.shape[1]))
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return out.astype(np.float32)


def image_features(source: str | os.PathLike | bytes, input_dim: int = MNIST_SIDE * MNIST_SIDE) -> np.ndarray:
    """One image (a file or its bytes) as a model input row (input_dim,) in [0, 1].

    MNIST models take :func:`mnist_like`'s 28x28 image; a model with another square input, side s (the 8x8
    ``digits``), gets the digit scaled to fill 4s x 4s and averaged over 4x4 blocks, as those were made.
    """
    name = "the image" if isinstance(source, bytes) else str(source)
    side = round(input_dim**0.5)
    if side * side != input_dim:
        raise ImageError(f"{name}: the model takes {input_dim} inputs, not a square image; give it pixel rows.")
    grey = read_image(source)
    try:
        if side == MNIST_SIDE:
            return mnist_like(grey).reshape(-1)
        # scikit-learn's digits: 32x32 bitmaps filling the frame, counted in 4x4 blocks.
        image = mnist_like(grey, side=4 * side, box=4 * side)
    except ImageError as err:
        raise ImageError(f"{name}: {err}.") from None
    return image.reshape(side, 4, side, 4).mean(axis=(1, 3)).reshape(-1)
