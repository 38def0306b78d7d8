"""The dataset registry and `load_dataset`: find the files, verify them, download what is missing.

Where files are looked for, in order (for each folder D, first ``D/<dataset>/`` then D itself):

1. the `data_dir` argument (the CLI's ``--data-dir``);
2. ``$TINYDGL_DATA``;
3. the per-user cache, ``$XDG_CACHE_HOME/tinydgl`` or ``~/.cache/tinydgl``;
4. system folders: for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian's
   ``dataset-fashion-mnist`` package).

Missing files are downloaded (unless ``download=False`` or ``TINYDGL_OFFLINE=1``) into the first of 1-3 that
is set, under ``<dataset>/``. Every file found or downloaded is checked against its published SHA-256
before it is parsed; one that fails is reported and never used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import cifar, idx
from .download import RemoteFile, download as download_file, is_offline, sha256_bytes
from .errors import ChecksumError, DataFileError, DatasetNotFoundError, DownloadError, IdxFormatError


@dataclass
class Dataset:
    """A dataset in memory. Images are uint8 (N, C, H, W); labels int64 (N,).

    `mean` / `std` are per-channel statistics of the *training* images scaled to [0, 1]; `DataLoader`
    normalises with them. `source` says where the data was read from.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"classes={self.num_classes}, source={self.source!r})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: how to find, verify and read one dataset, and what to tell people who lack it."""

    name: str
    title: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str = ""  # subfolder of each data directory
    files: tuple[RemoteFile, ...] = ()
    system_dirs: tuple[str, ...] = ()
    how_to_get: tuple[str, ...] = ()
    read: Callable | None = field(default=None, repr=False)  # (info, paths) -> (x_train, y_train, x_test, y_test)


# ---------------------------------------------------------------------------------------------- bundled data

MNIST_SMALL_PATH = Path(__file__).with_name("mnist_small.npz")
# Printed by scripts/make_mnist_small.py, which documents where the digits come from.
MNIST_SMALL_SHA256 = "3ba25ffc5c53bb76268da3ac7b293f49386da9da071a785c0bc43f8c4e8df31a"


def _load_mnist_small(path=MNIST_SMALL_PATH):
    data = Path(path).read_bytes()
    if sha256_bytes(data) != MNIST_SMALL_SHA256:
        raise ChecksumError(
            path,
            "SHA-256",
            f"expected {MNIST_SMALL_SHA256}, got {sha256_bytes(data)}; reinstall tinydgl or "
            "rebuild the file with scripts/make_mnist_small.py",
        )
    with np.load(path, allow_pickle=False) as npz:
        return npz["x_train"], npz["y_train"].astype(np.int64), npz["x_test"], npz["y_test"].astype(np.int64)


# ---------------------------------------------------------------------------------------------- IDX datasets

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _remote(name, sha256, size, mirrors, raw_sha256=None, raw_size=None):
    return RemoteFile(name, sha256, size, tuple(m + name for m in mirrors), raw_sha256, raw_size)


# SHA-256 and sizes of the published .gz files: tensorflow/datasets, tensorflow_datasets/url_checksums/
# mnist.txt and fashion_mnist.txt. The two MNIST mirrors serve identical files (torchvision checks both
# against one MD5). Fashion-MNIST's raw_sha256 (of the decompressed IDX) were computed from Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose .gz files differ from upstream only in the gzip
# header (file name and mtime stripped): with upstream's header restored they hash to the values below.
MNIST_FILES = (
    _remote(
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        9912422,
        MNIST_MIRRORS,
        raw_size=47040016,
    ),
    _remote(
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        28881,
        MNIST_MIRRORS,
        raw_size=60008,
    ),
    _remote(
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        1648877,
        MNIST_MIRRORS,
        raw_size=7840016,
    ),
    _remote(
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        4542,
        MNIST_MIRRORS,
        raw_size=10008,
    ),
)
FASHION_FILES = (
    _remote(
        "train-images-idx3-ubyte.gz",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        26421880,
        FASHION_MIRRORS,
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47040016,
    ),
    _remote(
        "train-labels-idx1-ubyte.gz",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        29515,
        FASHION_MIRRORS,
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60008,
    ),
    _remote(
        "t10k-images-idx3-ubyte.gz",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        4422102,
        FASHION_MIRRORS,
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7840016,
    ),
    _remote(
        "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        5148,
        FASHION_MIRRORS,
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10008,
    ),
)


