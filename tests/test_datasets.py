"""load_dataset: the bundled mnist-small, Fashion-MNIST from Debian's package, limits, unknown names, and the
error for missing data."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinydgl.data import DATASETS, ChecksumError, DatasetNotFoundError, load_dataset
from tinydgl.data import datasets as ds

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user cache, no $TINYDGL_DATA, no network, no system folders: only what the test puts in place."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYDGL_DATA", raising=False)
    monkeypatch.setenv("TINYDGL_OFFLINE", "1")
    for name, info in DATASETS.items():
        monkeypatch.setitem(DATASETS, name, ds.replace(info, system_dirs=()))
    return tmp_path


def test_mnist_small_shapes_types_and_balance():
    data = load_dataset("mnist-small")
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert np.bincount(data.y_train).tolist() == [400] * 10 and np.bincount(data.y_test).tolist() == [100] * 10
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    # Real digits: mostly black background, mean near MNIST's 0.1307.
    assert 0.10 < data.x_train.mean() / 255 < 0.16 and data.x_train.max() == 255
    # Train and test hold different images.
    train = {row.tobytes() for row in data.x_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train for row in data.x_test.reshape(1000, -1))


def test_mnist_small_checksum_is_checked(tmp_path, monkeypatch):
    copy = tmp_path / "mnist_small.npz"
    data = bytearray(ds.MNIST_SMALL_PATH.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="SHA-256"):
        ds._load_mnist_small(copy)


def test_limits_are_deterministic_and_class_balanced():
    data = load_dataset("mnist-small", limit_train=250, limit_test=30)
    assert len(data.x_train) == 250 and len(data.y_test) == 30
    assert np.bincount(data.y_train).tolist() == [25] * 10
    again = load_dataset("mnist-small", limit_train=250)
    np.testing.assert_array_equal(again.x_train, data.x_train)


def test_stratified_head_with_uneven_classes():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 5)
    chosen = ds.stratified_head(labels, 9)
    assert np.bincount(labels[chosen]).tolist() == [4, 2, 3] and (np.diff(chosen) > 0).all()


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="mnist-small, mnist, fashion-mnist, cifar10"):
        load_dataset("imagenet")


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (sudo apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TINYDGL_DATA", raising=False)
    monkeypatch.setenv("TINYDGL_OFFLINE", "1")
    data = load_dataset("fashion-mnist")
    assert data.source == str(DEBIAN_FASHION)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert abs(data.x_train.mean() / 255 - data.mean[0]) < 1e-3 and abs(data.x_train.std() / 255 - data.std[0]) < 1e-3


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_error_says_what_where_and_how(isolated, name):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=empty)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for remote in DATASETS[name].files:  # which files
        assert remote.filename in message
    assert str(empty / DATASETS[name].folder) in message and str(isolated / "cache" / "tinydgl") in message  # where
    assert "TINYDGL_OFFLINE" in message and "mnist-small" in message  # why no download; what works offline
    assert DATASETS[name].files[0].urls[0].rsplit("/", 1)[0] in message  # how to get them
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message


def test_partial_copy_names_only_the_missing_files(isolated):
    if not DEBIAN_FASHION.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist for real files")
    folder = isolated / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(DEBIAN_FASHION / name, folder / name)
    with pytest.raises(DatasetNotFoundError, match="2 of 4 files missing") as info:
        load_dataset("fashion-mnist", data_dir=isolated / "data")
    assert (
        "t10k-images-idx3-ubyte.gz" in str(info.value) and "train-images" not in str(info.value).split("Looked in")[0]
    )


def test_corrupted_file_is_reported_not_used(isolated):
    """A file in place but broken: the error names it and the check; no fallback to another copy."""
    folder = isolated / "data" / "mnist"
    folder.mkdir(parents=True)
    for remote in DATASETS["mnist"].files:
        (folder / remote.filename).write_bytes(b"\x1f\x8b" + os.urandom(100))
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=isolated / "data")
    assert info.value.path == str(folder / "train-images-idx3-ubyte.gz") and info.value.check == "SHA-256"
