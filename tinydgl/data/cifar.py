"""Reading CIFAR-10's *binary* distribution, ``cifar-10-binary.tar.gz``, without unpacking it to disk.

The format (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): the archive holds
``cifar-10-batches-bin/data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and ``test_batch.bin``, each
10,000 records of 3,073 bytes:

    <1 byte label 0..9> <1024 bytes red> <1024 bytes green> <1024 bytes blue>

each colour plane 32x32 in row-major order, so a record is already a (3, 32, 32) image in the (C, H, W)
layout tinydgl uses. We read the binary files, never the Python version's pickles: unpickling a downloaded
file can run arbitrary code.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .errors import CifarFormatError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_BATCH = 10_000
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCHES = ("test_batch.bin",)
ARCHIVE_FOLDER = "cifar-10-batches-bin"


def parse_cifar_batch(data: bytes, source="<bytes>", records: int | None = RECORDS_PER_BATCH):
    """Bytes of one batch file -> (x uint8 (N, 3, 32, 32), y int64 (N,)).

    `records`: the number of records the file must hold (10,000 in the real data; None accepts any whole
    number, which the tests use for small files).
    """
    if len(data) % RECORD_BYTES != 0 or len(data) == 0:
        raise CifarFormatError(
            source, "batch size", f"{len(data)} bytes is not a whole number of {RECORD_BYTES}-byte records (truncated?)"
        )
    count = len(data) // RECORD_BYTES
    if records is not None and count != records:
        raise CifarFormatError(source, "batch size", f"expected {records} records, found {count}")
    table = np.frombuffer(data, dtype=np.uint8).reshape(count, RECORD_BYTES)
    labels = table[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise CifarFormatError(
            source, "label byte", f"record {bad} has label {labels[bad]}, expected 0..9 (not a CIFAR-10 binary batch?)"
        )
    images = table[:, 1:].reshape((count,) + IMAGE_SHAPE).copy()
    return images, labels


def _concatenate(batches):
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def read_cifar10_archive(path, records: int | None = RECORDS_PER_BATCH):
    """Read ``cifar-10-binary.tar.gz`` (or an uncompressed .tar) -> (x_train, y_train, x_test, y_test).

    Members are read from the archive in memory; nothing is extracted, and only the six batch files are read
    (a member's folder is ignored, so a re-packed archive works too).
    """
    path = Path(path)
    wanted = TRAIN_BATCHES + TEST_BATCHES
    found = {}
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile() and name not in found:
                    found[name] = parse_cifar_batch(
                        archive.extractfile(member).read(), f"{path}:{member.name}", records
                    )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise CifarFormatError(path, "tar.gz archive", f"{err} (the file is corrupted or truncated)") from err
    missing = [name for name in wanted if name not in found]
    if missing:
        raise CifarFormatError(
            path,
            "archive contents",
            f"missing {', '.join(missing)}; expected {ARCHIVE_FOLDER}/ with {', '.join(wanted)}",
        )
    return (*_concatenate([found[n] for n in TRAIN_BATCHES]), *_concatenate([found[n] for n in TEST_BATCHES]))


def read_cifar10_folder(folder, records: int | None = RECORDS_PER_BATCH):
    """Read an already-extracted ``cifar-10-batches-bin/`` folder -> (x_train, y_train, x_test, y_test)."""
    folder = Path(folder)
    missing = [name for name in TRAIN_BATCHES + TEST_BATCHES if not (folder / name).is_file()]
    if missing:
        raise CifarFormatError(folder, "folder contents", f"missing {', '.join(missing)}")
    train = [parse_cifar_batch((folder / n).read_bytes(), folder / n, records) for n in TRAIN_BATCHES]
    test = [parse_cifar_batch((folder / n).read_bytes(), folder / n, records) for n in TEST_BATCHES]
    return (*_concatenate(train), *_concatenate(test))


def write_cifar10_archive(path, x_train, y_train, x_test, y_test) -> Path:
    """Write arrays as a CIFAR-10 binary archive (train split evenly over 5 batches). For tests and subsets."""
    path = Path(path)

    def records(x, y):
        return np.concatenate(
            [np.asarray(y, np.uint8)[:, None], np.asarray(x, np.uint8).reshape(len(x), -1)], axis=1
        ).tobytes()

    parts = np.array_split(np.arange(len(x_train)), len(TRAIN_BATCHES))
    members = {n: records(x_train[idx], y_train[idx]) for n, idx in zip(TRAIN_BATCHES, parts)}
    members[TEST_BATCHES[0]] = records(x_test, y_test)
    with tarfile.open(path, mode="w:gz" if path.name.endswith("gz") else "w") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"{ARCHIVE_FOLDER}/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path
