"""Data: datasets (MNIST, Fashion-MNIST, CIFAR-10 and a bundled MNIST subset) and a prefetching DataLoader.

    from tinydgl.data import load_dataset, DataLoader
    ds = load_dataset("mnist-small")                   # offline: 4,000 / 1,000 real MNIST digits
    loader = DataLoader(ds.x_train, ds.y_train, 128, mean=ds.mean, std=ds.std)

Where files are looked for and how they are verified: see `datasets`. File formats: `idx`, `cifar`.
"""

from .datasets import DATASETS, Dataset, load_dataset
from .errors import ChecksumError, CifarFormatError, DataFileError, DatasetNotFoundError, DownloadError, IdxFormatError
from .loader import DataLoader

__all__ = [
    "DATASETS",
    "ChecksumError",
    "CifarFormatError",
    "DataFileError",
    "DataLoader",
    "Dataset",
    "DatasetNotFoundError",
    "DownloadError",
    "IdxFormatError",
    "load_dataset",
]
