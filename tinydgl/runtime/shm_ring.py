"""A bounded buffer of (activation, label) batches in shared memory, between two worker processes.

One `SharedMemory` segment cut into M fixed-size slots, so a batch crosses processes with two copies and
no pickling:

    segment = [ring header | M slot headers | M activation slots | M label slots]

Policy "fifo": every batch served once, in order (`put` blocks when full). "replay" (DGL Algorithm 2, the
policy of `trainers.buffers.ReplayBuffer`): `put` never waits and replaces the oldest batch; `get` serves the
least-used, freshest batch, up to `reuse_cap` times. `get` returns a copy; `put` copies before returning. The
creator owns and unlinks the segment; `abort()` makes every `put`/`get` raise `RingClosed` within `POLL_S`.

Design notes (headers, locking and semaphores, lifetime, faults): docs/design/runtime.md, "The shared-memory ring".
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import secrets
import time
import weakref
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..trainers.buffers import replay_choice
from .processes import POLL_S  # blocking waits wake up this often to notice `abort()`

POLICIES = ("fifo", "replay")
_ALIGN = 64  # bytes: slots start on cache-line boundaries
IPC_HANDLE_BYTES = 64  # a CUDA IPC memory handle (cudaIpcMemHandle_t), one per slot of a DeviceRing

# Slot states.
FREE, WRITING, READY, TAKEN = 0, 1, 2, 3
_STATE_NAMES = {FREE: "free", WRITING: "writing", READY: "ready", TAKEN: "taken"}
# Slot header columns (int64).
STATE, READERS, SERIAL, PRODUCED_AT, SAMPLES, USES, ORIGIN = range(7)
_SLOT_FIELDS = 8
# Ring header fields (int64).
PUSHED, SERVED, DROPPED_UNUSED, OVERWRITTEN, DATA_WAITERS, SPACE_WAITERS, ABORTED, STOPPED = range(8)
PRODUCER_DEVICE, READ_TO_END = 8, 9  # a `DeviceRing`'s: the GPU its slots live on; its consumer has finished
_RING_FIELDS = 16


class RingClosed(RuntimeError):
    """The ring was aborted (a worker failed or the run is stopping) or closed in this process."""


class RingBroken(RuntimeError):
    """The ring's lock stayed held too long: a process probably died inside `put`/`get`."""


@dataclass(frozen=True)
class RingEntry:
    """What `get` says about the batch it served (the same names as `trainers.buffers.ReplayEntry`).

    serial: push order (0, 1, ...); produced_at: the producer's step or weight version when it pushed it;
    samples: batch size; uses: times it has been served, this time included; slot: where it was stored;
    pushed: batches pushed into the ring so far (so `pushed - 1 - serial` newer batches exist: the batch's
    staleness); stored: batches stored in the ring when this one was served (its occupancy); origin: the
    number of the data batch it was computed from (None: unknown, take the serial). A pipeline passes the
    origin on from stage to stage, because past the second stage `uses` no longer tells new data from old:
    a stage that replays a batch pushes a new entry (uses 0) computed from the same data.
    """

    serial: int
    produced_at: int
    samples: int
    uses: int
    slot: int
    pushed: int = 0
    stored: int = 0
    origin: int | None = None


@dataclass(frozen=True)
class RingHandle:
    """Everything another process needs to attach to a ring: the segment's name, its layout and the
    synchronisation primitives. Picklable only while starting a process (a `Process` argument), because
    `multiprocessing` locks and semaphores can only be inherited, not sent later."""

    name: str
    slots: int
    max_batch: int
    sample_shape: tuple
    dtype: str
    policy: str
    reuse_cap: int | None
    lock: Any
    space: Any  # fifo: counts free slots; replay: "a slot may be writable" signal
    data: Any  # fifo: counts ready batches; replay: "a batch may be servable" signal
    lock_timeout: float = 5.0
    on_device: bool = False  # a `device_ring.DeviceRing`: activations in GPU memory, not in the segment

    def attach(self) -> "SharedRing":
        return SharedRing.attach(self)