def read_data_file(path, expected_name=None) -> bytes:
    """The bytes of data file `path`; a `DataFileError` naming the file (never a bare OSError traceback) when
    it cannot be read: a folder where the file should be, no permission, an I/O error."""
    path = Path(path)
    what = expected_name or path.name
    if path.is_dir():
        raise DataFileError(
            path,
            "reading",
            f"this is a folder, but tinydgl expects the file {what} here; "
            "remove or rename the folder and put the file in its place",
        )
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataFileError(
            path,
            "reading",
            f"cannot read the file ({err.strerror or err}); check its permissions "
            f"(chmod u+r) or replace it with a fresh copy of {what}",
        ) from err


def verified_bytes(path, remote: RemoteFile, parse_check: Callable[[bytes], object] | None = None) -> bytes:
    """Read `path` (the published .gz, or its decompressed form) and check it; return the *decompressed* bytes.

    Accepted: the exact published file (SHA-256 of the file), or any gzip or plain file whose decompressed
    content has the published `raw_sha256`. When no raw checksum is known (MNIST) a plain, un-gzipped file can
    only be checked for its structure; that is allowed, with a warning, since many people gunzip MNIST.
    """
    path = Path(path)
    data = read_data_file(path, remote.filename)
    digest = sha256_bytes(data)
    if digest == remote.sha256:
        return idx.decompress_if_gzip(data, path)
    is_gzip = data.startswith(idx.GZIP_MAGIC)
    if is_gzip and remote.raw_sha256 is None:
        raise ChecksumError(
            path,
            "SHA-256",
            f"expected {remote.sha256} (published {remote.filename}), got {digest}; the file is "
            "corrupted, truncated or from another dataset: delete it and get it again",
        )
    raw = idx.decompress_if_gzip(data, path)
    if remote.raw_sha256 is not None:
        raw_digest = sha256_bytes(raw)
        if raw_digest == remote.raw_sha256:
            return raw
        raise ChecksumError(
            path,
            "SHA-256",
            f"neither the file ({digest}) nor its decompressed content ({raw_digest}) matches the "
            f"published {remote.filename} (expected {remote.sha256} or, decompressed, {remote.raw_sha256}); "
            "the file is corrupted, truncated or from another dataset: delete it and get it again",
        )
    if remote.raw_size is not None and len(raw) != remote.raw_size:
        raise ChecksumError(
            path, "size", f"expected {remote.raw_size} bytes (decompressed {remote.filename}), got {len(raw)}"
        )
    warnings.warn(
        f"{path}: no published checksum for the decompressed file, so only its size and IDX structure were "
        f"checked; keep the original {remote.filename} to have it verified.",
        stacklevel=3,
    )
    return raw


def check_label_range(labels, num_classes: int, path, error=IdxFormatError) -> None:
    """Refuse labels outside 0..num_classes-1, naming the file, the first offending value and its index,
    and how many labels are out of range."""
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = int(bad[0])
        raise error(
            path,
            "label range",
            f"labels must be 0..{num_classes - 1} ({num_classes} classes), found "
            f"{labels[first].item()} at index {first} ({bad.size:,} of {labels.size:,} labels out of range); "
            "the file is corrupted or from another dataset",
        )


def _read_idx_dataset(info: DatasetInfo, paths):
    arrays = []
    for remote, path in zip(info.files, paths):
        arrays.append(idx.parse_idx(verified_bytes(path, remote), path))
    x_train, y_train, x_test, y_test = arrays
    for (x, y), (px, py) in (((x_train, y_train), paths[:2]), ((x_test, y_test), paths[2:])):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise IdxFormatError(px, "image shape", f"expected uint8 (N, 28, 28), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise IdxFormatError(
                py, "label count", f"expected {len(x)} labels (one per image in {px}), got shape {y.shape}"
            )
        if y.dtype != np.uint8:
            raise IdxFormatError(
                py, "label type", f"expected uint8 labels (IDX type code 08, as published), got {y.dtype}"
            )
        check_label_range(y, len(info.classes), py)
    return x_train[:, None], y_train.astype(np.int64), x_test[:, None], y_test.astype(np.int64)


# ------------------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_FILES = (
    # tensorflow/datasets, tensorflow_datasets/url_checksums/cifar10.txt
    RemoteFile(
        "cifar-10-binary.tar.gz",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        170052171,
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
)


