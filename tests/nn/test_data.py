"""Tests of nn.data: IDX and CSV reading, splits, loaders, and offline download."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nn.data import (
    DataError,
    Dataset,
    Split,
    default_data_root,
    download,
    load_dataset,
    load_idx_pair,
    read_idx,
    read_mnist_csv,
    stratified_split,
)

download_module = importlib.import_module("nn.data.download")

IDX_NAMES = download_module.IDX_FILES
REAL_ROOT = Path(os.environ.get("NNLAB_DATA_DIR", "/nonexistent")) / "mnist"
HAS_REAL_MNIST = "NNLAB_DATA_DIR" in os.environ and all((REAL_ROOT / f"{name}.gz").is_file() for name in IDX_NAMES)
needs_real_mnist = pytest.mark.skipif(not HAS_REAL_MNIST, reason="NNLAB_DATA_DIR unset or MNIST files absent")
# SHA-256 of the content arrays of the real MNIST, as Dataset.checksum defines it.
REAL_MNIST_CHECKSUM = "979e081520cdfe92cbc9643ead5b074180ca1113bbc6dc45cf9621bbecaef15c"


# --- helpers -----------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array; `magic` overrides the computed magic number."""
    magic = 0x00000800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big")
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, **kwargs) -> Path:
    data = idx_bytes(array, **kwargs)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels (n,) and images (n, 28, 28) whose first 2 pixels encode the index."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) // 256
    images[:, 0, 1] = np.arange(n) % 256
    return images, labels


def row_ids(X: np.ndarray) -> np.ndarray:
    """Recover fake_digits indices from scaled rows."""
    pixels = np.rint(X[:, :2] * 255).astype(np.int64)
    return pixels[:, 0] * 256 + pixels[:, 1]


