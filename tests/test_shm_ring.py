"""The shared-memory ring buffer between worker processes (tinydgl.runtime.SharedRing).

Worker processes are started with the spawn method, as the runtime will start them; each start costs
about a second on a busy 2-core machine, so only three tests start any.
"""

import gc
import multiprocessing as mp
import os
import signal
import threading
import time
import zlib

import numpy as np
import pytest

from tinydgl.runtime import RingClosed, SharedRing
from tinydgl.runtime.shm_ring import READY, STATE
from tinydgl.trainers.buffers import ReplayBuffer

SPAWN = mp.get_context("spawn")
SHAPE = (4, 5)


def _batch(i, max_batch=8):
    """Batch number i: a size (1..max_batch) and contents that depend on i only."""
    rng = np.random.default_rng(i)
    n = int(rng.integers(1, max_batch + 1))
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), np.full(n, i, dtype=np.int64)


def _crc(x, y):
    return zlib.crc32(y.tobytes(), zlib.crc32(np.ascontiguousarray(x).tobytes()))


# --- worker processes (module level, so spawn can import them) --------------------------------------
def _producer(ring, count, results):
    crcs = []
    for i in range(count):
        x, y = _batch(i)
        assert ring.put(x, y, produced_at=i, timeout=10)
        crcs.append(_crc(x, y))
        x[:] = np.nan  # the ring has its own copy
    results.put(("producer", crcs))
    ring.close()


def _consumer(ring, count, results):
    seen = []
    for _ in range(count):
        x, y, entry = ring.get(timeout=10)
        seen.append((entry.serial, entry.produced_at, int(y[0]), _crc(x, y)))
    results.put(("consumer", seen))
    ring.close()


def _counted_producer(ring, count):
    for i in range(count):
        ring.put(*_batch(i), produced_at=i)
    ring.close()


def _endless_producer(ring):
    i = 0
    while True:
        ring.put(*_batch(i), produced_at=i)
        i += 1


def _join(process, timeout=20):
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"worker {process.name} did not finish in {timeout} s")
    assert process.exitcode == 0, f"worker {process.name} exited with code {process.exitcode}"


# --- FIFO ----------------------------------------------------------------------------------------------
def test_fifo_across_spawned_processes_keeps_order_and_data():
    count = 200
    with SharedRing(3, 8, SHAPE, policy="fifo") as ring:
        results = SPAWN.Queue()
        workers = [
            SPAWN.Process(target=_producer, args=(ring, count, results), name="producer"),
            SPAWN.Process(target=_consumer, args=(ring, count, results), name="consumer"),
        ]
        for w in workers:
            w.start()
        got = dict(results.get(timeout=30) for _ in workers)
        for w in workers:
            _join(w)
        serials, produced_at, labels, crcs = zip(*got["consumer"])
        assert list(serials) == list(range(count))  # strict order, nothing lost or repeated
        assert list(produced_at) == list(labels) == list(range(count))
        assert list(crcs) == got["producer"]  # every byte arrived intact
        stats = ring.stats()
        assert stats["pushed"] == stats["served"] == count and stats["stored"] == 0
        # the workers only closed their mappings: the ring still works here
        x, y = _batch(0)
        assert ring.put(x, y, timeout=0) and np.array_equal(ring.get(timeout=0)[0], x)


def test_fifo_blocks_when_full_and_when_empty():
    with SharedRing(2, 4, SHAPE, policy="fifo") as ring:
        start = time.monotonic()
        assert ring.get(timeout=0.15) is None  # empty: waits the whole timeout
        assert time.monotonic() - start >= 0.14
        for i in range(2):
            assert ring.put(*_batch(i, 4), timeout=0)
        start = time.monotonic()
        assert ring.put(*_batch(2, 4), timeout=0.15) is False  # full: waits, then gives up
        assert time.monotonic() - start >= 0.14 and ring.stats()["pushed"] == 2

        done = []
        blocked = threading.Thread(target=lambda: done.append(ring.put(*_batch(2, 4), timeout=5)))
        blocked.start()
        time.sleep(0.2)
        assert not done  # still waiting for a free slot
        assert int(ring.get(timeout=0)[1][0]) == 0  # frees one
        blocked.join(5)
        assert done == [True]
        assert [int(ring.get(timeout=0)[1][0]) for _ in range(2)] == [1, 2]


def test_put_copies_so_the_caller_may_reuse_its_array():
    with SharedRing(2, 4, SHAPE) as ring:
        x, y = _batch(7, 4)
        expected_x, expected_y = x.copy(), y.copy()
        ring.put(x, y)
        x[:] = -1.0  # what multiprocessing.Queue would send instead, if its feeder thread had not run yet
        y[:] = -1
        got_x, got_y, entry = ring.get()
        assert np.array_equal(got_x, expected_x) and np.array_equal(got_y, expected_y)
        assert entry.samples == len(expected_y)
        got_x[:] = 0.0  # a copy, not a view into the segment
        ring.put(expected_x, expected_y)
        assert np.array_equal(ring.get()[0], expected_x)


