"""Replay buffers between modules (DGL Algorithm 2) and the codecs that store activations in them.

A `ReplayBuffer` sits between module j, which pushes each output batch (with its labels), and module j+1,
which takes batches out when scheduled, reusing one when module j is slower. It stores what its codec makes
of the activations:

- `RawCodec`: the array itself (float32: 4 bytes per number).
- `VQCodec`: online vector quantisation, as in the extended DGL paper (Belilovsky et al. 2021,
  arXiv 2106.06401): each activation vector is replaced by the index of its nearest codeword (uint8 for
  K <= 256 codewords) in a codebook learned online with EMA k-means updates, and decoded by a codebook
  lookup. The same codes are what a multi-process runtime would send between workers.

Nothing here knows about modules or schedules, so a multi-process runtime can reuse both classes.
"""

import math

import numpy as np

from ..backend import arange_like, array_namespace, asarray, default_rng, zeros_like_on
from ..nn import Module


# --- codecs ----------------------------------------------------------------------------------------
class RawCodec:
    """Stores activations as they are (no compression). `encode`/`decode` are the identity."""

    name = "raw"

    def encode(self, x, learn=True):
        return x

    def decode(self, payload):
        return payload

    def payload_bytes(self, payload):
        """Bytes the stored form of a batch takes (what a buffer holds / a worker would send)."""
        return int(math.prod(payload.shape)) * _itemsize(payload)


def _itemsize(x):
    try:
        return int(x.dtype.itemsize)
    except AttributeError:  # array_api_strict dtypes have no itemsize
        return int(np.dtype(str(x.dtype).split(".")[-1].rstrip("')")).itemsize)


def _code_dtype(xp, k):
    """The smallest unsigned integer type that holds indices 0..k-1."""
    return xp.uint8 if k <= 256 else xp.uint16 if k <= 65536 else xp.int32


def vq_layout(shape, subvector=8):
    """How activations of `shape` (without the batch axis) are cut into vectors: returns (groups, dim).

    - (C, H, W): every spatial position's channel vector, one codebook: groups=1, dim=C. A stored sample
      then takes H*W codes instead of C*H*W floats, a factor 4*C smaller for float32 with uint8 codes.
    - (D,): D is cut into D/dim consecutive sub-vectors of `dim` numbers (product quantisation), each
      position with its own codebook: groups=D/dim. `dim` is the largest divisor of D not above `subvector`,
      so the factor is 4*dim (32x for dim=8).
    """
    if len(shape) == 3:
        return 1, int(shape[0])
    if len(shape) == 1:
        d = int(shape[0])
        dim = max(k for k in range(1, min(subvector, d) + 1) if d % k == 0)
        return d // dim, dim
    raise ValueError(f"VQ buffers handle (C, H, W) or (D,) activations, got shape {tuple(shape)}.")