def write_fake_mnist(folder: Path, n_train: int = 300, n_test: int = 100) -> dict:
    """Write the four IDX files (train gzipped, test plain) and return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    train = fake_digits(n_train, seed=1)
    test = fake_digits(n_test, seed=2)
    write_idx(folder / "train-images-idx3-ubyte.gz", train[0], gz=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train[1], gz=True)
    write_idx(folder / "t10k-images-idx3-ubyte", test[0])
    write_idx(folder / "t10k-labels-idx1-ubyte", test[1])
    return {"train": train, "test": test}


def write_csv(path: Path, images, labels=None, header: bool = True) -> Path:
    table = images.reshape(len(images), -1).astype(np.int64)
    names = [f"pixel{i}" for i in range(table.shape[1])]
    if labels is not None:
        table = np.column_stack([labels, table])
        names = ["label", *names]
    lines = [",".join(names)] if header else []
    lines += [",".join(map(str, row)) for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def set_cell(path: Path, line: int, column: int, value: str | None) -> None:
    """Overwrite one cell (1-based line and column); None deletes it."""
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    if value is None:
        del cells[column - 1]
    else:
        cells[column - 1] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "data"
    return root, write_fake_mnist(root / "mnist")


# --- IDX ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path, gz):
    images, labels = fake_digits(20, seed=0)
    images_path = write_idx(tmp_path / "images", images, gz=gz)
    labels_path = write_idx(tmp_path / "labels", labels, gz=gz)
    assert np.array_equal(read_idx(images_path), images)
    got_images, got_labels = load_idx_pair(images_path, labels_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (20, 28, 28)
    assert got_labels.dtype == np.uint8 and np.array_equal(got_labels, labels)


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda data: b"\x00\x00\x09\x03" + data[4:], "bad magic number 0x00000903"),
        (lambda data: b"\x00\x00\x08\x02" + data[4:], "bad magic number 0x00000802"),
        (lambda data: data[:-1], "is truncated"),
        (lambda data: data[:10], "is truncated"),
        (lambda data: data + b"\x00", "has trailing bytes"),
        (lambda data: data[:2], "too short"),
        (lambda data: gzip.compress(data)[:-20], "cannot be decompressed"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, corrupt, problem):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(fake_digits(5, seed=0)[0])))
    with pytest.raises(DataError, match=problem) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nothing-here")


def test_load_idx_pair_rejects_wrong_image_dims(tmp_path):
    images_path = write_idx(tmp_path / "images", np.zeros((4, 27, 28), np.uint8))
    labels_path = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\).*\(4, 27, 28\)") as error:
        load_idx_pair(images_path, labels_path)
    assert str(images_path) in str(error.value)


def test_load_idx_pair_rejects_label_11(tmp_path):
    images, labels = fake_digits(10, seed=0)
    labels[7] = 11
    images_path = write_idx(tmp_path / "images", images)
    labels_path = write_idx(tmp_path / "labels", labels)
    with pytest.raises(DataError, match="label 11 at index 7") as error:
        load_idx_pair(images_path, labels_path)
    assert str(labels_path) in str(error.value)


def test_load_idx_pair_rejects_count_mismatch(tmp_path):
    images, labels = fake_digits(10, seed=0)
    images_path = write_idx(tmp_path / "images", images)
    labels_path = write_idx(tmp_path / "labels", labels[:9])
    with pytest.raises(DataError, match="10 images but .* 9 labels") as error:
        load_idx_pair(images_path, labels_path)
    assert str(images_path) in str(error.value) and str(labels_path) in str(error.value)


# --- CSV ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
def test_read_mnist_csv_labelled(tmp_path, header):
    images, labels = fake_digits(12, seed=0)
    path = write_csv(tmp_path / "train.csv", images, labels, header=header)
    got_images, got_labels = read_mnist_csv(path)
    assert got_images.dtype == np.uint8 and got_images.shape == (12, 784)
    assert np.array_equal(got_images, images.reshape(12, -1))
    assert got_labels.dtype == np.uint8 and np.array_equal(got_labels, labels)


def test_read_mnist_csv_takes_other_row_widths(tmp_path):
    images = np.arange(5 * 64).reshape(5, 64) % 17  # 8x8 digits-sized rows, as predict.py reads for such a model
    path = write_csv(tmp_path / "small.csv", images, np.arange(5), header=False)
    got_images, got_labels = read_mnist_csv(path, num_pixels=64)
    assert got_images.shape == (5, 64) and np.array_equal(got_images, images) and list(got_labels) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="has 65 columns in its first line but a file without a label column needs 784"):
        read_mnist_csv(path, has_labels=False)


def test_read_mnist_csv_says_a_binary_file_is_not_a_csv(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="is not a readable CSV file: not UTF-8 text"):
        read_mnist_csv(path)


@pytest.mark.parametrize("header", [True, False])
def test_read_mnist_csv_without_labels(tmp_path, header):
    images, _ = fake_digits(6, seed=0)
    path = write_csv(tmp_path / "test.csv", images, header=header)
    got_images, got_labels = read_mnist_csv(path)
    assert got_labels is None and np.array_equal(got_images, images.reshape(6, -1))
    with pytest.raises(DataError, match="784 columns .* needs 785"):
        read_mnist_csv(path, has_labels=True)


def good_csv(tmp_path: Path) -> Path:
    images, labels = fake_digits(5, seed=0)
    return write_csv(tmp_path / "mnist_train.csv", images, labels)


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_text("\n\n"), "is empty"),
        (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "no data rows"),
        (
            lambda p: p.write_text("label,a,b\n1,2,3\n"),
            "has 3 columns in its first line",
        ),
        (lambda p: set_cell(p, 3, 785, "7,7"), "different column count"),
        (
            lambda p: set_cell(p, 4, 2, "abc"),
            "non-integer value 'abc' at line 4, column 2",
        ),
        (lambda p: set_cell(p, 3, 1, ""), "empty or missing cell at line 3, column 1"),
        (lambda p: set_cell(p, 3, 785, None), "missing cell at line 3, column 785"),
        (lambda p: set_cell(p, 2, 785, "300"), "pixel 300 at line 2, column 785"),
        (lambda p: set_cell(p, 1, 1, "7"), "non-integer value 'pixel0' at line 1, column 2"),
        (lambda p: set_cell(p, 5, 1, "11"), "label 11 at line 5, column 1"),
        (lambda p: set_cell(p, 2, 1, "99999999999"), "label 99999999999 at line 2"),
        (
            lambda p: set_cell(p, 2, 1, "2.5"),
            "non-integer value '2.5' at line 2, column 1",
        ),
    ],
)
def test_read_mnist_csv_rejects_bad_files(tmp_path, corrupt, problem):
    path = good_csv(tmp_path)
    corrupt(path)
    with pytest.raises(DataError, match=problem) as error:
        read_mnist_csv(path)
    assert str(path) in str(error.value)


def test_read_mnist_csv_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_mnist_csv(tmp_path / "absent.csv")


# --- splits ------------------------------------------------------------------


def test_stratified_split_is_stratified_exact_and_disjoint():
    y = np.repeat(np.arange(10), [500, 400, 300, 303, 55, 60, 61, 70, 99, 101])
    keep, held_out = stratified_split(y, 0.1, np.random.default_rng(0))
    assert len(held_out) == round(0.1 * len(y))
    assert np.intersect1d(keep, held_out).size == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held_out])), np.arange(len(y)))
    expected = 0.1 * np.bincount(y)
    assert np.all(np.abs(np.bincount(y[held_out], minlength=10) - expected) <= 1)


def test_stratified_split_gives_the_leftover_to_the_largest_remainders():
    # exact shares of 3 held out from classes of 7, 2, 1: 2.1, 0.6, 0.3 -> floors 2, 0, 0 and the one leftover
    # goes to the largest fractional part (class 1), not to the first class nor the smallest remainder
    y = np.repeat(np.arange(3), [7, 2, 1])
    _, held_out = stratified_split(y, 0.3, np.random.default_rng(0))
    assert np.bincount(y[held_out], minlength=3).tolist() == [2, 1, 0]
    # a tie (2.5 and 1.5 from 5 and 3 of 10, total 5) goes to the lower class index
    y = np.repeat(np.arange(3), [5, 3, 2])
    _, held_out = stratified_split(y, 0.5, np.random.default_rng(0))
    assert np.bincount(y[held_out], minlength=3).tolist() == [3, 1, 1]


def test_stratified_split_is_seeded():
    y = np.arange(1000) % 7
    first = stratified_split(y, 0.3, np.random.default_rng(5))
    again = stratified_split(y, 0.3, np.random.default_rng(5))
    other = stratified_split(y, 0.3, np.random.default_rng(6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, 0.001])
def test_stratified_split_rejects_bad_fraction(fraction):
    with pytest.raises(DataError):
        stratified_split(np.arange(100) % 10, fraction, np.random.default_rng(0))


# --- load_dataset on small IDX files -------------------------------------------


def test_holdout_leaves_official_test_untouched(fake_root):
    root, arrays = fake_root
    dataset = load_dataset("mnist", root, val_fraction=0.2)
    assert isinstance(dataset, Dataset) and isinstance(dataset.train, Split)
    test_images, test_labels = arrays["test"]
    assert np.array_equal(dataset.test.X, test_images.reshape(100, -1) / np.float32(255))
    assert np.array_equal(dataset.test.y, test_labels)
    assert (len(dataset.train.y), len(dataset.val.y)) == (240, 60)
    train_ids, val_ids = row_ids(dataset.train.X), row_ids(dataset.val.X)
    assert np.intersect1d(train_ids, val_ids).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_ids, val_ids])), np.arange(300))
    assert np.array_equal(dataset.train.y, arrays["train"][1][train_ids])
    assert np.array_equal(np.bincount(dataset.val.y), np.full(10, 6))
    assert dataset.num_classes == 10 and dataset.image_shape == (28, 28)
    assert dataset.source == (root / "mnist").resolve().as_uri()
    assert [path.name for path in dataset.files] == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]


@pytest.mark.parametrize("split", ["80/10/10", "r0"])
def test_80_10_10_splits_official_train_only(fake_root, split):
    root, arrays = fake_root
    dataset = load_dataset("mnist", root, split=split)
    parts = (dataset.train, dataset.val, dataset.test)
    assert [len(part.y) for part in parts] == [240, 30, 30]
    ids = [row_ids(part.X) for part in parts]
    assert np.array_equal(np.sort(np.concatenate(ids)), np.arange(300))
    for part, part_ids in zip(parts, ids, strict=True):
        assert np.array_equal(part.y, arrays["train"][1][part_ids])
        assert np.all(np.bincount(part.y, minlength=10) == len(part.y) // 10)


def test_loading_is_seeded_and_repeatable(fake_root):
    root, _ = fake_root
    first = load_dataset("mnist", root, seed=3)
    again = load_dataset("mnist", root, seed=3)
    other = load_dataset("mnist", root, seed=4)
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(first, part).X, getattr(again, part).X)
        assert np.array_equal(getattr(first, part).y, getattr(again, part).y)
    assert not np.array_equal(row_ids(first.val.X), row_ids(other.val.X))
    assert first.checksum == again.checksum == other.checksum


def test_subset_is_stratified_and_caps_val_and_test(fake_root):
    root, _ = fake_root
    dataset = load_dataset("mnist", root, subset=50, split="80/10/10")
    assert [len(p.y) for p in (dataset.train, dataset.val, dataset.test)] == [
        50,
        30,
        30,
    ]
    assert np.array_equal(np.bincount(dataset.train.y), np.full(10, 5))
    full = load_dataset("mnist", root, split="80/10/10")
    assert np.isin(row_ids(dataset.train.X), row_ids(full.train.X)).all()


def test_standardize_uses_train_statistics(fake_root):
    root, _ = fake_root
    dataset = load_dataset("mnist", root, standardize=True, dtype=np.float64)
    assert dataset.train.X.dtype == np.float64
    assert abs(dataset.train.X.mean()) < 1e-9 and abs(dataset.train.X.std() - 1) < 1e-9
    plain = load_dataset("mnist", root, dtype=np.float64)
    mean, std = plain.train.X.mean(), plain.train.X.std()
    assert np.allclose(dataset.test.X, (plain.test.X - mean) / std)


def test_checksum_covers_content_not_file_format(tmp_path, fake_root):
    root, arrays = fake_root
    from_idx = load_dataset("mnist", root)
    (root / "fashion_mnist").mkdir()
    for name in IDX_NAMES:  # gzip every file: same content, same checksum
        source = next((root / "mnist").glob(f"{name}*"))
        data = source.read_bytes()
        if source.suffix != ".gz":
            data = gzip.compress(data)
        (root / "fashion_mnist" / f"{name}.gz").write_bytes(data)
    assert load_dataset("fashion_mnist", root).checksum == from_idx.checksum
    train_csv = write_csv(tmp_path / "train.csv", *arrays["train"])
    test_csv = write_csv(tmp_path / "test.csv", *arrays["test"], header=False)
    from_csv = load_dataset("csv", train_csv=str(train_csv), test_csv=str(test_csv))
    assert from_csv.checksum == from_idx.checksum
    changed = arrays["test"][1].copy()
    changed[0] = (changed[0] + 1) % 10
    write_csv(test_csv, arrays["test"][0], changed)
    assert load_dataset("csv", train_csv=str(train_csv), test_csv=str(test_csv)).checksum != (from_idx.checksum)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_files_without_download_say_where_to_put_them(tmp_path, name):
    with pytest.raises(DataError) as error:
        load_dataset(name, tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / name) in message and "download=False" in message
    for file_name in IDX_NAMES:
        assert f"{file_name}.gz" in message
    for hint in (
        "Put the four files",
        "NNLAB_DATA_DIR",
        "root argument",
        "dataset.root",
    ):
        assert hint in message


def test_missing_files_with_failing_download_say_where_to_put_them(tmp_path, monkeypatch):
    dead_mirror = (tmp_path / "no-mirror").as_uri() + "/"
    monkeypatch.setitem(download_module.MIRRORS, "mnist", [dead_mirror])
    with pytest.raises(DataError) as error:
        load_dataset("mnist", tmp_path / "root")
    message = str(error.value)
    assert "Downloading failed" in message and dead_mirror in message
    assert "Put the four files" in message and str(tmp_path / "root" / "mnist") in message


def test_partially_missing_files_are_named(fake_root):
    root, _ = fake_root
    (root / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing from .*: t10k-labels-idx1-ubyte \\("):
        load_dataset("mnist", root, download=False)


def test_corrupt_file_in_data_root_is_reported(fake_root):
    root, _ = fake_root
    labels = root / "mnist" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated") as error:
        load_dataset("mnist", root)
    assert str(labels) in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "cifar"}, "name='cifar' is not allowed: name must be one of mnist"),
        ({"split": "70/30"}, "split='70/30' is not allowed"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"subset": 0}, "subset"),
        ({"dtype": np.int32}, "dtype=.* is not allowed: dtype must be a floating NumPy dtype"),
        ({"train_csv": "x.csv"}, "train_csv must be null unless name is csv"),
        ({"name": "csv"}, "train_csv=None is not allowed"),
    ],
)
def test_load_dataset_rejects_bad_options(fake_root, kwargs, problem):
    with pytest.raises(DataError, match=problem):
        load_dataset(**{"name": "mnist", "root": fake_root[0], **kwargs})


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NNLAB_DATA_DIR", str(tmp_path / "here"))
    assert default_data_root() == tmp_path / "here"
    monkeypatch.delenv("NNLAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "nnlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_root() == Path.home() / ".cache" / "nnlab"


# --- CSV and digits datasets ---------------------------------------------------


def test_csv_dataset_with_labelled_test(tmp_path):
    train = fake_digits(200, seed=1)
    test = fake_digits(40, seed=2)
    train_csv = write_csv(tmp_path / "mnist_train.csv", *train)
    test_csv = write_csv(tmp_path / "mnist_test.csv", *test, header=False)
    dataset = load_dataset("csv", train_csv=str(train_csv), test_csv=str(test_csv))
    assert dataset.name == "csv" and dataset.image_shape == (28, 28)
    assert (len(dataset.train.y), len(dataset.val.y), len(dataset.test.y)) == (
        180,
        20,
        40,
    )
    assert np.array_equal(dataset.test.y, test[1])
    assert dataset.source == train_csv.resolve().as_uri()
    assert dataset.files == (train_csv.resolve(), test_csv.resolve())


def csv_folders(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A data root holding mnist_train.csv (100 rows) and mnist_test.csv (30), and an empty working directory."""
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()
    write_csv(root / "mnist_train.csv", *fake_digits(100, seed=1))
    write_csv(root / "mnist_test.csv", *fake_digits(30, seed=2))
    monkeypatch.chdir(cwd)  # whatever the folder pytest started in holds (the README puts mnist_train.csv there)
    return root, cwd


