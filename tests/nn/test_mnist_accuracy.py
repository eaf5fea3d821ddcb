"""End-to-end: wide1024 (784-1024-10) trained on full MNIST reaches > 97.5% test accuracy."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from nn.clipping import ClipByValue
from nn.network import mlp
from nn.optimizers import SGD
from nn.training import Trainer

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EPOCHS = 3


def mnist_folder() -> Path:
    if not os.environ.get("NNLAB_DATA_DIR"):
        pytest.skip("NNLAB_DATA_DIR is unset: point it at a folder holding mnist/*.gz to run the MNIST accuracy test")
    folder = Path(os.environ["NNLAB_DATA_DIR"]) / "mnist"
    missing = [f"{name}.gz" for name in FILES if not (folder / f"{name}.gz").is_file()]
    if missing:
        pytest.skip(f"MNIST files absent from {folder}: {', '.join(missing)}")
    return folder


def read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(folder: Path):
    try:
        from nn.data import load_dataset
    except ImportError:
        images, labels, test_images, test_labels = (read_idx_gz(folder / f"{name}.gz") for name in FILES)
        scale = np.float32(1 / 255)
        return (
            images.reshape(len(images), -1).astype(np.float32) * scale,
            labels.astype(np.int64),
            test_images.reshape(len(test_images), -1).astype(np.float32) * scale,
            test_labels.astype(np.int64),
        )
    data = load_dataset("mnist", root=folder.parent, download=False)
    X = np.concatenate([data.train.X, data.val.X])
    y = np.concatenate([data.train.y, data.val.y])
    return X, y, data.test.X, data.test.y


@pytest.mark.slow
def test_wide1024_reaches_975_percent_on_mnist_test_set():
    X, y, X_test, y_test = load_mnist(mnist_folder())
    assert X.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X.dtype == np.float32 and 0.0 <= X.min() and X.max() <= 1.0
    rng = np.random.default_rng(0)
    net = mlp([784, 1024, 10], init="he_normal", rng=rng)
    optimizer = SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)
    trainer = Trainer(net, optimizer, clipper=ClipByValue(5.0), batch_size=128, rng=rng)
    for epoch in range(EPOCHS):
        trainer.train_epoch(X, y, epoch)
    _, accuracy = net.evaluate(X_test, y_test)
    assert accuracy > 0.975, f"test accuracy {accuracy:.4f} after {EPOCHS} epochs"