class VQCodec(Module):
    """Online vector quantisation of activations with a codebook learned as data streams in.

    shape: the activations' shape without the batch axis, (C, H, W) or (D,); see `vq_layout` for how they
    are cut into `groups` sets of vectors of length `dim`, each set with its own codebook of `codebook_size`
    codewords. Codebooks are buffers of this module (saved in checkpoints, so a resumed run decodes
    as before).

    Learning (`encode(x, learn=True)`): the EMA k-means of VQ-VAE (van den Oord et al. 2017), with dead
    codewords restarted after `restart_after` idle batches; the codes returned are computed with the codebook
    before this batch's update. The four steps: docs/methods/async-dgl.md, "Learning a VQ codebook".
    """

    name = "vq"

    def __init__(
        self, shape, codebook_size=256, subvector=8, decay=0.99, restart_after=20, seed=0, dtype="float32", chunk=8192
    ):
        super().__init__()
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {codebook_size}.")
        self.shape = tuple(int(s) for s in shape)
        self.groups, self.dim = vq_layout(self.shape, subvector)
        self.k = int(codebook_size)
        self.decay, self.restart_after, self.chunk = decay, restart_after, chunk
        self.rng = default_rng(seed)
        self._seen_initialised = None  # the "initialised" buffer last read as set: no host read after that
        g, k, d = self.groups, self.k, self.dim
        self.buffers = {
            "codebook": asarray(np.zeros((g, k, d)), dtype=dtype),
            "ema_count": asarray(np.zeros((g, k)), dtype=dtype),
            "ema_sum": asarray(np.zeros((g, k, d)), dtype=dtype),
            "idle": asarray(np.zeros((g, k)), dtype=dtype),  # batches since each codeword was last chosen
            "initialised": asarray(np.zeros(1), dtype=dtype),
        }

    def forward(self, x):
        """Quantise without learning: decode(encode(x)). Used at the module boundaries in evaluation."""
        return self.decode(self.encode(x, learn=False))

    # --- layout ---------------------------------------------------------------------------------
    def _vectors(self, x):
        """x: (N, *shape) -> (groups, n, dim) vectors."""
        xp = array_namespace(x)
        n = int(x.shape[0])
        if x.ndim == 4:  # (N, C, H, W) -> (1, N*H*W, C)
            return xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (1, -1, self.dim))
        return xp.permute_dims(xp.reshape(x, (n, self.groups, self.dim)), (1, 0, 2))

    def _activations(self, v, n):
        """(groups, n_vectors, dim) vectors -> (N, *shape); inverse of `_vectors`."""
        xp = array_namespace(v)
        if len(self.shape) == 3:
            c, h, w = self.shape
            return xp.permute_dims(xp.reshape(v, (n, h, w, c)), (0, 3, 1, 2))
        return xp.reshape(xp.permute_dims(v, (1, 0, 2)), (n, self.groups * self.dim))

    # --- the codec ------------------------------------------------------------------------------
    def encode(self, x, learn=True):
        """x: (N, *shape) floats -> codes (groups, N * positions) of an unsigned integer type.

        learn=True (the producer's side, during training) also updates the codebooks with this batch.
        """
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"VQCodec was built for activations of shape {self.shape}, got {tuple(x.shape[1:])}.")
        xp = array_namespace(x)
        v = xp.astype(self._vectors(x), self.buffers["codebook"].dtype)
        if learn and self.buffers["initialised"] is not self._seen_initialised:  # a host sync, until it is set
            if float(self.buffers["initialised"][0]) == 0.0:
                self._initialise(v)
            self._seen_initialised = self.buffers["initialised"]
        codes = self._nearest(v)
        if learn:
            self._update(v, codes)
        return xp.astype(codes, _code_dtype(xp, self.k))

    def decode(self, codes):
        """codes (groups, N * positions) -> activations (N, *shape): a codebook lookup."""
        xp = array_namespace(codes)
        codebook = self.buffers["codebook"]
        g, k, d = codebook.shape
        # One lookup for all groups: group g's codes index rows g*K .. g*K + K-1 of the stacked codebooks.
        offsets = xp.reshape(arange_like(codes, g, dtype=xp.int64) * k, (g, 1))
        rows = xp.reshape(xp.astype(codes, xp.int64) + offsets, (-1,))
        v = xp.reshape(xp.take(xp.reshape(codebook, (g * k, d)), rows, axis=0), (g, -1, d))
        n = int(codes.shape[1]) * self.groups * self.dim // int(math.prod(self.shape))
        return self._activations(v, n)

    def payload_bytes(self, codes):
        return int(math.prod(codes.shape)) * _itemsize(codes)

    def codebook_bytes(self):
        """Bytes of the codebooks themselves (not per sample: sent once per update, amortised)."""
        cb = self.buffers["codebook"]
        return int(math.prod(cb.shape)) * _itemsize(cb)

    # --- k-means --------------------------------------------------------------------------------
    def _nearest(self, v):
        """(groups, n, dim) vectors -> (groups, n) int64 indices of their nearest codewords."""
        xp = array_namespace(v)
        codebook = self.buffers["codebook"]
        c_sq = xp.sum(codebook * codebook, axis=-1)[:, None, :]  # (g, 1, K)
        out, n = [], int(v.shape[1])
        for start in range(0, n, self.chunk):
            part = v[:, start : min(start + self.chunk, n), :]
            # ||v||^2 is the same for every codeword, so it does not change the argmin: left out.
            dist = c_sq - 2 * xp.matmul(part, xp.matrix_transpose(codebook))
            out.append(xp.argmin(dist, axis=-1))
        return out[0] if len(out) == 1 else xp.concat(out, axis=1)

    def _counts_and_sums(self, v, codes):
        """Per codeword: how many vectors it was assigned (g, K) and their sum (g, K, dim), via one-hot matmuls."""
        xp = array_namespace(v)
        ks = xp.reshape(arange_like(v, self.k, dtype=codes.dtype), (1, 1, self.k))
        counts, sums, n = 0, 0, int(v.shape[1])
        for start in range(0, n, self.chunk):
            onehot = xp.astype(codes[:, start : min(start + self.chunk, n), None] == ks, v.dtype)  # (g, n, K)
            counts = counts + xp.sum(onehot, axis=1)
            sums = sums + xp.matmul(xp.matrix_transpose(onehot), v[:, start : min(start + self.chunk, n), :])
        return counts, sums

    def _random_vectors(self, v, how_many):
        """(groups, how_many, dim) vectors drawn at random (host generator) from the batch v."""
        xp = array_namespace(v)
        n = int(v.shape[1])
        picks = self.rng.choice(n, size=how_many, replace=how_many > n)
        return xp.take(v, asarray(picks, dtype="int64", like=v), axis=1)

    def _initialise(self, v):
        first = self._random_vectors(v, self.k)
        self.buffers["codebook"] = first
        self.buffers["ema_sum"] = first
        self.buffers["ema_count"] = zeros_like_on(first, (self.groups, self.k)) + 1.0
        self.buffers["idle"] = zeros_like_on(first, (self.groups, self.k))
        self.buffers["initialised"] = zeros_like_on(first, (1,)) + 1.0

    def _update(self, v, codes):
        xp = array_namespace(v)
        counts, sums = self._counts_and_sums(v, codes)
        gamma = self.decay
        # Counts are kept as fractions of the batch so the threshold for dead codewords does not depend on it.
        ema_count = gamma * self.buffers["ema_count"] + (1 - gamma) * counts * (self.k / int(v.shape[1]))
        ema_sum = gamma * self.buffers["ema_sum"] + (1 - gamma) * sums * (self.k / int(v.shape[1]))
        total = xp.sum(ema_count, axis=1, keepdims=True)
        eps = 1e-5
        smoothed = (ema_count + eps) / (total + self.k * eps) * total  # Laplace smoothing: no division by 0
        codebook = ema_sum / smoothed[:, :, None]
        idle = xp.where(counts > 0, xp.zeros_like(counts), self.buffers["idle"] + 1)
        # Restart dead codewords at random batch vectors; their statistics restart at a fair share (count 1).
        dead = idle >= self.restart_after  # (g, K)
        # On NumPy, restart only when a codeword is dead; on a device, asking would be a host sync every
        # update, so candidates are drawn every update and masked (the host generator moves on every update:
        # the picks differ from NumPy's, the rule is the same).
        if not isinstance(dead, np.ndarray) or bool(xp.any(dead)):
            fresh = self._random_vectors(v, self.k)
            mask = xp.astype(dead, v.dtype)[:, :, None]
            codebook = mask * fresh + (1 - mask) * codebook
            ema_sum = mask * fresh + (1 - mask) * ema_sum
            ema_count = xp.where(dead, xp.ones_like(ema_count), ema_count)
            idle = xp.where(dead, xp.zeros_like(idle), idle)
        self.buffers.update(codebook=codebook, ema_sum=ema_sum, ema_count=ema_count, idle=idle)