def test_csv_dataset_relative_paths_resolve_under_root(tmp_path, monkeypatch):
    root, _ = csv_folders(tmp_path, monkeypatch)
    dataset = load_dataset("csv", root, train_csv="mnist_train.csv", test_csv="mnist_test.csv")
    assert (len(dataset.train.y), len(dataset.val.y), len(dataset.test.y)) == (90, 10, 30)
    assert dataset.files == ((root / "mnist_train.csv").resolve(), (root / "mnist_test.csv").resolve())
    assert dataset.source == (root / "mnist_train.csv").resolve().as_uri()


def test_csv_dataset_relative_paths_prefer_the_working_directory(tmp_path, monkeypatch):
    """A relative path typed on the command line means the user's folder first; root only where it lacks the file."""
    root, cwd = csv_folders(tmp_path, monkeypatch)
    write_csv(cwd / "mnist_train.csv", *fake_digits(50, seed=3))  # same name as root's, other content
    dataset = load_dataset("csv", root, train_csv="mnist_train.csv", test_csv="mnist_test.csv")
    assert (len(dataset.train.y), len(dataset.val.y), len(dataset.test.y)) == (45, 5, 30)
    assert dataset.files == ((cwd / "mnist_train.csv").resolve(), (root / "mnist_test.csv").resolve())
    in_root = load_dataset("csv", root, train_csv=str(root / "mnist_train.csv"), test_csv="mnist_test.csv")
    assert dataset.checksum != in_root.checksum  # the content read is the working directory's file


