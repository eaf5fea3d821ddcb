"""Reading and validating IDX files, the format of MNIST and Fashion-MNIST.

Layout: a 4-byte big-endian magic number (two zero bytes, a dtype byte, the
number of dimensions), one 4-byte big-endian size per dimension, then the data
in C order. Only unsigned bytes (dtype byte 0x08) with one dimension (labels,
magic 0x00000801) or three dimensions (images, magic 0x00000803) are accepted.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from nn.checks import ArgumentError

__all__ = ["IMAGE_SIDE", "NUM_CLASSES", "DataError", "load_idx_pair", "read_idx"]

IMAGE_SIDE = 28
NUM_CLASSES = 10
UBYTE_CODE = 0x08
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803


# Defined here, in the package's lowest module, so every other module can import it.
class DataError(ValueError):
    """A data file is missing, unreadable or malformed, or a data option is invalid.

    The message is one paragraph naming the file, the problem and the fix.
    """


class DataOptionError(DataError, ArgumentError):
    """An invalid option of ``load_dataset``: ``name`` is the option (also the ``dataset.<name>`` config key)."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"IDX file {path} does not exist. Check the path, or let load_dataset download the files."
        ) from None
    except OSError as error:
        raise DataError(f"Could not read IDX file {path}: {error}.") from error
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"IDX file {path} looks gzip-compressed but cannot be decompressed "
            f"({error}); the file is probably truncated or corrupt. Delete it and "
            "download it again."
        ) from error


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzip-compressed or plain, with full validation.

    Parameters
    ----------
    path : str or Path
        The file; gzip compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (N,) for a labels file or (N, rows, cols) for an
        images file. It is a read-only view on the file's bytes.

    Raises
    ------
    DataError
        If the file is missing or unreadable, the magic number is not
        0x00000801 / 0x00000803, a dimension is zero, or the byte size does not
        equal the header plus the product of the dimensions.
    """
    path = Path(path)
    raw = _read_bytes(path)
    fix = "Delete it and download it again, or replace it with the official file."
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is only {len(raw)} bytes long, too short for the 4-byte magic number. {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (LABELS_MAGIC, IMAGES_MAGIC):
        raise DataError(
            f"IDX file {path} has bad magic number 0x{magic:08x}; expected "
            f"0x{LABELS_MAGIC:08x} (labels) or 0x{IMAGES_MAGIC:08x} (images) with "
            f"dtype byte 0x{UBYTE_CODE:02x}. It is not an MNIST-style IDX file. {fix}"
        )
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"IDX file {path} is truncated: {len(raw)} bytes, shorter than its {header_size}-byte header. {fix}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in shape:
        raise DataError(f"IDX file {path} has a zero dimension in its header (shape {shape}); it holds no data. {fix}")
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"IDX file {path} is {problem}: its header declares shape {shape}, "
            f"which needs exactly {expected} bytes, but it has {len(raw)}. {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def load_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check an MNIST-style images file and its labels file.

    Parameters
    ----------
    images_path, labels_path : str or Path
        IDX files (gzip-compressed or plain) of the same split.

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape (N, 28, 28).
    labels : numpy.ndarray
        uint8 array of shape (N,), values in 0..9.

    Raises
    ------
    DataError
        On any problem of :func:`read_idx`, if the images are not (N, 28, 28),
        the labels are not (N,), the counts differ, or a label is above 9.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"IDX file {images_path} should hold images of shape (N, {IMAGE_SIDE}, "
            f"{IMAGE_SIDE}) but holds shape {images.shape}. Check that images and "
            "labels files are not swapped and that this is MNIST or Fashion-MNIST."
        )
    if labels.ndim != 1:
        raise DataError(
            f"IDX file {labels_path} should hold labels of shape (N,) but holds "
            f"shape {labels.shape}. Check that images and labels files are not "
            "swapped."
        )
    if len(images) != len(labels):
        raise DataError(
            f"Count mismatch: {images_path} holds {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels. The two files come from "
            "different splits or datasets; use the matching pair (train-* with "
            "train-*, t10k-* with t10k-*)."
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"IDX file {labels_path} has label {labels[bad[0]]} at index {bad[0]} "
            f"({bad.size} labels in all outside 0..{NUM_CLASSES - 1}). The file is "
            "corrupt or not an MNIST labels file; replace it with the official file."
        )
    return images, labels
