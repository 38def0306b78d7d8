"""The links between pipeline workers: one small contract, and its MPI implementation.

A module-parallel worker (`pipeline.pipeline_worker_loop`) reads batches from a `Source` and writes what its
stage produced to a `Sink` (DNI's workers have a second pair pointing down). Shared memory implements it
with `shm_ring.SharedRing`; MPI with `MpiSink` on rank r and `MpiSource` on rank r+1 (rank 0 reads the
loader through a `LoaderSource`). One batch is three messages (HEADER, X, LABELS: NumPy buffers, no
pickling); a CREDIT gives the producer room for one more batch: handed back when a batch is served
("fifo") or as soon as it is drained into a local `ReplayBuffer` ("replay"). `finish` ends with a stop
header and a BYE, so nothing is left in flight.

Design notes (credits per policy, the clean end, CuPy): docs/design/runtime.md, "Links, and the MPI transport".
"""

from __future__ import annotations

import collections
import time
from typing import Protocol, runtime_checkable

import numpy as np

from ..backend import asarray, to_numpy
from ..trainers.buffers import ReplayBuffer
from .shm_ring import RingEntry

HEADER, X, LABELS, CREDIT = 11, 12, 13, 14  # message tags of the links up (activations)
BACK = (21, 22, 23, 24)  # the same four, for the links down (DNI: synthesizer targets), so the two never mix
BYE = -1  # a credit of -1: the consumer has read the stop header, nothing more will come
# Sleep between two Iprobes while a link waits. Not `processes.POLL_S` (how soon a failure is noticed): this
# is a latency paid by every batch that waits, so it is short; it only keeps the wait from spinning a core,
# as MPI's blocking calls would.
MPI_SPIN_S = 0.0005


# --- the contract -------------------------------------------------------------------------------------------
@runtime_checkable
class Source(Protocol):
    """The input end of a link. get(timeout): (x (N, ...), labels (N,) int64, entry) or None if nothing
    servable came within `timeout` s (None: wait); entry: a `RingEntry` (serial, uses, staleness, origin),
    or None for raw data. producer_stopped(): the producer has finished (a replay worker then serves what is
    fresh and stops). finish(): the worker has read its last batch; end the link cleanly. stats(): counters
    (policy, slots, pushed, served, overwritten, dropped_unused, stored, as `SharedRing.stats`)."""

    def get(self, timeout=None): ...
    def producer_stopped(self) -> bool: ...
    def finish(self): ...
    def stats(self) -> dict: ...


@runtime_checkable
class Sink(Protocol):
    """The output end of a link. put(x, labels, produced_at, timeout, origin): pass batch x (N, ...) and its
    N labels on, False if there was no room within `timeout` s; the caller may change x as soon as put
    returns. produced_at: the producer's step (for staleness); origin: the data batch x was computed from.
    finish(): nothing more will be put; end the link cleanly. stats(): counters of what was sent."""

    def put(self, x, labels, produced_at=0, timeout=None, origin=None) -> bool: ...
    def finish(self): ...
    def stats(self) -> dict: ...


class LoaderSource:
    """The data as a `Source`: the loader's batches, epoch after epoch (entry None: they are data, not a
    buffer). MPI's rank 0 reads it itself."""

    def __init__(self, trainer, train_loader, start_epoch, epochs):
        self.batches = self._batches(trainer, train_loader, start_epoch, epochs)
        self.served = 0

    @staticmethod
    def _batches(trainer, train_loader, start_epoch, epochs):
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            yield from train_loader

    def get(self, timeout=None):
        x, y = next(self.batches)
        self.served += 1
        return x, y, None

    def producer_stopped(self):
        return False  # a fifo worker stops after the loader's batches; no one asks

    def finish(self):
        self.batches.close()  # the loader's iteration ends here, not whenever the generator is collected

    def stats(self):
        """The loader as a link: no slots, every batch pushed and served once."""
        return {
            "policy": "fifo",
            "slots": 0,
            "pushed": self.served,
            "served": self.served,
            "overwritten": 0,
            "dropped_unused": 0,
            "stored": 0,
        }