def every_pixel_value(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) holding each of 0..255 (the first image all of them, in order), balanced labels (n,)."""
    images, labels = fake_digits(n, seed)
    images.reshape(n, -1)[0, :256] = np.arange(256)
    images[1] = 255  # all white
    images[2] = 0  # all black
    return images, labels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csv_and_idx_give_the_same_pixel_values(tmp_path, dtype):
    """The same images as gzipped IDX files and as CSV files load to value-for-value equal X and y, pixel / 255."""
    train, test = every_pixel_value(60, seed=4), every_pixel_value(20, seed=5)
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for name, array in zip(IDX_NAMES, (*train, *test), strict=True):
        write_idx(root / "mnist" / f"{name}.gz", array, gz=True)
    train_csv = write_csv(tmp_path / "mnist_train.csv", *train)
    test_csv = write_csv(tmp_path / "mnist_test.csv", *test, header=False)
    options = {"val_fraction": 0.25, "seed": 7, "dtype": dtype}
    from_idx = load_dataset("mnist", root, download=False, **options)
    from_csv = load_dataset("csv", root, train_csv=str(train_csv), test_csv=str(test_csv), **options)
    for part in ("train", "val", "test"):
        idx_part, csv_part = getattr(from_idx, part), getattr(from_csv, part)
        assert csv_part.X.dtype == dtype and idx_part.X.dtype == dtype
        np.testing.assert_array_equal(csv_part.X, idx_part.X, err_msg=part)
        np.testing.assert_array_equal(csv_part.y, idx_part.y, err_msg=part)
    # Both against the definition, so that a scaling wrong in both readers fails too.
    np.testing.assert_allclose(from_csv.test.X, test[0].reshape(20, -1) / 255.0, rtol=1e-6, atol=0)
    assert from_csv.test.X[0, 255] == 1.0 and from_csv.test.X[0, 0] == 0.0
    assert np.all(from_csv.test.X[1] == 1.0) and np.all(from_csv.test.X[2] == 0.0)
    assert [len(part.y) for part in (from_csv.train, from_csv.val, from_csv.test)] == [45, 15, 20]


def test_csv_dataset_with_unlabelled_test_has_no_test_split(tmp_path):
    train_csv = write_csv(tmp_path / "train.csv", *fake_digits(100, seed=1))
    test_csv = write_csv(tmp_path / "test.csv", fake_digits(30, seed=2)[0])
    dataset = load_dataset("csv", train_csv=str(train_csv), test_csv=str(test_csv))
    assert dataset.test is None and len(dataset.val.y) == 10
    with pytest.raises(DataError, match="no label column") as error:
        load_dataset("csv", train_csv=str(test_csv))
    assert str(test_csv) in str(error.value)


def test_digits_dataset():
    dataset = load_dataset("digits", val_fraction=0.1)
    parts = (dataset.train, dataset.val, dataset.test)
    assert [len(part.y) for part in parts] == [1294, 144, 359]
    assert dataset.image_shape == (8, 8) and dataset.num_classes == 10
    for part in parts:
        assert part.X.shape[1] == 64 and part.X.dtype == np.float32
        assert part.X.min() == 0.0 and part.X.max() == 1.0
        assert part.y.dtype == np.int64 and set(np.unique(part.y)) == set(range(10))
    assert load_dataset("digits").checksum == dataset.checksum


# --- download, offline ---------------------------------------------------------


def make_mirror(folder: Path) -> tuple[str, dict[str, bytes]]:
    """A file:// mirror of fake gzipped IDX files; returns its URL and the .gz bytes."""
    folder.mkdir(parents=True)
    images, labels = fake_digits(30, seed=0)
    archives = {}
    for name in IDX_NAMES:
        archives[name] = gzip.compress(idx_bytes(labels if "labels" in name else images))
        (folder / f"{name}.gz").write_bytes(archives[name])
    return folder.as_uri() + "/", archives


