"""Data layer: MNIST, Fashion-MNIST, scikit-learn digits and MNIST CSV files.

Start with :func:`load_dataset`; it returns a :class:`Dataset` of train, val
and test :class:`Split` parts. Every data problem raises :class:`DataError`.
"""

from .csv import read_mnist_csv
from .datasets import Dataset, Split, default_data_root, load_dataset
from .download import download
from .idx import DataError, DataOptionError, load_idx_pair, read_idx
from .splits import stratified_split

__all__ = [
    "DataError",
    "DataOptionError",
    "Dataset",
    "Split",
    "default_data_root",
    "download",
    "load_dataset",
    "load_idx_pair",
    "read_idx",
    "read_mnist_csv",
    "stratified_split",
]
