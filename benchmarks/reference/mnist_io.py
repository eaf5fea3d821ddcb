"""Load the MNIST IDX files kept in shared/data/mnist (reference helper for the benchmark scripts beside it).

In the nnlab repo: $NNLAB_DATA_DIR/mnist (experiments/bench_speed.py sets it), else ../shared/data/mnist
beside the clone, the folder experiments/bench_speed.py reads too."""
import gzip
import os
import numpy as np

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ROOT = os.path.join(os.environ.get("NNLAB_DATA_DIR") or os.path.join(_REPO, "..", "shared", "data"), "mnist")


def _idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def load(root=ROOT):
    f = lambda n: _idx(os.path.join(root, n))
    xtr = f("train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    ytr = f("train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = f("t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    yte = f("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return xtr, ytr, xte, yte
