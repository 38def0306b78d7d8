"""IDX parsing on small files written here in the real format: good (gz or not), truncated, bad magic,
wrong checksum."""

import gzip

import numpy as np
import pytest

from tinydgl.data import ChecksumError, IdxFormatError
from tinydgl.data.datasets import verified_bytes
from tinydgl.data.download import RemoteFile, sha256_bytes
from tinydgl.data.idx import parse_idx, read_idx, write_idx


def images(n=5):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path, name):
    x = images()
    path = write_idx(tmp_path / name, x)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    np.testing.assert_array_equal(read_idx(path), x)


def test_header_is_the_mnist_one(tmp_path):
    data = write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8)).read_bytes()
    assert data[:8] == bytes([0, 0, 0x08, 1, 0, 0, 0, 10])  # MNIST's label header, big-endian count


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
def test_multibyte_types_are_big_endian_on_disk(tmp_path, dtype):
    x = np.arange(-3, 9).astype(dtype).reshape(3, 4)
    path = write_idx(tmp_path / "x.idx", x)
    assert path.read_bytes()[-x.itemsize :] == np.asarray(8, dtype=np.dtype(dtype).newbyteorder(">")).tobytes()
    out = read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, x)


def test_gzip_detected_from_content_not_name(tmp_path):
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(write_idx(tmp_path / "raw", images()).read_bytes()))
    np.testing.assert_array_equal(read_idx(path), images())


def test_truncated_plain_file_names_file_and_check(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match="IDX size.*truncated") as info:
        read_idx(path)
    assert info.value.path == str(path) and info.value.check == "IDX size"


def test_trailing_bytes_rejected():
    data = write_idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00"
    with pytest.raises(IdxFormatError, match="trailing"):
        parse_idx(data, "x")


def test_truncated_gzip_file(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images(50))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(IdxFormatError, match="gzip decompression") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupted_gzip_fails_its_crc(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((100, 28, 28), np.uint8))
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC-32 trailer
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match="gzip decompression"):
        read_idx(path)


@pytest.mark.parametrize(
    "header", [b"\x01\x00\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00\x08\x00", b"PK\x03\x04", b"\x00\x00"]
)
def test_bad_magic(header):
    with pytest.raises(IdxFormatError, match="IDX magic number|IDX header"):
        parse_idx(header + bytes(12), "file.idx")


def test_header_cut_short():
    with pytest.raises(IdxFormatError, match="IDX header"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0, 0, 1]), "file.idx")


def write_idx_bytes(array):
    return bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


def test_checksum_accepts_published_file_and_its_decompressed_form(tmp_path):
    raw = write_idx_bytes(images())
    gz = gzip.compress(raw, mtime=0)
    remote = RemoteFile("x.gz", sha256_bytes(gz), len(gz), (), sha256_bytes(raw), len(raw))
    (tmp_path / "x.gz").write_bytes(gz)
    (tmp_path / "x").write_bytes(raw)
    (tmp_path / "recompressed.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=1))  # like Debian's
    for name in ("x.gz", "x", "recompressed.gz"):
        assert verified_bytes(tmp_path / name, remote) == raw


def test_wrong_checksum_is_an_error_naming_file_and_check(tmp_path):
    raw = write_idx_bytes(images())
    good = gzip.compress(raw, mtime=0)
    remote = RemoteFile("x.gz", sha256_bytes(good), len(good), (), sha256_bytes(raw), len(raw))
    tampered = bytearray(raw)
    tampered[500] ^= 1  # one pixel: still a valid IDX file, so only the checksum can notice
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes(tampered)))
    with pytest.raises(ChecksumError, match="SHA-256") as info:
        verified_bytes(path, remote)
    assert info.value.path == str(path)
    # Without a known raw checksum (MNIST), a .gz that is not the published one is rejected too.
    with pytest.raises(ChecksumError, match=remote.sha256):
        verified_bytes(path, RemoteFile("x.gz", remote.sha256, remote.size, ()))


def test_plain_file_without_raw_checksum_is_size_checked_and_warned(tmp_path):
    raw = write_idx_bytes(images())
    remote = RemoteFile("x.gz", "0" * 64, 1, (), raw_size=len(raw))
    (tmp_path / "x").write_bytes(raw)
    with pytest.warns(UserWarning, match="only its size and IDX structure"):
        assert verified_bytes(tmp_path / "x", remote) == raw
    (tmp_path / "x").write_bytes(raw[:-1])
    with pytest.raises(ChecksumError, match="size"):
        verified_bytes(tmp_path / "x", remote)
