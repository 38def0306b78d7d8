"""CIFAR-10 binary archives written here in the real format: good, truncated, incomplete, bad label byte,
wrong checksum."""

import io
import tarfile

import numpy as np
import pytest

from tinydgl.data import ChecksumError, CifarFormatError
from tinydgl.data import datasets as ds
from tinydgl.data.cifar import (
    RECORD_BYTES,
    parse_cifar_batch,
    read_cifar10_archive,
    read_cifar10_folder,
    write_cifar10_archive,
)


def arrays(n_train=10, n_test=4):
    rng = np.random.default_rng(1)
    return (
        rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, n_test),
    )


def test_record_layout_is_label_then_rgb_planes():
    image = np.zeros((3, 32, 32), np.uint8)
    image[0, 0, 1], image[1, 2, 0], image[2, 31, 31] = 11, 22, 33  # red (0, 1), green (2, 0), blue (31, 31)
    record = bytes([7]) + image.tobytes()
    assert len(record) == RECORD_BYTES
    x, y = parse_cifar_batch(record, "b", records=None)
    assert y.tolist() == [7] and y.dtype == np.int64
    assert record[1 + 1] == 11 and record[1 + 1024 + 2 * 32] == 22 and record[-1] == 33
    np.testing.assert_array_equal(x[0], image)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar"])
def test_archive_round_trip(tmp_path, suffix):
    xtr, ytr, xte, yte = arrays()
    path = write_cifar10_archive(tmp_path / f"cifar-10-binary{suffix}", xtr, ytr, xte, yte)
    out = read_cifar10_archive(path, records=None)
    for got, want in zip(out, (xtr, ytr, xte, yte)):
        np.testing.assert_array_equal(got, want)
    assert not (tmp_path / "cifar-10-batches-bin").exists()  # read in memory, nothing extracted


def test_record_count_is_enforced(tmp_path):
    path = write_cifar10_archive(tmp_path / "c.tar.gz", *arrays())
    with pytest.raises(CifarFormatError, match="expected 10000 records"):
        read_cifar10_archive(path)  # the real files hold 10,000 records each


def test_truncated_member(tmp_path):
    xtr, ytr, xte, yte = arrays()
    path = tmp_path / "c.tar.gz"
    blob = bytes(RECORD_BYTES * 2 - 5)
    with tarfile.open(path, "w:gz") as archive:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            data = blob if name == "data_batch_3.bin" else bytes(RECORD_BYTES)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(CifarFormatError, match="data_batch_3.bin: batch size failed.*truncated"):
        read_cifar10_archive(path, records=None)


def test_truncated_archive(tmp_path):
    path = write_cifar10_archive(tmp_path / "c.tar.gz", *arrays(200, 50))
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(CifarFormatError, match="tar.gz archive failed") as info:
        read_cifar10_archive(path, records=None)
    assert info.value.path == str(path)


def test_missing_member(tmp_path):
    path = tmp_path / "c.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = RECORD_BYTES
        archive.addfile(info, io.BytesIO(bytes(RECORD_BYTES)))
    with pytest.raises(CifarFormatError, match="missing data_batch_2.bin"):
        read_cifar10_archive(path, records=None)


def test_not_an_archive(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CifarFormatError, match="tar.gz archive"):
        read_cifar10_archive(path)


def test_bad_label_byte():
    record = bytes([10]) + bytes(RECORD_BYTES - 1)
    with pytest.raises(CifarFormatError, match="label byte.*record 1 has label 10"):
        parse_cifar_batch(bytes(RECORD_BYTES) + record, "b", records=None)


def test_extracted_folder(tmp_path):
    xtr, ytr, xte, yte = arrays()
    path = write_cifar10_archive(tmp_path / "c.tar", xtr, ytr, xte, yte)
    with tarfile.open(path) as archive:
        archive.extractall(tmp_path, filter="data")
    x, y, _, _ = read_cifar10_folder(tmp_path / "cifar-10-batches-bin", records=None)
    np.testing.assert_array_equal(x, xtr)


def test_load_dataset_rejects_archive_with_wrong_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYDGL_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYDGL_DATA", raising=False)
    path = write_cifar10_archive(tmp_path / "cifar-10-binary.tar.gz", *arrays())
    with pytest.raises(ChecksumError, match="SHA-256.*expected c4a38c50") as info:
        ds.load_dataset("cifar10", data_dir=tmp_path)
    assert info.value.path == str(path)