def build_codec(name, shape, codebook_size=256, subvector=8, seed=0, dtype="float32"):
    """The codec a buffer for activations of `shape` stores with: name None/"raw" or "vq"."""
    if name in (None, "raw", "none"):
        return RawCodec()
    if name == "vq":
        return VQCodec(shape, codebook_size=codebook_size, subvector=subvector, seed=seed, dtype=dtype)
    raise ValueError(f"Unknown buffer codec {name!r}; choose 'vq' (vector quantisation) or leave it unset (raw).")


# --- the replay buffer -----------------------------------------------------------------------------
def replay_choice(uses, serials, reuse_cap=None):
    """The replay policy on plain numbers: which stored batch to serve next, or None if none may be.

    uses[i], serials[i]: how often stored batch i was served, and its push order (higher = fresher).
    Among the batches served fewer than `reuse_cap` times (any number if None), the ones served the fewest
    times, and of those the freshest. Shared by `ReplayBuffer` and the multi-process
    `tinydgl.runtime.SharedRing`, so both serve the same batch in the same situation.
    """
    servable = [i for i, u in enumerate(uses) if reuse_cap is None or u < reuse_cap]
    if not servable:
        return None
    return min(servable, key=lambda i: (uses[i], -serials[i]))  # fewest uses, then the freshest


