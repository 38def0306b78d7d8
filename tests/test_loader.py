"""DataLoader: each example once per epoch, reshuffled per epoch, deterministic from (seed, epoch) alone,
augmentation, normalisation, device transfer, and a background thread that reports errors and stops."""

import threading
import time

import numpy as np
import pytest

import tinydgl
from tinydgl.backend import to_numpy
from tinydgl.data import DataLoader
from tinydgl.data.loader import random_crop, random_hflip


def toy(n=103, channels=1, size=8):
    """Images whose pixels all equal their index mod 256, labels = index: a batch says which examples it holds."""
    x = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, channels, size, size), np.uint8)
    return x, np.arange(n)


def labels_of(loader):
    return [to_numpy(y).tolist() for _, y in loader]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_example_once_per_epoch(prefetch):
    x, y = toy()
    loader = DataLoader(x, y, batch_size=10, prefetch=prefetch)
    batches = labels_of(loader)
    assert len(batches) == len(loader) == 11 and [len(b) for b in batches][-1] == 3
    assert sorted(sum(batches, [])) == list(range(103))


def test_drop_last():
    x, y = toy()
    batches = labels_of(DataLoader(x, y, batch_size=10, drop_last=True))
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)


def test_reshuffled_every_epoch_and_not_sorted():
    x, y = toy()
    loader = DataLoader(x, y, batch_size=103, seed=3)
    first, second = labels_of(loader)[0], labels_of(loader)[0]
    assert first != second and first != list(range(103)) and sorted(first) == sorted(second)


def test_no_shuffle_keeps_order():
    x, y = toy()
    assert sum(labels_of(DataLoader(x, y, batch_size=7, shuffle=False)), []) == list(range(103))


def test_same_seed_same_batches_different_seed_different():
    x, y = toy()
    a = [to_numpy(b) for b, _ in DataLoader(x, y, 16, seed=1, augment=True)]
    b = [to_numpy(b) for b, _ in DataLoader(x, y, 16, seed=1, augment=True, prefetch=0)]
    c = [to_numpy(b) for b, _ in DataLoader(x, y, 16, seed=2, augment=True)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_epoch_k_does_not_depend_on_earlier_epochs_having_run():
    """Exact resume after a crash: a fresh loader told `set_epoch(2)` serves what epoch 2 served in one run."""
    x, y = toy(channels=3)
    kwargs = dict(batch_size=16, seed=5, augment=True, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    straight = DataLoader(x, y, **kwargs)
    epochs = [[(to_numpy(a), to_numpy(b)) for a, b in straight] for _ in range(3)]
    resumed = DataLoader(x, y, **kwargs)
    resumed.set_epoch(2)
    again = [(to_numpy(a), to_numpy(b)) for a, b in resumed]
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(epochs[2], again))
    resumed.set_epoch(2, start_batch=4)  # resume mid-epoch
    tail = [to_numpy(b) for _, b in resumed]
    assert len(tail) == len(resumed) - 4 and all(np.array_equal(p[1], q) for p, q in zip(epochs[2][4:], tail))


def test_normalisation_and_dtype():
    x = np.full((4, 3, 2, 2), 255, np.uint8)
    x[:, 1] = 0
    loader = DataLoader(x, np.zeros(4), 4, mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 1.0))
    ((xb, yb),) = list(loader)
    xb = to_numpy(xb)
    assert xb.dtype == np.float32 and to_numpy(yb).dtype == np.int64
    np.testing.assert_allclose(xb[:, 0], 1.0, rtol=1e-6)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(xb[:, 1], -2.0, rtol=1e-6)  # (0 - 0.5) / 0.25
    np.testing.assert_allclose(xb[:, 2], 1.0, rtol=1e-6)
    assert to_numpy(next(iter(DataLoader(x, np.zeros(4), 4)))[0]).max() == 1.0  # without stats: x / 255


def test_random_crop_shifts_content_and_pads_with_zeros():
    x = np.zeros((200, 1, 8, 8), np.uint8)
    x[:, :, 3, 3] = 9  # one lit pixel
    out = random_crop(x, 4, np.random.default_rng(0))
    assert out.shape == x.shape
    lit = out.reshape(200, -1).sum(axis=1)
    assert set(lit.tolist()) <= {0, 9} and 0 in lit and 9 in lit  # sometimes cropped away, never duplicated
    positions = {tuple(np.argwhere(o[0])[0]) for o in out if o.any()}
    assert len(positions) > 10  # many different shifts


def test_random_hflip_mirrors_about_half():
    x = np.arange(2 * 8, dtype=np.uint8).reshape(1, 1, 2, 8).repeat(400, axis=0)
    out = random_hflip(x, np.random.default_rng(0))
    flipped = np.array([np.array_equal(o, x[0, :, :, ::-1]) for o in out])
    unchanged = np.array([np.array_equal(o, x[0]) for o in out])
    assert (flipped | unchanged).all() and 150 < flipped.sum() < 250


def test_batches_land_on_the_active_backend():
    xps = pytest.importorskip("array_api_strict")
    device = xps.Device("device1")
    x, y = toy()
    with tinydgl.use_backend("array_api_strict", device):
        xb, yb = next(iter(DataLoader(x, y, 8, dtype="float64")))
    assert xb.device == device and yb.device == device and xb.dtype == xps.float64


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "tinydgl-DataLoader"]


def test_exception_in_thread_surfaces_in_caller():
    x, y = toy()
    loader = DataLoader(x, y, 10, prefetch=2)

    def broken(indices, epoch, batch, stream=0):
        if batch == 3:
            raise RuntimeError("augmentation exploded")
        return x[indices].astype(np.float32), y[indices]

    loader.make_batch = broken
    seen = 0
    with pytest.raises(RuntimeError, match="augmentation exploded"):
        for _ in loader:
            seen += 1
    assert seen == 3
    wait_for_no_threads()


def wait_for_no_threads():
    for _ in range(100):
        if not loader_threads():
            return
        time.sleep(0.01)
    assert not loader_threads(), "the prefetch thread outlived its iterator"


def test_thread_stops_when_iterator_is_abandoned():
    x, y = toy(n=1000)
    loader = DataLoader(x, y, 10, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break  # the queue is full and the thread is blocked on put()
    wait_for_no_threads()
    it = iter(loader)
    next(it)
    assert loader_threads()
    it.close()
    wait_for_no_threads()


def test_bad_arguments_say_what_is_wrong():
    x, y = toy()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        DataLoader(x[:, 0], y, 4)
    with pytest.raises(ValueError, match="103 examples but y has 5"):
        DataLoader(x, y[:5], 4)
    with pytest.raises(ValueError, match="3 values; the images have 1 channels"):
        DataLoader(x, y, 4, mean=(0.1, 0.2, 0.3))