# --- replay (Algorithm 2) -------------------------------------------------------------------------------
class _RingAsReplayBuffer:
    """SharedRing behind ReplayBuffer's push/take names, to run one scenario on both."""

    def __init__(self, capacity, reuse_cap):
        self.ring = SharedRing(capacity, 1, (2,), policy="replay", reuse_cap=reuse_cap)

    def push(self, x, labels, produced_at=0):
        assert self.ring.put(x, labels, produced_at, timeout=0)

    def take(self):
        return self.ring.get(timeout=0)

    def stored_labels(self):
        self.ring._acquire_lock()
        try:
            ready = np.flatnonzero(self.ring._slots[:, STATE] == READY)
            return sorted(int(v) for v in self.ring._labels[ready, 0])
        finally:
            self.ring._lock.release()

    dropped_unused = property(lambda self: self.ring.stats()["dropped_unused"])


@pytest.mark.parametrize("kind", ["ReplayBuffer", "SharedRing"])
def test_replay_policy_fewest_uses_then_freshest_same_as_in_process_buffer(kind):
    if kind == "ReplayBuffer":
        buffer = ReplayBuffer(3, reuse_cap=2)
        stored = lambda: sorted(int(e.labels[0]) for e in buffer.entries)  # noqa: E731
    else:
        buffer = _RingAsReplayBuffer(3, reuse_cap=2)
        stored = buffer.stored_labels
    for i in range(3):
        buffer.push(np.full((1, 2), float(i)), np.array([i]), produced_at=i)

    def take():
        served = buffer.take()
        if served is None:
            return None
        x, labels, entry = served
        assert float(x[0, 0]) == labels[0] and entry.produced_at == labels[0]
        return int(labels[0])

    assert [take(), take(), take()] == [2, 1, 0]  # all unused: freshest first
    assert take() == 2  # all used once: freshest again (the official code would pick slot 0 here)
    buffer.push(np.full((1, 2), 3.0), np.array([3]), produced_at=3)  # full: replaces batch 0, the oldest
    assert stored() == [1, 2, 3]
    assert [take(), take(), take()] == [3, 3, 1]  # unused 3; then 3 and 1 tie at one use: the fresher, 3
    assert take() is None  # every batch has been served twice: the cap is reached
    assert buffer.dropped_unused == 0
    buffer.push(np.full((1, 2), 4.0), np.array([4]), produced_at=4)  # replaces 1 (served twice)
    buffer.push(np.full((1, 2), 5.0), np.array([5]), produced_at=5)  # replaces 2
    buffer.push(np.full((1, 2), 6.0), np.array([6]), produced_at=6)  # replaces 3
    buffer.push(np.full((1, 2), 7.0), np.array([7]), produced_at=7)  # replaces 4, never served
    assert stored() == [5, 6, 7] and buffer.dropped_unused == 1
    assert [take(), take(), take(), take()] == [7, 6, 5, 7]
    if kind == "SharedRing":
        buffer.ring.close()


def test_replay_get_waits_for_a_push_or_reports_a_skip():
    with SharedRing(2, 4, SHAPE, policy="replay", reuse_cap=1) as ring:
        assert ring.get(timeout=0) is None  # nothing stored: the caller counts a skip, at once
        threading.Timer(0.15, lambda: ring.put(*_batch(1, 4), produced_at=1)).start()
        start = time.monotonic()
        x, y, entry = ring.get(timeout=5)  # woken by the push, not by the timeout
        assert time.monotonic() - start < 2 and entry.serial == 0 and entry.uses == 1 and int(y[0]) == 1
        assert ring.get(timeout=0.1) is None  # its one use (reuse_cap=1) is spent
        # Full ring: pushes never wait, the oldest batch goes
        for i in range(2, 6):
            assert ring.put(*_batch(i, 4), timeout=0)
        assert ring.stats() == {
            "policy": "replay",
            "slots": 2,
            "pushed": 5,
            "served": 1,
            "overwritten": 3,
            "dropped_unused": 2,
            "stored": 2,
        }