def checksums_for(archives: dict[str, bytes], algorithm: str, of_content: bool):
    return {
        name: download_module.Checksum(
            algorithm,
            hashlib.new(algorithm, gzip.decompress(data) if of_content else data).hexdigest(),
            of_content,
        )
        for name, data in archives.items()
    }


@pytest.mark.parametrize(
    ("name", "algorithm", "of_content"),
    [("mnist", "sha256", True), ("fashion_mnist", "md5", False)],
)
def test_download_verifies_and_falls_back_to_next_mirror(tmp_path, monkeypatch, name, algorithm, of_content):
    url, archives = make_mirror(tmp_path / "mirror")
    checksums = checksums_for(archives, algorithm, of_content)
    monkeypatch.setitem(download_module.CHECKSUMS, name, checksums)
    dead = (tmp_path / "dead").as_uri() + "/"
    folder = download(name, tmp_path / "root", mirrors=[dead, url])
    assert folder == tmp_path / "root" / name
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)
    for file_name, data in archives.items():
        assert (folder / f"{file_name}.gz").read_bytes() == data
    dataset = load_dataset(name, tmp_path / "root", download=False, val_fraction=0.2)
    assert len(dataset.train.y) == 24 and len(dataset.test.y) == 30


def test_download_checksum_mismatch_discards_file(tmp_path, monkeypatch):
    url, archives = make_mirror(tmp_path / "mirror")
    checksums = checksums_for(archives, "sha256", True)
    monkeypatch.setitem(download_module.CHECKSUMS, "mnist", checksums)
    bad = archives["train-labels-idx1-ubyte"]
    tampered = gzip.compress(gzip.decompress(bad)[:-1] + b"\x03")
    (tmp_path / "mirror" / "train-labels-idx1-ubyte.gz").write_bytes(tampered)
    with pytest.raises(DataError, match="Checksum mismatch.*train-labels") as error:
        download("mnist", tmp_path / "root", mirrors=[url])
    assert "sha256" in str(error.value)
    # train-images went through before the failure; nothing else, no temp file, remains.
    assert [p.name for p in (tmp_path / "root" / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_download_interrupted_leaves_no_partial_file(tmp_path):
    class BrokenStream:
        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection dropped")
            return b"\x1f\x8b partial"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with pytest.raises(DataError, match="connection dropped"):
        download("fashion_mnist", tmp_path, opener=lambda url: BrokenStream())
    assert list((tmp_path / "fashion_mnist").iterdir()) == []


def test_download_skips_present_files_and_rejects_unknown_names(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in IDX_NAMES:
        (folder / name).write_bytes(b"")

    def no_network(url):
        raise AssertionError(f"unexpected fetch of {url}")

    assert download("mnist", tmp_path, opener=no_network) == folder
    with pytest.raises(DataError, match="only .* have mirrors"):
        download("digits", tmp_path)


@needs_real_mnist
def test_download_real_files_from_file_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in IDX_NAMES:
        shutil.copy(REAL_ROOT / f"{name}.gz", mirror)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in IDX_NAMES:  # gzip-valid but wrong content: must fail the SHA-256
        (corrupt / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01"))
    folder = download("mnist", tmp_path, mirrors=[corrupt.as_uri() + "/", mirror.as_uri() + "/"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)
    with pytest.raises(DataError, match="Checksum mismatch"):
        download("mnist", tmp_path / "other", mirrors=[corrupt.as_uri() + "/"])
    assert list((tmp_path / "other" / "mnist").iterdir()) == []


# --- real MNIST ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist() -> Dataset:
    return load_dataset("mnist", download=False)


@needs_real_mnist
def test_real_mnist_holdout(real_mnist):
    dataset = real_mnist
    parts = (dataset.train, dataset.val, dataset.test)
    assert [part.X.shape for part in parts] == [(54000, 784), (6000, 784), (10000, 784)]
    for part in parts:
        assert part.X.dtype == np.float32 and part.y.dtype == np.int64
        assert part.X.min() == 0.0 and part.X.max() == 1.0
        assert part.y.min() == 0 and part.y.max() == 9
    official = read_idx(REAL_ROOT / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(dataset.test.y, official)
    assert dataset.checksum == REAL_MNIST_CHECKSUM


@needs_real_mnist
def test_real_mnist_is_repeatable_and_r0_sizes(real_mnist):
    again = load_dataset("mnist", split="holdout", download=False)
    assert again.checksum == real_mnist.checksum
    assert np.array_equal(again.val.X, real_mnist.val.X)
    assert np.array_equal(again.train.y, real_mnist.train.y)
    r0 = load_dataset("mnist", split="r0", download=False)
    assert [len(p.y) for p in (r0.train, r0.val, r0.test)] == [48000, 6000, 6000]
    assert r0.checksum == REAL_MNIST_CHECKSUM