# --- over MPI: the sending and receiving ends of one link (rank r -> rank r+1) -------------------------------
class MpiSink:
    """Rank r's output: `put` sends a batch to rank r+1 when a credit allows it (docs/design/runtime.md); a `Sink`."""

    def __init__(self, comm, dest, credits, dtype, tags=(HEADER, X, LABELS, CREDIT)):
        self.comm, self.dest, self.credits, self.dtype = comm, dest, int(credits), np.dtype(dtype)
        self.tags = tags
        self.serial = self.bytes = 0
        self.in_flight = []  # (requests, arrays): an Isend's buffer must live until the send completes
        self._credit = np.zeros(1, np.int64)

    def _read_credits(self):
        """Take every credit that has arrived; True if one was the consumer's BYE."""
        bye = False
        while self.comm.Iprobe(source=self.dest, tag=self.tags[3]):
            self.comm.Recv(self._credit, source=self.dest, tag=self.tags[3])
            if int(self._credit[0]) == BYE:
                bye = True
            else:
                self.credits += int(self._credit[0])
        self.in_flight = [(reqs, arrays) for reqs, arrays in self.in_flight if not _all_done(reqs)]
        return bye

    def put(self, x, labels, produced_at=0, timeout=None, origin=None):
        """Send batch x (N, ...) and its N labels; False if no credit came within `timeout` seconds. As with
        `SharedRing.put`, the caller may change x as soon as put returns: the Isend reads a copy. origin: the
        data batch x was computed from (None: this batch's serial)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._read_credits()
        while self.credits < 1:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(MPI_SPIN_S)
            self._read_credits()
        # Copies: an Isend reads its buffer until the receiver has it (a large message waits for the matching
        # Recv), while the caller goes on computing and might reuse its arrays.
        x = np.array(to_numpy(x), dtype=self.dtype, order="C", copy=True)
        labels = np.array(to_numpy(labels), dtype=np.int64, order="C", copy=True)
        origin = self.serial if origin is None else int(origin)
        header = np.array([x.shape[0], int(produced_at), self.serial, 0, origin], np.int64)
        header_tag, x_tag, labels_tag, _ = self.tags
        reqs = [
            self.comm.Isend(header, self.dest, header_tag),
            self.comm.Isend(x, self.dest, x_tag),
            self.comm.Isend(labels, self.dest, labels_tag),
        ]
        self.in_flight.append((reqs, (header, x, labels)))
        self.credits -= 1
        self.serial += 1
        self.bytes += header.nbytes + x.nbytes + labels.nbytes
        return True

    def finish(self):
        """Send the stop header, read credits up to the consumer's BYE, complete every Isend."""
        stop = np.array([0, 0, self.serial, 1, 0], np.int64)
        request = self.comm.Isend(stop, self.dest, self.tags[0])
        while not self._read_credits():
            time.sleep(MPI_SPIN_S)
        request.Wait()
        for reqs, _ in self.in_flight:
            for r in reqs:
                r.Wait()
        self.in_flight = []

    def stats(self):
        return {"sent": self.serial, "bytes_sent": self.bytes}


def _all_done(requests):
    return all(r.Test() for r in requests)