def _read_cifar10(info: DatasetInfo, paths):
    (path,) = paths
    if Path(path).is_dir():  # an extracted cifar-10-batches-bin/: no published checksums for its members
        warnings.warn(
            f"{path}: extracted CIFAR-10 folder; only its record structure can be checked (keep "
            "cifar-10-binary.tar.gz to have it verified).",
            stacklevel=3,
        )
        return cifar.read_cifar10_folder(path)
    from .download import sha256_file

    try:
        digest = sha256_file(path)
    except OSError as err:
        raise DataFileError(
            path,
            "reading",
            f"cannot read the file ({err.strerror or err}); check its permissions "
            "or replace it with a fresh copy of cifar-10-binary.tar.gz",
        ) from err
    if digest != info.files[0].sha256:
        raise ChecksumError(
            path,
            "SHA-256",
            f"expected {info.files[0].sha256}, got {digest}; the file is corrupted "
            "or truncated: delete it and get it again",
        )
    return cifar.read_cifar10_archive(path)


# ------------------------------------------------------------------------------------------------- registry

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DATASETS: dict[str, DatasetInfo] = {
    "mnist-small": DatasetInfo(
        "mnist-small",
        "MNIST, 5,000-digit subset bundled with tinydgl (4,000 train / 1,000 test)",
        MNIST_CLASSES,
        (0.1307,),
        (0.3081,),  # full MNIST's statistics, so models transfer between the two
    ),
    "mnist": DatasetInfo(
        "mnist",
        "MNIST handwritten digits (60,000 train / 10,000 test)",
        MNIST_CLASSES,
        (0.1307,),
        (0.3081,),
        folder="mnist",
        files=MNIST_FILES,
        read=_read_idx_dataset,
        how_to_get=(f"download them from {MNIST_MIRRORS[0]} (or {MNIST_MIRRORS[1]})",),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        "Fashion-MNIST, Zalando article images (60,000 train / 10,000 test)",
        FASHION_CLASSES,
        (0.2860,),
        (0.3530,),
        folder="fashion-mnist",
        files=FASHION_FILES,
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        read=_read_idx_dataset,
        how_to_get=(
            "on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist "
            "(installs them in /usr/share/datasets/fashion-mnist/, where tinydgl finds them)",
            f"or download them from {FASHION_MIRRORS[0]}",
        ),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10, 32x32 colour images (50,000 train / 10,000 test), binary version",
        cifar.CIFAR10_CLASSES,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        folder="cifar10",
        files=CIFAR10_FILES,
        read=_read_cifar10,
        how_to_get=(
            "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (the *binary* version, "
            "170 MB) and keep it as it is: tinydgl reads it without unpacking",
        ),
    ),
}


# ---------------------------------------------------------------------------------------------- file search


def cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/tinydgl``, else ``~/.cache/tinydgl``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinydgl"


def search_dirs(info: DatasetInfo, data_dir=None) -> list[tuple[Path, str]]:
    """The folders searched for `info`'s files, in order, each with a short note on why it is searched."""
    roots = []
    if data_dir is not None:
        roots.append((Path(data_dir), "data_dir / --data-dir"))
    if os.environ.get("TINYDGL_DATA"):
        roots.append((Path(os.environ["TINYDGL_DATA"]), "$TINYDGL_DATA"))
    roots.append((cache_dir(), "per-user cache"))
    dirs = []
    for root, why in roots:
        dirs += [(root / info.folder, why), (root, why)] if info.folder else [(root, why)]
    dirs += [(Path(d), "system data folder") for d in info.system_dirs]
    return dirs


def download_dir(info: DatasetInfo, data_dir=None) -> Path:
    """Where missing files are downloaded to: ``<first of data_dir, $TINYDGL_DATA, cache>/<dataset>/``."""
    root = data_dir if data_dir is not None else os.environ.get("TINYDGL_DATA") or cache_dir()
    return Path(root) / info.folder


def _candidates(remote: RemoteFile) -> list[str]:
    names = [remote.filename]
    if remote.filename.endswith(".tar.gz"):
        names.append("cifar-10-batches-bin")  # extracted archive
    elif remote.filename.endswith(".gz"):
        names.append(remote.filename[:-3])  # gunzipped
    return names


