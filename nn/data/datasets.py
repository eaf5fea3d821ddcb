"""The front door: :func:`load_dataset` and the :class:`Dataset` / :class:`Split` types."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nn.checks import in_range, is_integer

from . import download as download_module
from .csv import read_mnist_csv
from .download import IDX_FILES
from .idx import IMAGE_SIDE, NUM_CLASSES, DataError, DataOptionError, load_idx_pair
from .splits import stratified_split, stratified_subset

__all__ = ["DATASET_NAMES", "Dataset", "Split", "default_data_root", "load_dataset"]

DATASET_NAMES = ("mnist", "fashion_mnist", "digits", "csv")
SPLIT_ALIASES = {"holdout": "holdout", "80/10/10": "80/10/10", "r0": "80/10/10"}
DIGITS_TEST_FRACTION = 0.2
R0_FRACTION = 0.1  # test, and val, share of the whole pool under split="80/10/10"


@dataclass(frozen=True, eq=False)
class Split:
    """One part of a dataset.

    Attributes
    ----------
    X : numpy.ndarray
        Features, shape (N, D), floating dtype; pixels scaled to [0, 1], or
        standardized with the train split's statistics.
    y : numpy.ndarray
        int64 labels, shape (N,), in [0, num_classes).
    """

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim != 1 or len(self.X) != len(self.y):
            raise ValueError(
                f"Split needs X of shape (N, D) and y of shape (N,), got X {self.X.shape} and y {self.y.shape}."
            )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train, validation and (optionally) test parts.

    Attributes
    ----------
    name : str
        "mnist", "fashion_mnist", "digits" or "csv".
    train, val : Split
        Training and validation parts.
    test : Split or None
        Test part. None only for "csv" with ``split="holdout"`` when there is
        no test file or it has no label column (the digit-recognizer ``test.csv``).
    num_classes : int
        Number of classes, 10.
    image_shape : tuple of int
        (28, 28), or (8, 8) for "digits"; ``D == image_shape[0] * image_shape[1]``.
    checksum : str
        SHA-256 hex digest over the raw uint8 content of every source file
        read (train images, train labels, test images, test labels, in that
        order, each prefixed with its element count). It identifies the source
        data, not the split: the same files give the same checksum whatever
        `split`, `seed` or `subset`, and whether gzipped, plain IDX or CSV.
    source : str
        File URI of the training data: the folder of the IDX files, the
        training CSV, or scikit-learn's ``digits.csv.gz``. What MLflow records
        as the dataset's source.
    files : tuple of Path
        Absolute paths of every file read, training data first (a test CSV
        without labels included).
    """

    name: str
    train: Split
    val: Split
    test: Split | None
    num_classes: int
    image_shape: tuple[int, int]
    checksum: str
    source: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _RawData:
    """Source content before splitting: uint8 images (N, ...) and uint8 labels (N,)."""

    pool: tuple[np.ndarray, np.ndarray]
    official_test: tuple[np.ndarray, np.ndarray] | None
    image_shape: tuple[int, int]
    max_pixel: float
    checksum: str
    source: Path
    files: tuple[Path, ...]