def _align(n):
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _layout(handle):
    """Byte offsets in the segment: (slot headers, activations, labels, total size, elements per slot)."""
    slot_headers = _RING_FIELDS * 8
    data = _align(slot_headers + handle.slots * _SLOT_FIELDS * 8)
    per_sample = math.prod(handle.sample_shape)
    slot_bytes = 0 if handle.on_device else _align(handle.max_batch * per_sample * np.dtype(handle.dtype).itemsize)
    labels = data + handle.slots * slot_bytes
    total = labels + handle.slots * handle.max_batch * 8 + (handle.slots * IPC_HANDLE_BYTES if handle.on_device else 0)
    return slot_headers, data, labels, total, slot_bytes // np.dtype(handle.dtype).itemsize


def _release_segment(shm, unlink):
    """Unmap the segment (and unlink its name, for the creator). Runs from close() or a finalizer."""
    try:
        shm.close()
    except BufferError:  # array views still exist (finalizer during collection): unmapped when they go
        pass
    if unlink:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


def _attach(handle, cls=None):
    return (cls or SharedRing).attach(handle)


class SharedRing:
    """M slots of (activations, int64 labels) batches in one shared-memory segment; see docs/design/runtime.md.

    slots: M, batches the ring holds. max_batch, sample_shape, dtype: the largest batch a slot holds,
    e.g. max_batch=128, sample_shape=(3, 32, 32), dtype="float32" (1.5 MiB per slot); smaller batches fit.
    policy: "fifo" or "replay". reuse_cap: replay only, serve a batch at most this many times (None: no
    cap). name: the segment's name (default: a fresh unique one). ctx: the multiprocessing context whose
    Lock/Semaphore to use (default: spawn). lock_timeout: seconds to wait for the header lock before
    concluding that a dead process holds it (`RingBroken`).

    put(x, labels, produced_at=0, timeout=None) -> bool and get(timeout=None) -> (x, labels, RingEntry) or
    None; `timeout=None` blocks, `timeout=0` never waits. A ring is both ends of a link (`links.Source` for
    its consumer, `links.Sink` for its producer): `finish()` marks it stopped, `producer_stopped()` reads it.
    """

    def __init__(
        self,
        slots,
        max_batch,
        sample_shape,
        dtype="float32",
        policy="fifo",
        reuse_cap=None,
        name=None,
        ctx=None,
        lock_timeout=5.0,
    ):
        if int(slots) < 1:
            raise ValueError(f"A ring needs at least 1 slot, got slots={slots}.")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be at least 1 sample, got {max_batch}.")
        if policy not in POLICIES:
            raise ValueError(
                f"Unknown ring policy {policy!r}; choose 'fifo' (strict order, blocking) or "
                f"'replay' (Algorithm 2: overwrite the oldest, serve fewest-used then freshest)."
            )
        if reuse_cap is not None and (policy != "replay" or int(reuse_cap) < 1):
            raise ValueError(
                f"reuse_cap must be None or >= 1, and only applies to policy='replay' "
                f"(got reuse_cap={reuse_cap}, policy={policy!r})."
            )
        ctx = ctx or mp.get_context("spawn")
        slots = int(slots)
        handle = RingHandle(
            name=name or f"tdgl_{os.getpid()}_{secrets.token_hex(4)}",
            slots=slots,
            max_batch=int(max_batch),
            sample_shape=tuple(int(s) for s in sample_shape),
            dtype=np.dtype(dtype).name,
            policy=policy,
            reuse_cap=None if reuse_cap is None else int(reuse_cap),
            lock=ctx.Lock(),
            space=ctx.Semaphore(slots if policy == "fifo" else 0),
            data=ctx.Semaphore(0),
            lock_timeout=float(lock_timeout),
            on_device=self.on_device,
        )
        total = _layout(handle)[3]
        shm = shared_memory.SharedMemory(name=handle.name, create=True, size=total)
        self._open(handle, shm, owner=True)
        self._ring[:] = 0
        self._slots[:] = 0  # every slot FREE

    @classmethod
    def attach(cls, handle: RingHandle) -> "SharedRing":
        """Open the ring `handle` describes in this process (a worker). close() unmaps; it never unlinks."""
        try:
            shm = shared_memory.SharedMemory(name=handle.name)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Shared ring {handle.name!r} does not exist (any more): its creator closed "
                f"it or exited. Attach while the creating process keeps it open."
            ) from None
        ring = cls.__new__(cls)
        ring._open(handle, shm, owner=False)
        return ring

    def _open(self, handle, shm, owner):
        self.handle, self.owner, self._shm = handle, owner, shm
        self._lock, self._space, self._data = handle.lock, handle.space, handle.data
        slot_headers, data, labels, _, slot_elems = _layout(handle)
        buf = shm.buf
        self._ring = np.ndarray((_RING_FIELDS,), np.int64, buf, 0)
        self._slots = np.ndarray((handle.slots, _SLOT_FIELDS), np.int64, buf, slot_headers)
        self._activations = np.ndarray((handle.slots, slot_elems), np.dtype(handle.dtype), buf, data)
        self._labels = np.ndarray((handle.slots, handle.max_batch), np.int64, buf, labels)
        if handle.on_device:  # a DeviceRing's CUDA IPC handles, one per slot, after the labels
            self._handles = np.ndarray(
                (handle.slots, IPC_HANDLE_BYTES), np.uint8, buf, _layout(handle)[3] - handle.slots * IPC_HANDLE_BYTES
            )
        self._per_sample = math.prod(handle.sample_shape)
        self._closed = False
        self._finalizer = weakref.finalize(self, _release_segment, shm, owner)

    # --- plain properties -------------------------------------------------------------------------
    name = property(lambda self: self.handle.name, doc="The shared-memory segment's name (under /dev/shm on Linux).")
    slots = property(lambda self: self.handle.slots)
    policy = property(lambda self: self.handle.policy)
    reuse_cap = property(lambda self: self.handle.reuse_cap)
    nbytes = property(lambda self: self._shm.size, doc="Size of the segment in bytes.")

    def __repr__(self):
        h = self.handle
        return (
            f"SharedRing({h.name!r}, slots={h.slots}, max_batch={h.max_batch}, sample_shape={h.sample_shape}, "
            f"dtype={h.dtype!r}, policy={h.policy!r}, reuse_cap={h.reuse_cap}, "
            f"{'owner' if self.owner else 'attached'}{', closed' if self._closed else ''})"
        )

    def __reduce__(self):
        # Sent to a spawned worker as its handle; the worker attaches (and never unlinks).
        return _attach, (self.handle, type(self))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- locking and waiting ----------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise RingClosed(f"Shared ring {self.name!r} was closed in this process; create or attach a new one.")
        if self._ring[ABORTED]:  # read without the lock on purpose: docs/design/runtime.md, "Faults"
            raise RingClosed(f"Shared ring {self.name!r} was aborted (a worker failed or the run is stopping).")

    def _acquire_lock(self):
        if not self._lock.acquire(timeout=self.handle.lock_timeout):
            raise RingBroken(
                f"The lock of shared ring {self.name!r} stayed held for {self.handle.lock_timeout:g} s: "
                f"a process probably died inside put/get. Abort the run and restart it."
            )

    def _acquire(self, sem, deadline):
        """Take one count of `sem` by `deadline` (time.monotonic(); None: no limit), waking every POLL_S
        to notice an abort. Returns False if the deadline passed."""
        while True:
            self._check_open()
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if wait <= 0:
                return sem.acquire(False)
            if sem.acquire(True, wait):
                return True

    def _wait_for(self, sem, waiters, deadline):
        """Replay's wait, called and returning with the lock held: register as a waiter on signal `sem`,
        drop the lock, sleep until woken or `deadline`. False if the deadline passed (nobody woke us)."""
        self._ring[waiters] += 1
        self._lock.release()
        try:
            woken = self._acquire(sem, deadline)
        finally:
            self._acquire_lock()
        if not woken:
            if self._ring[waiters] > 0:
                self._ring[waiters] -= 1  # still registered: unregister
            else:
                sem.acquire(False)  # a wake-up was released for us as we timed out: take it back
        return woken

    def _wake(self, sem, waiters):
        """Wake every registered waiter on signal `sem` (lock held); each re-checks the headers."""
        for _ in range(int(self._ring[waiters])):
            sem.release()
        self._ring[waiters] = 0

    # --- put ------------------------------------------------------------------------------------------
    on_device = False  # activations in the segment; `DeviceRing` keeps them in GPU memory instead
    _staged = staticmethod(to_numpy)  # what put copies from: a host array

    def _write(self, slot, x, n):
        np.copyto(self._activations[slot, : n * self._per_sample].reshape(x.shape), x, casting="same_kind")

    def _read(self, slot, n):
        return self._activations[slot, : n * self._per_sample].reshape((n, *self.handle.sample_shape)).copy()

    def _check_batch(self, x, labels):
        x, labels = self._staged(x), to_numpy(labels)
        h = self.handle
        n = int(x.shape[0]) if x.ndim else 0
        if x.ndim != 1 + len(h.sample_shape) or tuple(x.shape[1:]) != h.sample_shape or not 1 <= n <= h.max_batch:
            raise ValueError(
                f"Shared ring {h.name!r} holds batches of shape (1..{h.max_batch}, "
                f"{', '.join(map(str, h.sample_shape))}), got {tuple(x.shape)}."
            )
        if labels.shape != (n,):
            raise ValueError(f"Expected {n} labels (one per sample, shape ({n},)), got shape {tuple(labels.shape)}.")
        if not np.can_cast(x.dtype, h.dtype, "same_kind") or not np.can_cast(labels.dtype, np.int64, "same_kind"):
            raise TypeError(
                f"Shared ring {h.name!r} stores {h.dtype} activations and int64 labels; "
                f"got {x.dtype} and {labels.dtype}."
            )
        return x, labels, n

    def put(self, x, labels, produced_at=0, timeout=None, origin=None):
        """Copy batch x (N, *sample_shape) and its N labels into a slot; N <= max_batch.

        produced_at: the producer's step (or weight version), returned with the batch for staleness.
        origin: the data batch x was computed from, returned with it (None: the batch's own serial).
        fifo: waits for a free slot, up to `timeout` seconds (None: forever); False if none came free.
        replay: takes a free slot or replaces the oldest stored batch; it waits (and may return False) only
        in the rare case that every slot is being written or read at this moment. True once stored.
        x may be changed by the caller as soon as put returns.
        """
        self._check_open()
        x, labels, n = self._check_batch(x, labels)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.handle.policy == "fifo":
            if not self._acquire(self._space, deadline):
                return False
        self._acquire_lock()
        try:
            slot = self._reserve_for_writing(deadline)
        finally:
            self._lock.release()
        if slot is None:
            return False
        try:
            self._write(slot, x, n)
            self._labels[slot, :n] = labels
        except BaseException:  # give the slot back rather than leave it reserved forever
            self._acquire_lock()
            self._slots[slot, STATE] = FREE
            self._lock.release()
            if self.handle.policy == "fifo":
                self._space.release()
            raise
        self._acquire_lock()
        try:
            serial = int(self._ring[PUSHED])
            origin = serial if origin is None else int(origin)
            self._slots[slot, :7] = (READY, 0, serial, int(produced_at), n, 0, origin)
            self._ring[PUSHED] += 1
            if self.handle.policy == "replay":
                self._wake(self._data, DATA_WAITERS)
        finally:
            self._lock.release()
        if self.handle.policy == "fifo":
            self._data.release()
        return True

    def _reserve_for_writing(self, deadline):
        """With the lock held: mark a slot WRITING and return its index (None: replay, deadline passed)."""
        states = self._slots[:, STATE]
        while True:
            free = np.flatnonzero(states == FREE)
            if free.size:
                slot = int(free[0])
                break
            if self.handle.policy == "fifo":  # we hold a count of `space`, so a FREE slot must exist
                raise RingBroken(
                    f"Shared ring {self.name!r} has no free slot although its semaphore said so "
                    f"(slot states {self._describe_states()}): a process died inside put/get."
                )
            # replay: replace the oldest stored batch that nobody is reading
            idle = np.flatnonzero((states == READY) & (self._slots[:, READERS] == 0))
            if idle.size:
                slot = int(idle[np.argmin(self._slots[idle, SERIAL])])
                self._ring[OVERWRITTEN] += 1
                self._ring[DROPPED_UNUSED] += self._slots[slot, USES] == 0
                break
            if not self._wait_for(self._space, SPACE_WAITERS, deadline):
                return None
        self._slots[slot, STATE] = WRITING
        return slot

    # --- get ------------------------------------------------------------------------------------------
    def get(self, timeout=None):
        """Serve a batch: returns (x, labels, entry), x and labels fresh NumPy copies, or None.

        fifo: the oldest unread batch, waiting up to `timeout` seconds (None: forever) for one.
        replay: by the replay policy (fewest uses, then freshest, under the reuse cap); a served batch
        stays stored. Waits up to `timeout` for a servable batch; None means there was none (a skip).
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        fifo = self.handle.policy == "fifo"
        if fifo and not self._acquire(self._data, deadline):
            return None
        self._acquire_lock()
        try:
            slot = self._reserve_for_reading(deadline)
            if slot is None:
                return None
            self._ring[SERVED] += 1
            serial, produced_at, n, uses, origin = (
                int(v) for v in self._slots[slot, [SERIAL, PRODUCED_AT, SAMPLES, USES, ORIGIN]]
            )
            pushed, stored = (
                int(self._ring[PUSHED]),
                int(np.sum(self._slots[:, STATE] == READY)) + fifo,
            )  # this one included
        finally:
            self._lock.release()
        try:
            x = self._read(slot, n)
            labels = self._labels[slot, :n].copy()
        finally:
            self._acquire_lock()
            try:
                if fifo:
                    self._slots[slot, STATE] = FREE
                else:
                    self._slots[slot, READERS] -= 1
                    if self._slots[slot, READERS] == 0:
                        self._wake(self._space, SPACE_WAITERS)
            finally:
                self._lock.release()
            if fifo:
                self._space.release()
        return x, labels, RingEntry(serial, produced_at, n, uses, slot, pushed, stored, origin)

    def _reserve_for_reading(self, deadline):
        """With the lock held: pick the slot to serve, count the use, reserve it; None if none by deadline."""
        if self.handle.policy == "fifo":  # we hold a count of `data`: a READY slot exists; serve the oldest
            ready = np.flatnonzero(self._slots[:, STATE] == READY)
            if not ready.size:
                raise RingBroken(
                    f"Shared ring {self.name!r} has no ready batch although its semaphore said so "
                    f"(slot states {self._describe_states()}): a process died inside put/get."
                )
            slot = int(ready[np.argmin(self._slots[ready, SERIAL])])
            self._slots[slot, STATE] = TAKEN
            self._slots[slot, USES] = 1
            return slot
        expired = deadline is not None and deadline <= time.monotonic()
        while True:
            ready = np.flatnonzero(self._slots[:, STATE] == READY)
            i = replay_choice(
                self._slots[ready, USES].tolist(), self._slots[ready, SERIAL].tolist(), self.handle.reuse_cap
            )
            if i is not None:
                slot = int(ready[i])
                self._slots[slot, USES] += 1
                self._slots[slot, READERS] += 1
                return slot
            if expired:
                return None
            expired = not self._wait_for(self._data, DATA_WAITERS, deadline)  # then look one last time

    # --- inspection and shutdown ------------------------------------------------------------------
    def _describe_states(self):
        return [_STATE_NAMES.get(int(s), str(int(s))) for s in self._slots[:, STATE]]

    def __len__(self):
        """Batches stored and not being written (replay: served ones included; fifo: unread ones)."""
        self._check_open()
        self._acquire_lock()
        try:
            return int(np.sum(self._slots[:, STATE] == READY))
        finally:
            self._lock.release()

    def stats(self) -> dict:
        """Counters since creation, shared by every process: pushed, served, overwritten (replay: batches
        replaced when full), dropped_unused (replaced before ever being served), stored (len)."""
        self._check_open()
        self._acquire_lock()
        try:
            r = self._ring
            return {
                "policy": self.policy,
                "slots": self.slots,
                "pushed": int(r[PUSHED]),
                "served": int(r[SERVED]),
                "overwritten": int(r[OVERWRITTEN]),
                "dropped_unused": int(r[DROPPED_UNUSED]),
                "stored": int(np.sum(self._slots[:, STATE] == READY)),
            }
        finally:
            self._lock.release()

    def finish(self):
        """The producer's last act (`links.Sink.finish`): `producer_stopped()` is True from now on, in every
        process. Set under the lock, so a consumer that sees it also sees every batch put before it. (A
        consumer may call it too, as `pipeline.run_stage` does after its last batch: only consumers read it.)"""
        self._check_open()
        self._acquire_lock()
        self._ring[STOPPED] = 1
        self._lock.release()

    def producer_stopped(self) -> bool:
        self._check_open()
        self._acquire_lock()
        stopped = bool(self._ring[STOPPED])
        self._lock.release()
        return stopped

    def abort(self):
        """Stop the ring for every process: blocked and later put/get raise RingClosed within POLL_S.

        Needs no lock (a dead process may hold it); meant for the engine when a worker fails."""
        if not self._closed:
            self._ring[ABORTED] = 1

    @property
    def aborted(self):
        return not self._closed and bool(self._ring[ABORTED])

    def close(self):
        """Unmap the segment in this process; the creator also unlinks it (its name disappears). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ring = self._slots = self._activations = self._labels = None  # drop views so the buffer can be released
        self._finalizer()