def find_file(remote: RemoteFile, dirs) -> Path | None:
    for folder, _ in dirs:
        for name in _candidates(remote):
            if (folder / name).exists():
                return folder / name
    return None


def _not_found_message(info, missing, dirs, target, why_no_download) -> str:
    seen, where = set(), []
    for folder, why in dirs:
        if folder not in seen:
            seen.add(folder)
            where.append(f"    {folder}  ({why})")
    lines = [
        f"Dataset {info.name!r} ({info.title}) is not available: {len(missing)} of {len(info.files)} files missing.",
        "Expected files"
        + (" (gzipped as published; un-gzipped copies are accepted too):" if info.read is _read_idx_dataset else ":"),
        *[f"    {r.filename}  ({r.size:,} bytes, sha256 {r.sha256})" for r in missing],
        "Looked in:",
        *where,
        f"Download: {why_no_download}",
        "To get them:",
        *[f"  - {step}" for step in info.how_to_get],
        f"  - put the files in {target}/ (or pass --data-dir DIR, or set TINYDGL_DATA=DIR)",
        "  - or run with network access (without TINYDGL_OFFLINE=1) and tinydgl downloads and verifies them.",
        "To run offline right now, use the bundled dataset 'mnist-small' (5,000 real MNIST digits).",
    ]
    return "\n".join(lines)


def locate_files(info: DatasetInfo, data_dir=None, download=True, progress=True) -> list[Path]:
    """Paths of `info`'s files, downloading missing ones if allowed; `DatasetNotFoundError` if impossible."""
    dirs = search_dirs(info, data_dir)
    paths = [find_file(remote, dirs) for remote in info.files]
    missing = [remote for remote, path in zip(info.files, paths) if path is None]
    if not missing:
        return paths
    target = download_dir(info, data_dir)
    if not download:
        why = "not tried (download=False)"
    elif is_offline():
        why = "not tried (offline mode: TINYDGL_OFFLINE is set)"
    else:
        failures = []
        for i, remote in enumerate(info.files):
            if paths[i] is None:
                try:
                    paths[i] = download_file(remote, target, progress=progress)
                except (DownloadError, OSError) as err:
                    failures.append(str(err))
        if not failures:
            return paths
        missing = [remote for remote, path in zip(info.files, paths) if path is None]
        why = "failed:\n    " + "\n    ".join("\n    ".join(f.splitlines()) for f in failures)
    raise DatasetNotFoundError(_not_found_message(info, missing, dirs, target, why))


# ------------------------------------------------------------------------------------------------ loading


def stratified_head(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of a deterministic, class-balanced subset of size `n` (sorted): the first examples of each
    class, taken round-robin (k-th of every class before the (k+1)-th of any), so no randomness is involved."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts  # position of each example within its class
    chosen = np.lexsort((np.arange(len(labels)), rank))[:n]
    return np.sort(chosen)


def load_dataset(name: str, data_dir=None, download=True, limit_train=None, limit_test=None, progress=True) -> Dataset:
    """Load dataset `name` ("mnist-small", "mnist", "fashion-mnist" or "cifar10") into memory.

    Files are found, verified and (if `download` and not offline) downloaded as the module docstring says.
    `limit_train` / `limit_test` keep a deterministic class-balanced subset (see `stratified_head`), for
    quick runs. Raises ValueError for an unknown name, `DatasetNotFoundError` when the files cannot be had,
    and a `DataFileError` (ChecksumError, IdxFormatError, CifarFormatError) naming a file that fails a check.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    info = DATASETS[key]
    if info.read is None:  # bundled
        x_train, y_train, x_test, y_test = _load_mnist_small()
        source = str(MNIST_SMALL_PATH)
    else:
        paths = locate_files(info, data_dir, download, progress)
        x_train, y_train, x_test, y_test = info.read(info, paths)
        source = ", ".join(sorted({str(Path(p).parent) for p in paths}))
    dataset = Dataset(info.name, x_train, y_train, x_test, y_test, info.classes, info.mean, info.std, source)
    if limit_train is not None:
        keep = stratified_head(dataset.y_train, int(limit_train))
        dataset = replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep])
    if limit_test is not None:
        keep = stratified_head(dataset.y_test, int(limit_test))
        dataset = replace(dataset, x_test=dataset.x_test[keep], y_test=dataset.y_test[keep])
    return dataset
