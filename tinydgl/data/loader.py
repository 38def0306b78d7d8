"""`DataLoader`: shuffled, augmented, normalised mini-batches on the active backend, prepared in the background.

    loader = DataLoader(ds.x_train, ds.y_train, batch_size=128, seed=0, augment=True, mean=ds.mean, std=ds.std)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for x, y in loader:          # x: float32 (B, C, H, W) on the active backend's device; y: int64 (B,)
            ...

Everything random about epoch e is drawn from (seed, e[, batch]) alone, so `set_epoch(k)` (and
`start_batch`) reproduces epoch k exactly after a crash. `fresh_pass` serves another pass for batch-norm
recalibration; with `prefetch > 0` a thread prepares the next batches while the caller computes.
Design notes (reproducibility, extra passes, the prefetch thread): docs/design/data-loader.md.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from ..backend import asarray

_DONE = object()


class DataLoader:
    """Mini-batches of (x, y) from uint8 images `x` (N, C, H, W) and integer labels `y` (N,).

    batch_size: examples per batch; the last one is smaller unless `drop_last`.
    shuffle, seed: a new order every epoch, derived from (seed, epoch).
    augment: random crop (zero padding `crop_padding`, 4 by default, as in the ResNet/DGL CIFAR recipes)
        and, when `hflip`, a horizontal flip with probability 1/2. Off by default; switch `hflip` off for
        digits, whose mirror images are other shapes.
    mean, std: per-channel statistics in [0, 1] units; each batch becomes (x / 255 - mean) / std. If None,
        just x / 255.
    prefetch: batches prepared ahead by a background thread (0: no thread, prepare on demand).
    dtype: the float dtype of the x batches on the device; labels are int64.
    """

    def __init__(
        self,
        x,
        y,
        batch_size,
        shuffle=True,
        seed=0,
        augment=False,
        mean=None,
        std=None,
        drop_last=False,
        prefetch=2,
        dtype="float32",
        crop_padding=4,
        hflip=True,
    ):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 4:
            raise ValueError(f"x must be images (N, C, H, W), got shape {x.shape}.")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)} labels.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if drop_last and len(x) < batch_size:
            raise ValueError(f"drop_last with {len(x)} examples and batch_size {batch_size} would give no batch.")
        self.x, self.y = x, y.astype(np.int64, copy=False)
        self.batch_size, self.shuffle, self.seed, self.drop_last = int(batch_size), shuffle, seed, drop_last
        self.augment, self.crop_padding, self.hflip = augment, int(crop_padding), hflip
        self.prefetch, self.dtype = int(prefetch), dtype
        channels = x.shape[1]
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        for stat, label in ((self.mean, "mean"), (self.std, "std")):
            if stat is not None and stat.shape[1] not in (1, channels):
                raise ValueError(f"{label} has {stat.shape[1]} values; the images have {channels} channels.")
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration run epoch `epoch`, starting at batch `start_batch` (to resume mid-epoch)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def order(self, epoch: int, stream: int = 0) -> np.ndarray:
        """The example indices of `epoch`, in the order they are served (stream 0: the training pass)."""
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, epoch, *([stream] if stream else [])]).permutation(len(self.x))

    def batch_indices(self, epoch: int, stream: int = 0):
        order = self.order(epoch, stream)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def make_batch(self, indices, epoch: int, batch: int, stream: int = 0):
        """Host-side batch (float x (B, C, H, W), int64 y): gathered, augmented, normalised."""
        x = self.x[indices]
        if self.augment:
            # 1: a stream apart from the shuffle's (and, for extra passes, their own stream number)
            rng = np.random.default_rng([self.seed, epoch, batch, 1, *([stream] if stream else [])])
            x = random_crop(x, self.crop_padding, rng) if self.crop_padding > 0 else x
            x = random_hflip(x, rng) if self.hflip else x
        x = x.astype(np.float32) * np.float32(1 / 255)
        if self.mean is not None:
            x -= self.mean
        if self.std is not None:
            x /= self.std
        return x, self.y[indices]

    def _host_batches(self, epoch: int, start: int, stop=None, stream: int = 0):
        for b, indices in enumerate(self.batch_indices(epoch, stream)[start:stop], start):
            yield self.make_batch(indices, epoch, b, stream)

    def fresh_pass(self, epoch: int, batches: int, stream: int = 1):
        """The first `batches` batches (at most an epoch's) of another pass over the data for `epoch`:
        shuffled and augmented like training batches, in an order of its own (docs/design/data-loader.md).
        Does not change which epoch the next plain iteration runs."""
        host = self._host_batches(epoch, 0, max(0, int(batches)), stream)
        return self._to_device(host if self.prefetch <= 0 else _prefetch(host, self.prefetch))

    def __iter__(self):
        epoch, start = self.epoch, self.start_batch
        self.epoch, self.start_batch = epoch + 1, 0  # the next plain `for` runs the next epoch
        host = (
            self._host_batches(epoch, start)
            if self.prefetch <= 0
            else _prefetch(self._host_batches(epoch, start), self.prefetch)
        )
        return self._to_device(host)

    def _to_device(self, host):
        try:
            for x, y in host:
                yield asarray(x, dtype=self.dtype), asarray(y)
        finally:
            host.close()


def random_crop(x, padding, rng):
    """Pad each image with `padding` zeros on every side and cut a random (H, W) window back out.

    x: uint8 (B, C, H, W) -> same shape. Offsets are uniform in [0, 2 * padding] per image.
    """
    b, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dy = rng.integers(0, 2 * padding + 1, size=b)
    dx = rng.integers(0, 2 * padding + 1, size=b)
    out = np.empty_like(x)
    for i in range(b):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def random_hflip(x, rng):
    """Mirror each image left-right with probability 1/2. x: (B, C, H, W) -> same shape (a copy)."""
    flip = rng.random(len(x)) < 0.5
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


def _prefetch(source, depth):
    """Run generator `source` in a daemon thread, `depth` items ahead; yield its items here.

    The thread's exception is re-raised in the caller. Closing this generator (or dropping it) sets `stop`,
    which the thread checks between items and while waiting for room in the queue, so it ends promptly.
    """
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in source:
                if not put((None, item)):
                    return
            put((None, _DONE))
        except BaseException as err:  # handed to the caller, who re-raises it
            put((err, None))
        finally:
            source.close()

    thread = threading.Thread(target=work, name="tinydgl-DataLoader", daemon=True)
    thread.start()
    try:
        while True:
            err, item = items.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