class ReplayEntry:
    """One stored batch: its payload (codec output), labels, how often it was served, and provenance
    (serial: push order; produced_at: the producer's step; origin: the data batch it was computed from)."""

    __slots__ = ("payload", "labels", "uses", "serial", "produced_at", "samples", "origin")

    def __init__(self, payload, labels, serial, produced_at, samples, origin):
        self.payload, self.labels = payload, labels
        self.uses, self.serial, self.produced_at, self.samples, self.origin = 0, serial, produced_at, samples, origin


class ReplayBuffer:
    """Up to `capacity` batches produced by one module, waiting for the next (Algorithm 2's B_j).

    Replay policy (DGL, `buffer_experiments/cifar_buffer.py`): among the stored batches used the fewest
    times, serve the freshest. Deliberate difference from the official code: its tie-break index shift
    makes it serve the *oldest* slot on some ties; we always serve the most recently pushed one.
    reuse_cap: a batch already served `reuse_cap` times is not served again; when no stored batch can be
    served, `take` returns None (the caller skips its turn). A push into a full buffer replaces the oldest
    batch, served or not (`dropped_unused` counts batches that never were).
    """

    def __init__(self, capacity, codec=None, reuse_cap=None):
        if int(capacity) < 1:
            raise ValueError(f"The buffer size must be at least 1 batch, got {capacity}.")
        if reuse_cap is not None and int(reuse_cap) < 1:
            raise ValueError(f"The reuse cap must be at least 1 (or None for no cap), got {reuse_cap}.")
        self.capacity = int(capacity)
        self.codec = codec or RawCodec()
        self.reuse_cap = None if reuse_cap is None else int(reuse_cap)
        self.entries: list[ReplayEntry] = []
        self.pushed = self.dropped_unused = 0
        self.stored_bytes = self.stored_samples = 0  # totals over every push, for bytes per sample

    def __len__(self):
        return len(self.entries)

    def push(self, x, labels, produced_at=0, origin=None):
        """Store batch x (N, ...) with its labels; produced_at: the producer's step count (for staleness);
        origin: the number of the data batch x was computed from (None: this push's serial), so that a
        consumer can tell new data from a replay of old data that its producer passed on."""
        payload = self.codec.encode(x)
        n = int(x.shape[0])
        if len(self.entries) == self.capacity:
            oldest = min(self.entries, key=lambda e: e.serial)
            self.dropped_unused += oldest.uses == 0
            self.entries.remove(oldest)
        origin = self.pushed if origin is None else int(origin)
        self.entries.append(ReplayEntry(payload, labels, self.pushed, produced_at, n, origin))
        self.pushed += 1
        self.stored_bytes += self.codec.payload_bytes(payload)
        self.stored_samples += n

    def take(self):
        """Serve a batch by the replay policy: returns (x, labels, entry) or None if nothing can be served.

        The entry's `uses` already counts this serve.
        """
        i = replay_choice([e.uses for e in self.entries], [e.serial for e in self.entries], self.reuse_cap)
        if i is None:
            return None
        entry = self.entries[i]
        entry.uses += 1
        return self.codec.decode(entry.payload), entry.labels, entry

    def clear(self):
        self.entries = []

    def bytes_per_sample(self):
        """Mean bytes one stored sample's activations take in this buffer (labels not counted)."""
        return self.stored_bytes / self.stored_samples if self.stored_samples else 0.0
