"""Reading MNIST in CSV layouts.

Two layouts are recognised, each with or without a header row:

* labelled, 785 columns: ``label`` then 784 pixels (Kaggle "MNIST in CSV"
  ``mnist_train.csv`` / ``mnist_test.csv``, digit-recognizer ``train.csv``);
* unlabelled, 784 columns: pixels only (digit-recognizer ``test.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .idx import IMAGE_SIDE, NUM_CLASSES, DataError

__all__ = ["read_mnist_csv"]

NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE


def _layout_hint(num_pixels: int) -> str:
    return (
        f"Expected {num_pixels + 1} columns (label, then {num_pixels} pixels) or "
        f"{num_pixels} columns (pixels only, like the digit-recognizer test.csv), "
        "comma-separated, with an optional header row."
    )


def _first_line(path: Path, hint: str) -> str:
    try:
        with path.open("r", encoding="utf-8") as file:
            for line in file:
                if line.strip():
                    return line.strip()
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist. Check the path.") from None
    except UnicodeDecodeError as error:
        raise DataError(f"CSV file {path} is not a readable CSV file: not UTF-8 text ({error.reason}).") from None
    except OSError as error:
        raise DataError(f"Could not read CSV file {path}: {error}.") from error
    raise DataError(f"CSV file {path} is empty. {hint}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_slowly(path: Path, header: int | None, line_offset: int) -> np.ndarray:
    """Re-read the file as text; raise on its first non-integer cell, else return it.

    Used only when the fast integer parse fails, to say where and why.
    """
    import pandas as pd

    text = pd.read_csv(path, header=header, dtype=str, na_filter=False)
    numbers = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(np.isnan(numbers) | (numbers != np.floor(numbers)))
    if bad.size == 0:
        return numbers
    row, column = bad[0]
    cell = text.iat[row, column]
    if not isinstance(cell, str) or not cell.strip():
        what = "an empty or missing cell"
    else:
        what = f"the non-integer value {cell!r}"
    raise DataError(
        f"CSV file {path} has {what} at line {row + line_offset}, column "
        f"{column + 1}. Every cell must be an integer (labels 0..9, pixels 0..255); "
        "fix or remove that row."
    )


def _check_range(path: Path, values: np.ndarray, what: str, high: int, line_offset: int, col0: int) -> None:
    bad = np.argwhere((values < 0) | (values > high))
    if bad.size:
        row, column = bad[0]
        raise DataError(
            f"CSV file {path} has {what} {values[row, column]:.0f} at line "
            f"{row + line_offset}, column {column + col0}; {what}s must be in "
            f"0..{high}. Fix or remove that row, or check the column layout."
        )


def read_mnist_csv(
    path: str | Path, has_labels: bool | None = None, num_pixels: int = NUM_PIXELS
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an MNIST CSV file, with or without a label column and header row.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    has_labels : bool or None
        Whether the first column is the label. None detects it from the
        column count: 785 means labelled, 784 means pixels only.
    num_pixels : int
        Pixels per row, 784 for MNIST (``experiments/predict.py`` passes its
        model's input size).

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape (N, num_pixels), values 0..255.
    labels : numpy.ndarray or None
        uint8 array of shape (N,), values 0..9, or None for a file without a
        label column.

    Raises
    ------
    DataError
        If the file is missing or empty, has a header but no rows, a wrong or
        ragged column count, a non-integer or empty cell, a pixel outside
        0..255 or a label outside 0..9; the message names the file, line and
        column where it can.
    """
    path = Path(path)
    hint = _layout_hint(num_pixels)
    first_cells = [cell.strip().strip('"') for cell in _first_line(path, hint).split(",")]
    # A header has no numeric cell; a partly numeric first line is data, checked below.
    has_header = not any(_is_number(cell) for cell in first_cells)
    num_columns = len(first_cells)
    if has_labels is None:
        has_labels = num_columns == num_pixels + 1
    if num_columns != num_pixels + int(has_labels):
        layout = "with" if has_labels else "without"
        raise DataError(
            f"CSV file {path} has {num_columns} columns in its first line but a "
            f"file {layout} a label column needs {num_pixels + int(has_labels)}. {hint}"
        )
    header = 0 if has_header else None
    # Data row i (0-based) sits on this 1-based line of the file (blank lines aside).
    line_offset = 1 + int(has_header)
    import pandas as pd  # here: pandas takes half a second to import, and only CSV data needs it

    try:
        values = pd.read_csv(path, header=header, dtype=np.int32).to_numpy()
    except pd.errors.ParserError as error:
        raise DataError(
            f"CSV file {path} has rows with a different column count than its first line ({error}). {hint}"
        ) from error
    except (ValueError, OverflowError):
        values = _read_slowly(path, header, line_offset)
    if len(values) == 0:
        raise DataError(f"CSV file {path} has a header row but no data rows. Use the full file.")
    pixels = values[:, 1:] if has_labels else values
    _check_range(path, pixels, "pixel", 255, line_offset, 1 + int(has_labels))
    if not has_labels:
        return pixels.astype(np.uint8), None
    labels = values[:, :1]
    _check_range(path, labels, "label", NUM_CLASSES - 1, line_offset, 1)
    return pixels.astype(np.uint8), labels[:, 0].astype(np.uint8)