def test_replay_across_processes_never_serves_a_torn_batch():
    count, cap = 400, 2
    with SharedRing(2, 8, SHAPE, policy="replay", reuse_cap=cap) as ring:
        producer = SPAWN.Process(target=_counted_producer, args=(ring, count), name="producer")
        producer.start()
        served, uses = 0, {}
        while producer.is_alive() or len(ring):
            got = ring.get(timeout=0.05)
            if got is None:  # a skip; ends once the producer is done and everything was served `cap` times
                if not producer.is_alive() and ring.get(timeout=0) is None:
                    break
                continue
            x, y, entry = got
            i = int(y[0])
            expected_x, expected_y = _batch(i)
            # slots are overwritten while we read others: each batch must still be exactly one producer batch
            assert entry.serial == entry.produced_at == i and np.array_equal(x, expected_x)
            assert np.array_equal(y, expected_y)
            uses[i] = uses.get(i, 0) + 1
            assert uses[i] == entry.uses <= cap
            served += 1
        _join(producer)
        stats = ring.stats()
        assert stats["pushed"] == count and stats["served"] == served and served > 0
        assert stats["overwritten"] == count - 2


def test_abort_wakes_blocked_workers():
    with SharedRing(1, 4, SHAPE, policy="fifo") as ring:
        errors = []

        def wait():
            try:
                ring.get()  # would block forever
            except RingClosed as err:
                errors.append(err)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.1)
        start = time.monotonic()
        ring.abort()
        waiter.join(2)
        assert len(errors) == 1 and "aborted" in str(errors[0]) and time.monotonic() - start < 1
        with pytest.raises(RingClosed):
            ring.put(*_batch(0, 4))


def test_rejects_batches_that_do_not_fit():
    with SharedRing(1, 4, SHAPE) as ring:
        with pytest.raises(ValueError, match=r"shape \(1..4, 4, 5\)"):
            ring.put(np.zeros((5, *SHAPE), np.float32), np.zeros(5, np.int64))  # more than max_batch
        with pytest.raises(ValueError, match="shape"):
            ring.put(np.zeros((2, 5, 4), np.float32), np.zeros(2, np.int64))
        with pytest.raises(ValueError, match="labels"):
            ring.put(np.zeros((2, *SHAPE), np.float32), np.zeros(3, np.int64))
        with pytest.raises(TypeError, match="float32"):
            ring.put(np.zeros((2, *SHAPE), np.complex64), np.zeros(2, np.int64))
        assert ring.stats()["pushed"] == 0 and ring.put(np.zeros((2, *SHAPE)), [0, 1], timeout=0)  # float64 is cast
    with pytest.raises(ValueError, match="policy"):
        SharedRing(1, 4, SHAPE, policy="lifo")
    with pytest.raises(ValueError, match="reuse_cap"):
        SharedRing(1, 4, SHAPE, policy="fifo", reuse_cap=2)


# --- cleanup and faults -----------------------------------------------------------------------------
def _segment_exists(name):
    if os.path.isdir("/dev/shm"):
        return os.path.exists(f"/dev/shm/{name}")
    try:
        from multiprocessing import shared_memory

        shared_memory.SharedMemory(name=name).close()
        return True
    except FileNotFoundError:
        return False


def test_no_segment_left_after_close_or_garbage_collection():
    ring = SharedRing(2, 4, SHAPE)
    name, handle = ring.name, ring.handle
    assert _segment_exists(name)
    attached = SharedRing.attach(handle)
    attached.put(*_batch(0, 4))
    attached.close()  # an attacher only unmaps
    assert _segment_exists(name) and len(ring) == 1
    ring.close()
    ring.close()  # idempotent
    assert not _segment_exists(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SharedRing.attach(handle)
    with pytest.raises(RingClosed):
        ring.get(timeout=0)

    forgotten = SharedRing(2, 4, SHAPE, policy="replay")
    name = forgotten.name
    del forgotten
    gc.collect()
    assert not _segment_exists(name)  # the finalizer unlinked it


def test_producer_killed_while_waiting_leaves_the_ring_usable():
    ring = SharedRing(2, 8, SHAPE, policy="fifo")
    producer = SPAWN.Process(target=_endless_producer, args=(ring,), name="producer", daemon=True)
    producer.start()
    try:
        deadline = time.monotonic() + 30
        while len(ring) < 2:  # the ring fills up, then the producer waits for a free slot
            assert time.monotonic() < deadline and producer.is_alive(), "the producer did not fill the ring"
            time.sleep(0.05)
        time.sleep(0.3)  # now blocked in put, holding neither the lock nor a slot
        os.kill(producer.pid, signal.SIGKILL)
        producer.join(5)
        assert producer.exitcode == -signal.SIGKILL
        assert ring.stats()["pushed"] == 2
        for i in range(2):  # what it left is intact
            x, y, entry = ring.get(timeout=1)
            expected_x, expected_y = _batch(i)
            assert entry.serial == i and np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
        for i in range(2, 6):  # and the ring goes on working: both slots cycle through again
            assert ring.put(*_batch(i), produced_at=i, timeout=1)
            x, y, entry = ring.get(timeout=1)
            assert entry.serial == i and np.array_equal(x, _batch(i)[0])
    finally:
        if producer.is_alive():
            producer.kill()
        name = ring.name
        ring.close()
    assert not _segment_exists(name)