class MpiSource:
    """Rank r's input from rank r-1, a `Source`: `get` serves a batch as `SharedRing.get` would (fifo or
    replay). capacity: the link's slots (the replay buffer's capacity)."""

    def __init__(
        self, comm, src, policy, capacity, reuse_cap, sample_shape, dtype, on_device, tags=(HEADER, X, LABELS, CREDIT)
    ):
        self.comm, self.src, self.policy, self.tags, self.slots = comm, src, policy, tags, int(capacity)
        self.sample_shape, self.dtype, self.on_device = tuple(sample_shape), np.dtype(dtype), on_device
        self.waiting = collections.deque()  # fifo: batches received and not served yet
        self.replay = ReplayBuffer(capacity, reuse_cap=reuse_cap) if policy == "replay" else None
        self.received = self.served = self.discarded = 0
        self.stopped = False
        self.credits_out = []  # Isend requests of credits (their buffer is the constant self._one)
        self._one, self._bye = np.ones(1, np.int64), np.array([BYE], np.int64)
        self._header = np.zeros(5, np.int64)

    def _give_credit(self):
        self.credits_out = [r for r in self.credits_out if not r.Test()]
        self.credits_out.append(self.comm.Isend(self._one, self.src, self.tags[3]))

    def _receive_one(self):
        """Receive one batch whose header has arrived; returns (x, labels, produced_at, serial, origin) or
        None (stop)."""
        self.comm.Recv(self._header, source=self.src, tag=self.tags[0])
        n, produced_at, serial, stop, origin = (int(v) for v in self._header)
        if stop:
            self.stopped = True
            return None
        if self.on_device:  # CUDA-aware MPI: receive straight into device memory (untested)
            import cupy

            x = cupy.empty((n, *self.sample_shape), self.dtype)
        else:
            x = np.empty((n, *self.sample_shape), self.dtype)
        labels = np.empty(n, np.int64)
        self.comm.Recv(x, source=self.src, tag=self.tags[1])  # sent right after its header: here or on its way
        self.comm.Recv(labels, source=self.src, tag=self.tags[2])
        self.received += 1
        return x, labels, produced_at, serial, origin

    def _drain(self):
        """Take in every batch that has arrived (fifo: queue it; replay: store it and credit it at once)."""
        while not self.stopped and self.comm.Iprobe(source=self.src, tag=self.tags[0]):
            got = self._receive_one()
            if got is None:
                break
            if self.replay is None:
                self.waiting.append(got)
            else:
                x, labels, produced_at, _, origin = got
                self.replay.push(x, labels, produced_at, origin)  # serial = push order = the producer's serial
                self._give_credit()

    def get(self, timeout=None):
        """(x, labels, RingEntry) or None if nothing servable came within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._drain()
            got = self._serve()
            if got is not None:
                self.served += 1
                x, labels, entry = got
                return asarray(x), asarray(labels), entry  # host -> device on CuPy; no copy on NumPy
            if self.stopped and self.replay is None:  # fifo promises every batch: a short stream is a bug
                raise RuntimeError(
                    f"rank {self.src} stopped after sending {self.received} batches, fewer than "
                    f"this rank was told to expect; the ranks disagree about the run's length."
                )
            if self.stopped or (deadline is not None and time.monotonic() > deadline):
                return None
            time.sleep(MPI_SPIN_S)

    def _serve(self):
        pushed = self.received  # batches the producer had pushed, as far as this rank can know
        if self.replay is None:
            if not self.waiting:
                return None
            stored = len(self.waiting)  # this one included, as SharedRing counts it
            x, labels, produced_at, serial, origin = self.waiting.popleft()
            self._give_credit()
            return x, labels, RingEntry(serial, produced_at, int(labels.shape[0]), 1, -1, pushed, stored, origin)
        taken = self.replay.take()
        if taken is None:
            return None
        x, labels, e = taken
        return x, labels, RingEntry(e.serial, e.produced_at, e.samples, e.uses, -1, pushed, len(self.replay), e.origin)

    def producer_stopped(self):
        self._drain()
        return self.stopped

    def finish(self):
        """Drain (and credit) whatever still comes until the stop header, then send BYE."""
        while not self.stopped:
            if self.comm.Iprobe(source=self.src, tag=self.tags[0]):
                if self._receive_one() is not None:
                    self.discarded += 1
                    self._give_credit()
            else:
                time.sleep(MPI_SPIN_S)
        self.comm.Send(self._bye, self.src, self.tags[3])
        for r in self.credits_out:
            r.Wait()
        self.credits_out = []

    def stats(self):
        replay = self.replay
        return {
            "policy": self.policy,
            "slots": self.slots,
            "pushed": self.received,
            "served": self.served,
            "overwritten": max(0, replay.pushed - replay.capacity) if replay else 0,
            "dropped_unused": replay.dropped_unused if replay else 0,
            "stored": len(replay) if replay else len(self.waiting),
            "discarded_at_end": self.discarded,
        }