def default_data_root() -> Path:
    """Return the data root: ``$NNLAB_DATA_DIR``, else ``$XDG_CACHE_HOME/nnlab``.

    Returns
    -------
    Path
        ``$NNLAB_DATA_DIR`` if set and non-empty, otherwise
        ``$XDG_CACHE_HOME/nnlab`` (``~/.cache/nnlab`` when XDG_CACHE_HOME is unset).
        The folder holds ``mnist/`` and ``fashion_mnist/``.
    """
    if os.environ.get("NNLAB_DATA_DIR"):
        return Path(os.environ["NNLAB_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "nnlab"


def _content_checksum(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.int64(array.size).tobytes())
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _find_idx_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Return the found IDX paths (plain preferred over .gz) and the missing names."""
    found, missing = [], []
    for name in IDX_FILES:
        candidates = [folder / name, folder / f"{name}.gz"]
        existing = [path for path in candidates if path.is_file()]
        if existing:
            found.append(existing[0])
        else:
            missing.append(name)
    return found, missing


def _missing_files_error(name: str, folder: Path, missing: list[str], reason: str) -> DataError:
    """What is missing, why it was not downloaded, and the fix: one short line each."""
    wanted = ", ".join(f"{file}.gz" for file in IDX_FILES)
    lines = [
        f"{name} files are missing from {folder}: {', '.join(missing)} (looked for each name with and without .gz).",
        reason,
        f"Put the four files {wanted} (gzipped or not) in {folder},",
        f"or point dataset.root (the root argument of load_dataset; default $NNLAB_DATA_DIR) at a folder with {name}/.",
    ]
    return DataError("\n".join(line for line in lines if line))


def _read_idx_dataset(name: str, root: Path, download: bool) -> _RawData:
    folder = root / name
    paths, missing = _find_idx_files(folder)
    if missing:
        if not download:
            reason = "Downloading is off (download=False)."
        else:
            try:
                download_module.download(name, root)
                reason = ""
            except DataError as error:
                reason = f"Downloading failed: {error}"
            paths, missing = _find_idx_files(folder)
        if missing:
            raise _missing_files_error(name, folder, missing, reason)
    train_images, train_labels = load_idx_pair(paths[0], paths[1])
    test_images, test_labels = load_idx_pair(paths[2], paths[3])
    return _RawData(
        pool=(train_images, train_labels),
        official_test=(test_images, test_labels),
        image_shape=(IMAGE_SIDE, IMAGE_SIDE),
        max_pixel=255.0,
        checksum=_content_checksum(train_images, train_labels, test_images, test_labels),
        source=folder.resolve(),
        files=tuple(path.resolve() for path in paths),
    )


def _read_digits() -> _RawData:
    from importlib.resources import files

    from sklearn.datasets import load_digits

    digits = load_digits()
    path = Path(str(files("sklearn.datasets") / "data" / "digits.csv.gz")).resolve()
    images = digits.data.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    return _RawData(
        pool=(images, labels),
        official_test=None,
        image_shape=(8, 8),
        max_pixel=16.0,
        checksum=_content_checksum(images, labels),
        source=path,
        files=(path,),
    )


def _resolve_csv(path: str | Path, root: Path) -> Path:
    """Return `path` if it exists, else ``root / path`` if that exists (relative paths)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute() or not (root / path).exists():
        return path
    return root / path


def _read_csv_dataset(train_csv: str | Path | None, test_csv: str | Path | None, root: Path) -> _RawData:
    if train_csv is None:
        raise DataError(
            "Dataset 'csv' needs train_csv, the path of a CSV file with a label "
            "column then 784 pixel columns (e.g. mnist_train.csv of the Kaggle "
            "'MNIST in CSV' dataset); pass train_csv=... (Hydra: dataset.train_csv)."
        )
    train_path = _resolve_csv(train_csv, root)
    train_images, train_labels = read_mnist_csv(train_path)
    if train_labels is None:
        raise DataError(
            f"CSV file {train_path} has no label column (784 columns), so it cannot "
            "be the training file. Pass the labelled file (785 columns: label, then "
            "784 pixels) as train_csv; a pixels-only file can only be test_csv."
        )
    arrays, paths = [train_images, train_labels], [train_path.resolve()]
    official_test = None
    if test_csv is not None:
        test_path = _resolve_csv(test_csv, root)
        test_images, test_labels = read_mnist_csv(test_path)
        paths.append(test_path.resolve())
        arrays.append(test_images)
        if test_labels is not None:
            official_test = (test_images, test_labels)
            arrays.append(test_labels)
    return _RawData(
        pool=(train_images, train_labels),
        official_test=official_test,
        image_shape=(IMAGE_SIDE, IMAGE_SIDE),
        max_pixel=255.0,
        checksum=_content_checksum(*arrays),
        source=paths[0],
        files=tuple(paths),
    )


def _partition(
    labels: np.ndarray,
    split: str,
    val_fraction: float,
    test_fraction: float | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Return (train, val, test) indices into the pool; test None if not carved."""
    if split == "80/10/10":
        test_fraction, val_fraction = R0_FRACTION, R0_FRACTION / (1 - R0_FRACTION)
    pool = np.arange(len(labels))
    test = None
    if test_fraction is not None:
        pool, test = stratified_split(labels, test_fraction, rng)
    train, val = stratified_split(labels[pool], val_fraction, rng)
    return pool[train], pool[val], test


def _make_split(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray | None,
    subset: int | None,
    rng: np.random.Generator,
    max_pixel: float,
    dtype: np.dtype,
) -> Split:
    if indices is None:
        indices = np.arange(len(labels))
    if subset is not None:
        indices = indices[stratified_subset(labels[indices], subset, rng)]
    X = images[indices].reshape(len(indices), -1).astype(dtype)
    X /= max_pixel
    return Split(X=X, y=labels[indices].astype(np.int64))


def _standardize(parts: dict[str, Split | None]) -> None:
    """Scale every part in place by the train part's scalar pixel mean and std."""
    mean = parts["train"].X.mean(dtype=np.float64)
    std = parts["train"].X.std(dtype=np.float64)
    if std == 0:
        raise DataError(
            "Cannot standardize: every pixel of the training split has the same "
            "value (std 0). Use standardize=False or a larger subset."
        )
    for part in parts.values():
        if part is not None:
            X = part.X  # augmented assignment on part.X would re-set a frozen field
            X -= X.dtype.type(mean)
            X /= X.dtype.type(std)


def _validate_options(
    name: str,
    split: str,
    val_fraction: float,
    subset: int | None,
    dtype: npt.DTypeLike,
    train_csv: str | Path | None,
    test_csv: str | Path | None,
) -> tuple[str, np.dtype]:
    """Check every option before any file is read; raises ``DataOptionError`` naming the option."""
    check(name in DATASET_NAMES, "name", name, f"one of {', '.join(DATASET_NAMES)}")
    check(
        split in SPLIT_ALIASES,
        "split",
        split,
        "'holdout' (official test set kept apart, val carved from train) or '80/10/10' "
        "(alias 'r0': the official train set alone split 80/10/10)",
    )
    check(in_range(val_fraction, 0, 1, low_open=True, high_open=True), "val_fraction", val_fraction, "in (0, 1)")
    check(subset is None or (is_integer(subset) and subset >= 1), "subset", subset, "null or a positive integer")
    check(name != "csv" or bool(train_csv), "train_csv", train_csv, "the path of a labelled CSV file when name is csv")
    for key, value in (("train_csv", train_csv), ("test_csv", test_csv)):
        check(name == "csv" or value is None, key, value, f"null unless name is csv (it is {name!r})")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = np.dtype(object)
    check(np_dtype.kind == "f", "dtype", dtype, "a floating NumPy dtype (float32 or float64)")
    return SPLIT_ALIASES[split], np_dtype


def check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise DataOptionError(name, value, allowed)


def load_dataset(
    name: str = "mnist",
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split: str = "holdout",
    standardize: bool = False,
    seed: int = 0,
    download: bool = True,
    subset: int | None = None,
    dtype: npt.DTypeLike = np.float32,
    train_csv: str | Path | None = None,
    test_csv: str | Path | None = None,
) -> Dataset:
    """Load a dataset, split it, and scale its pixels.

    Parameters
    ----------
    name : str
        "mnist", "fashion_mnist" (IDX files in ``<root>/<name>/``), "digits"
        (scikit-learn's 8x8 digits, offline) or "csv" (`train_csv`, `test_csv`).
    root : str or Path, optional
        Data root; None or "" means :func:`default_data_root`. Relative CSV paths
        not found from the working directory are also looked up under it.
    val_fraction : float
        Share of the training pool held out, stratified, as validation, in (0, 1).
        Ignored by ``split="80/10/10"``.
    split : str
        "holdout": val carved from the training pool; the test part is the
        official test set, untouched ("digits" has none, so a stratified 20%
        is carved first; "csv" uses `test_csv`). "80/10/10" (alias "r0"): the
        training pool alone is split stratified 80/10/10 into train/val/test;
        any official test set is not used.
    standardize : bool
        Subtract the train part's pixel mean and divide by its pixel std
        (scalars, from train only), applied to every part.
    seed : int
        Seeds the splits and the subset; the same seed gives identical arrays.
    download : bool
        For "mnist" / "fashion_mnist", download missing files into
        ``<root>/<name>/``.
    subset : int, optional
        Keep a stratified random `subset` examples of the train part, after
        splitting, and cap val and test to at most `subset` examples each
        (also stratified), for fast tests.
    dtype : numpy dtype
        Floating dtype of every ``X``.
    train_csv, test_csv : str or Path, optional
        For "csv" only: the labelled training file (required) and a test file.
        A test file without a label column (the digit-recognizer ``test.csv``)
        is read and validated but gives ``test=None``; get its pixels with
        :func:`read_mnist_csv`.

    Returns
    -------
    Dataset
        ``X`` arrays of shape (N, D) in `dtype`, with D = 784, or 64 for
        "digits"; ``y`` arrays of shape (N,) int64. With MNIST and the defaults:
        54000 train, 6000 val, 10000 test.

    Raises
    ------
    DataError
        For invalid options, missing files that cannot be downloaded (naming
        the files and the folder to put them in), or malformed files.
    """
    split, np_dtype = _validate_options(name, split, val_fraction, subset, dtype, train_csv, test_csv)
    root = Path(root).expanduser() if root else default_data_root()
    if name == "digits":
        raw = _read_digits()
    elif name == "csv":
        raw = _read_csv_dataset(train_csv, test_csv, root)
    else:
        raw = _read_idx_dataset(name, root, download)

    split_rng, subset_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    labels = raw.pool[1]
    test_fraction = DIGITS_TEST_FRACTION if name == "digits" else None
    try:
        train_idx, val_idx, test_idx = _partition(labels, split, val_fraction, test_fraction, split_rng)
    except DataError as err:  # too few rows for the split: say which data and which option
        raise DataError(
            f"{name} data from {raw.files[0] if raw.files else raw.source} ({len(labels)} labelled rows): {err} "
            f"The split takes val_fraction={val_fraction} (the config key dataset.val_fraction) of them for validation."
        ) from None

    def make(source: tuple[np.ndarray, np.ndarray], indices: np.ndarray | None) -> Split:
        return _make_split(*source, indices, subset, subset_rng, raw.max_pixel, np_dtype)

    parts: dict[str, Split | None] = {
        "train": make(raw.pool, train_idx),
        "val": make(raw.pool, val_idx),
    }
    if test_idx is not None:
        parts["test"] = make(raw.pool, test_idx)
    elif raw.official_test is not None and split == "holdout":
        parts["test"] = make(raw.official_test, None)
    else:
        parts["test"] = None
    if standardize:
        _standardize(parts)
    return Dataset(
        name=name,
        num_classes=NUM_CLASSES,
        image_shape=raw.image_shape,
        checksum=raw.checksum,
        source=raw.source.as_uri(),
        files=raw.files,
        **parts,
    )
