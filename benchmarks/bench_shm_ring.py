"""Passing (activation, label) batches between two spawned processes: SharedRing vs multiprocessing.Queue.

What the module-parallel runtime needs from the buffer between two workers, measured for CIFAR-sized
batches (128 x 3 x 32 x 32 float32 = 1.5 MiB, plus 128 int64 labels):

- throughput: a producer process puts batches as fast as it can, a consumer process gets them; batches
  per second over the consumer's run (first batch to last, so process start-up is not counted);
- round trip: process A sends a batch to B, B sends it straight back; the time A waits, per round trip
  (median and 90th percentile), for the full batch and for a 1-sample batch (the synchronisation cost);
- changed after put: the producer reuses one array and writes the batch's index into label 0 before each
  put; batches the consumer received with a later index had been changed after `put` returned.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_shm_ring.py [--batches 300] [--round-trips 200] [--slots 4]

SharedRing here is policy="fifo" (every batch delivered once, as multiprocessing.Queue does).
"""

import argparse
import multiprocessing as mp
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # spawned workers inherit it

import numpy as np

from tinydgl.runtime import SharedRing

SPAWN = mp.get_context("spawn")
SAMPLE = (3, 32, 32)


def _send(channel, x, y):
    if isinstance(channel, SharedRing):
        channel.put(x, y)
    else:
        channel.put((x, y))


def _receive(channel):
    if isinstance(channel, SharedRing):
        x, y, _ = channel.get(timeout=30)
        return x, y
    return channel.get(timeout=30)


def _producer(channel, batches, n):
    x = np.random.default_rng(0).standard_normal((n, *SAMPLE)).astype(np.float32)
    y = np.arange(n, dtype=np.int64)
    for i in range(batches):
        y[0] = i  # a ring copies at put; a Queue pickles later in its feeder thread (see the RESULTS section)
        _send(channel, x, y)


def _consumer(channel, batches, result):
    """Reports (batches/s, batches whose label 0 is not the index the producer wrote before sending it)."""
    wrong = int(_receive(channel)[1][0] != 0)
    start = time.perf_counter()
    for i in range(1, batches):
        wrong += int(_receive(channel)[1][0] != i)
    result.put(((batches - 1) / (time.perf_counter() - start), wrong))


def _echo(inbox, outbox, trips):
    for _ in range(trips):
        x, y = _receive(inbox)
        _send(outbox, x, y)


def _make(kind, slots, n):
    if kind == "SharedRing":
        return SharedRing(slots, n, SAMPLE, policy="fifo")
    return SPAWN.Queue(maxsize=slots)


def _close(channel):
    if isinstance(channel, SharedRing):
        channel.close()
    else:
        channel.close()
        channel.join_thread()


def throughput(kind, batches, slots, n=128):
    channel, result = _make(kind, slots, n), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_producer, args=(channel, batches, n)),
        SPAWN.Process(target=_consumer, args=(channel, batches, result)),
    ]
    for w in workers:
        w.start()
    rate, wrong = result.get(timeout=300)
    for w in workers:
        w.join()
    _close(channel)
    return rate, wrong


def round_trip(kind, trips, slots, n):
    there, back = _make(kind, slots, n), _make(kind, slots, n)
    echo = SPAWN.Process(target=_echo, args=(there, back, trips + 5))
    echo.start()
    x = np.random.default_rng(0).standard_normal((n, *SAMPLE)).astype(np.float32)
    y = np.arange(n, dtype=np.int64)
    times = []
    for i in range(trips + 5):
        start = time.perf_counter()
        _send(there, x, y)
        _receive(back)
        if i >= 5:  # the first few warm up caches and page mappings
            times.append(time.perf_counter() - start)
    echo.join()
    _close(there)
    _close(back)
    return np.median(times) * 1e3, np.percentile(times, 90) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300, help="batches per throughput run")
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4, help="ring slots / Queue maxsize")
    args = parser.parse_args()
    mib = 128 * np.prod(SAMPLE) * 4 / 2**20
    print(
        f"batch: 128 x {SAMPLE} float32 = {mib:.2f} MiB + 128 int64 labels; slots/maxsize {args.slots}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'channel':<12} {'batches/s':>10} {'MiB/s':>8} {'round trip 1.5 MiB (median / p90)':>34} "
        f"{'round trip 1 sample':>22} {'changed after put':>18}"
    )
    for kind in ("SharedRing", "Queue"):
        rate, wrong = throughput(kind, args.batches, args.slots)
        big = round_trip(kind, args.round_trips, args.slots, 128)
        small = round_trip(kind, args.round_trips, args.slots, 1)
        print(
            f"{kind:<12} {rate:>10.0f} {rate * mib:>8.0f} {big[0]:>20.3f} / {big[1]:.3f} ms "
            f"{small[0]:>10.3f} / {small[1]:.3f} ms {wrong:>8d} / {args.batches}",
            flush=True,
        )


if __name__ == "__main__":
    main()
