"""Downpour SGD (`--parallel downpour`): W spawned workers and a parameter server, no worker ever waiting
for another (Dean et al., "Large Scale Distributed Deep Networks", NeurIPS 2012, section 4.1).

Where does each block's gradient come from? **From backprop, on a stale copy of the weights**: each worker
backpropagates with the weights it last fetched and pushes the summed gradient every `n_push` steps; the server
applies each push as it arrives, so it may meet weights other pushes have moved. Staleness of a push = server
version when applied - version fetched; every push is recorded. The protocol, staleness, its choices and why,
BatchNorm, faults: docs/design/runtime.md, "Downpour SGD".
"""

from __future__ import annotations

import os
import secrets
import time
from multiprocessing import shared_memory

import numpy as np

from ..backend import to_numpy
from .data_parallel import Aborted, WorkerGroup, serve_worker, steps_to_run
from .epochs import epochs_on_workers
from .flat import flat_size, gradients, pack, set_gradients, set_weights
from .metrics import WorkerRecorder, epoch_losses
from .processes import POLL_S
from .registry import check
from .shm_ring import RingBroken, RingClosed, SharedRing

_STOP = -1  # `produced_at` of the end-of-data marker in the data ring
VERSION, ABORT = 0, 1  # fields of the weights segment's int64 header


def _weights_views(buf, num_params, dtype):
    """(header, weights) NumPy views of the weights segment: int64 header (version, abort), flat weights."""
    return np.ndarray((8,), np.int64, buf, 0), np.ndarray((num_params,), dtype, buf, 64)


def staleness_stats(values):
    """{"pushes", "mean", "max", "histogram"} of a list of staleness values; histogram[s] = pushes with
    staleness s (a plain list, JSON-ready)."""
    if not values:
        return {"pushes": 0, "mean": 0.0, "max": 0, "histogram": []}
    values = np.asarray(values, np.int64)
    return {
        "pushes": int(values.size),
        "mean": float(values.mean()),
        "max": int(values.max()),
        "histogram": np.bincount(values).tolist(),
    }


class _PushedGradients:
    """Wraps a worker's optimizer: `step()` adds every p.grad to a flat accumulator and updates nothing.

    This is the one line where Downpour changes backprop: the gradient leaves the worker (pushed to the
    server every n_push steps) instead of updating the worker's weights.
    """

    def __init__(self, optimizer, dtype):
        self.optimizer = optimizer
        self.accumulated = np.zeros(flat_size(optimizer.params), dtype)
        self.steps = 0  # gradients in the accumulator

    def __getattr__(self, name):  # params, lr, state, ...: the wrapped optimizer's
        return getattr(self.optimizer, name)

    def step(self):
        pack(
            gradients(self.optimizer.params, "Downpour SGD (it pushes them to the server)"),
            self.accumulated,
            accumulate=True,
        )
        self.steps += 1


# --- the worker (module level, so spawn can import it) ----------------------------------------------------
class _Client:
    """A worker's side of the protocol: take batches, fetch the server's weights, push gradients; every wait
    gives up when the run is aborted or the parent died."""

    def __init__(self, index, header, weights, lock, applied, data_ring, push_ring, pushed, parent):
        self.index, self.header, self.weights, self.lock, self.applied = index, header, weights, lock, applied
        self.data_ring, self.push_ring, self.pushed, self.parent = data_ring, push_ring, pushed, parent
        self.pushes = self.fetches = self.unacknowledged = self.fetched_version = 0

    def check(self):
        if self.header[ABORT]:
            raise Aborted
        if os.getppid() != self.parent:
            raise SystemExit(3)

    def next_batch(self):
        """(x, y, entry) from the data ring."""
        item = self.data_ring.get(timeout=POLL_S)
        while item is None:
            self.check()
            item = self.data_ring.get(timeout=POLL_S)
        return item

    def fetch(self):
        """A private copy of the server's weights (and their version), once our own pushes are applied."""
        while self.unacknowledged:  # read your own writes
            while not self.applied.acquire(timeout=POLL_S):
                self.check()
            self.unacknowledged -= 1
        while not self.lock.acquire(timeout=POLL_S):
            self.check()
        try:
            snapshot, self.fetched_version = self.weights.copy(), int(self.header[VERSION])
        finally:
            self.lock.release()
        self.fetches += 1
        return snapshot

    def push(self):
        """Send the accumulated gradient, with the version it was computed at; empty the accumulator."""
        gradient = self.pushed.accumulated[None, :]
        while not self.push_ring.put(
            gradient, np.array([self.index]), produced_at=self.fetched_version, timeout=POLL_S
        ):
            self.check()  # the ring is full: the server is behind
        self.pushed.accumulated[:] = 0
        self.pushed.steps = 0
        self.pushes += 1
        self.unacknowledged += 1


def _train(trainer, client, recorder, n_fetch, n_push):
    """The worker's loop until the end-of-data marker; returns [(batch number, loss, batch size)]."""
    params, losses = client.pushed.optimizer.params, []
    while True:
        t0 = recorder.now()
        x, y, entry = client.next_batch()
        if entry.produced_at == _STOP:
            recorder.waited(time.time() - t0)
            break
        snapshot = client.fetch() if recorder.steps % n_fetch == 0 else None
        t1 = time.time()
        recorder.waited(t1 - t0)
        if snapshot is not None:
            set_weights(params, snapshot)  # the snapshot is private: views are safe
        loss = trainer.train_step(x, y)  # backprop at the fetched weights; the "update" only accumulates
        losses.append((entry.produced_at, float(loss), int(y.shape[0])))
        t2 = time.time()
        recorder.computed(t1, t2, int(y.shape[0]))
        if recorder.steps % n_push == 0:
            client.push()
            recorder.waited(time.time() - t2)
    if client.pushed.steps:  # the rest of the accumulator, so no gradient is lost
        t0 = time.time()
        client.push()
        recorder.waited(time.time() - t0)
    return losses


def _worker(
    index,
    weights_name,
    num_params,
    dtype,
    lock,
    applied,
    data_ring,
    push_ring,
    n_fetch,
    n_push,
    parent,
    run_started,
    conn,
):
    """Worker `index`: batches from the data ring, gradients at the fetched weights, pushes; reports its
    metrics, [(batch number, loss, batch size)] and its batch-norm buffers (`serve_worker`)."""

    def work(trainer, buf):
        header, weights = _weights_views(buf, num_params, dtype)
        pushed = _PushedGradients(trainer.optimizer, dtype)
        trainer.optimizer = pushed
        trainer.model.train()
        client = _Client(index, header, weights, lock, applied, data_ring, push_ring, pushed, parent)
        recorder = WorkerRecorder(index, run_started, input_is_data=True)
        losses = _train(trainer, client, recorder, n_fetch, n_push)
        metrics = recorder.summary()
        metrics.update(pushes=client.pushes, fetches=client.fetches, wait_seconds=metrics["idle_seconds"])
        return metrics, losses, {name: to_numpy(b).copy() for name, b in trainer.model.named_buffers()}

    serve_worker(index, conn, weights_name, work, closes=(data_ring, push_ring))


# --- the parent: feeder and parameter server -----------------------------------------------------------
def _positive(name, value, meaning):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}.")
    return int(value)


class _Server:
    """The parameter server's state in the parent: version, push records, and how to apply one push."""

    def __init__(self, optimizer, weights, header, lock, applied, check):
        self.optimizer, self.weights, self.header, self.lock, self.applied = optimizer, weights, header, lock, applied
        self.check = check  # raises WorkerFailed if a worker failed (called while waiting for the lock)
        self.version = 0
        self.records = []  # (worker, fetched version, applied version, staleness)
        self.seconds = 0.0
        self.publish()

    def publish(self):
        """Write the weights and the version into the segment, under the lock (a fetch never sees half)."""
        while not self.lock.acquire(timeout=POLL_S):
            self.check()
        try:
            pack([p.data for p in self.optimizer.params], self.weights)
            self.header[VERSION] = self.version
        finally:
            self.lock.release()

    def apply(self, push):
        """One push (gradient (1, P), [worker], entry with produced_at = fetched version): one optimizer step."""
        t0 = time.perf_counter()
        gradient, worker, entry = push[0][0], int(push[1][0]), push[2]
        set_gradients(self.optimizer.params, gradient)
        self.optimizer.step()
        staleness = self.version - entry.produced_at  # pushes applied since the worker's fetch
        self.version += 1
        self.records.append((worker, entry.produced_at, self.version, staleness))
        self.publish()
        self.applied[worker].release()
        self.seconds += time.perf_counter() - t0


class _Feeder:
    """The parent's loop: batches into the data ring, pushes applied as they arrive, workers watched."""

    def __init__(self, data_ring, push_ring, server, check):
        self.data_ring, self.push_ring, self.server, self.check = data_ring, push_ring, server, check
        self.last_check = 0.0

    def serve(self, timeout_s):
        """Apply the pushes that arrive within timeout_s (then every one already waiting); check the
        workers if the last check is POLL_S old."""
        push = self.push_ring.get(timeout=timeout_s)
        while push is not None:
            self.server.apply(push)
            push = self.push_ring.get(timeout=0)
        if time.perf_counter() - self.last_check >= POLL_S:
            self.last_check = time.perf_counter()
            self.check()

    def feed(self, x, y, produced_at):
        """Put one batch into the data ring, serving pushes while it is full."""
        while not self.data_ring.put(x, y, produced_at=produced_at, timeout=0):
            self.serve(0.01)
        self.serve(0)

    def run(self, trainer, train_loader, start_epoch, epochs, workers, results):
        """Every batch of the epochs, one end-of-data marker per worker, then pushes until every worker reported."""
        number = 0  # batch number in this run: the data ring's `produced_at`
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            for x, y in train_loader:
                self.feed(to_numpy(x), to_numpy(y), number)
                number += 1
        stop_x = np.zeros((1, *trainer.model.input_shape), self.data_ring.handle.dtype)
        for _ in range(workers):
            self.feed(stop_x, np.zeros(1, np.int64), _STOP)
        while len(results) < workers:
            self.serve(0.05)
            self.last_check = time.perf_counter()
            self.check()
        self.serve(0)  # every worker put its last push before reporting: apply what is left


def _open_rings(rings, prefix, workers, trainer, train_loader, push_shape, dtype, ctx):
    """Append the data ring (batches, for whichever worker is free) and the push ring (gradients, for the
    server) to `rings` one at a time, so that the caller closes whatever was opened if the next one fails."""
    x_dtype = getattr(train_loader, "dtype", "float32")
    shape, batch = trainer.model.input_shape, int(train_loader.batch_size)
    rings.append(SharedRing(2 * workers, batch, shape, x_dtype, policy="fifo", name=f"{prefix}_data", ctx=ctx))
    rings.append(SharedRing(2 * workers, 1, push_shape, dtype, policy="fifo", name=f"{prefix}_push", ctx=ctx))


def run_downpour(
    trainer,
    train_loader,
    epochs,
    workers=2,
    n_fetch=1,
    n_push=1,
    threads_per_worker=1,
    start_epoch=0,
    timeout=None,
    log=None,
    run_started=None,
):
    """Train `trainer` (a BackpropTrainer) with Downpour SGD: `workers` processes, the parent as parameter server.

    Each batch of `train_loader` is taken by one worker (whichever is free); a worker fetches the weights
    every `n_fetch` of its steps and pushes its summed gradients every `n_push` steps (and at the end); the
    server applies each push with the trainer's optimizer as it arrives (docs/design/runtime.md). Afterwards the
    trainer holds the server's final weights and optimizer state (and the batch-norm statistics of the
    worker with the most steps). Versions count the pushes applied in this run, from 0.
    threads_per_worker: BLAS threads of each worker. timeout: seconds before the run is stopped (None: no
    limit).

    Returns (JSON-ready) {"workers": [per worker: worker, steps, samples, pushes, fetches, busy_seconds,
    wait_seconds, staleness], "steps", "samples", "pushes", "n_fetch", "n_push", "staleness" (overall:
    pushes, mean, max, histogram), "push_log" ([worker, fetched version, applied version, staleness] per
    push, in the order applied), "server_seconds" (applying pushes), "startup_seconds" (spawning the workers),
    "seconds" (training: from every worker started to the last result), "samples_per_second", "train_loss"
    (per epoch, sample-weighted), "last_loss" (on the loader's last batch)}.
    """
    check("downpour", "shm", trainer)
    workers = _positive("workers", workers, "the number of worker processes")
    n_fetch = _positive("n_fetch", n_fetch, "fetch the weights every n_fetch steps")
    n_push = _positive("n_push", n_push, "push the accumulated gradient every n_push steps")
    steps_to_run(train_loader, epochs, start_epoch)
    params = trainer.optimizer.params
    num_params, dtype = flat_size(params), np.dtype(params[0].data.dtype)
    group = WorkerGroup("Downpour", timeout)
    lock, applied = group.ctx.Lock(), [group.ctx.Semaphore(0) for _ in range(workers)]
    prefix = f"tdgl_{os.getpid()}_downpour_{secrets.token_hex(4)}"
    shm = shared_memory.SharedMemory(name=prefix, create=True, size=64 + num_params * dtype.itemsize)
    header, weights = _weights_views(shm.buf, num_params, dtype)
    header[:] = 0
    rings = []
    started = time.perf_counter()
    run_started = time.time() if run_started is None else run_started
    try:
        _open_rings(rings, prefix, workers, trainer, train_loader, (num_params,), dtype, group.ctx)
        server = _Server(trainer.optimizer, weights, header, lock, applied, group.check)
        shared = (shm.name, num_params, dtype.name, lock)
        common = (*rings, n_fetch, n_push, os.getpid(), run_started)
        args = lambda w: (w, *shared, applied[w], *common)  # noqa: E731
        group.start(_worker, "tinydgl-downpour-worker", workers, args, trainer, threads_per_worker)
        ready = time.perf_counter()  # every worker started and has its model: training starts
        if log:
            log(
                f"downpour: {workers} workers, n_fetch={n_fetch}, n_push={n_push}, {num_params:,} weights on the "
                f"parameter server (the parent process)"
            )
        try:
            _Feeder(*rings, server, group.check).run(trainer, train_loader, start_epoch, epochs, workers, group.results)
        except (RingBroken, RingClosed):  # a worker died inside put/get: name it if we can
            group.check(1.0)
            raise
        seconds, startup_seconds = time.perf_counter() - ready, ready - started
    finally:
        if len(group.results) < workers:
            header[ABORT] = 1  # waiting workers see it within POLL_S
            for ring in rings:
                ring.abort()
        group.stop()
        for ring in rings:
            ring.close()
        del header, weights
        shm.close()
        shm.unlink()
    results = [group.results[w] for w in range(workers)]
    result = _downpour_result(trainer, results, server.records, len(train_loader), epochs - start_epoch, seconds)
    extra = dict(n_fetch=n_fetch, n_push=n_push, server_seconds=server.seconds, startup_seconds=startup_seconds)
    return {**result, **extra}


def _downpour_result(trainer, results, records, batches_per_epoch, epochs, seconds):
    """Load the batch-norm statistics of the worker that saw the most batches (docs/design/runtime.md, "BatchNorm
    caveat": the weights and optimizer already are the server's) and build the run's dict."""
    buffers = max(results, key=lambda r: r[2]["steps"])[4]
    if buffers:
        state = trainer.model.state_dict()
        state.update(buffers)
        trainer.model.load_state_dict(state)
    metrics = [r[2] for r in results]
    for w, m in enumerate(metrics):
        mine = [r[3] for r in records if r[0] == w]
        if m["pushes"] != len(mine):
            raise RuntimeError(
                f"Downpour worker {w} pushed {m['pushes']} times but the server applied "
                f"{len(mine)} of its pushes; please report this."
            )
        m["staleness"] = staleness_stats(mine)
    step_losses = [(loss, n) for _, loss, n in sorted(step for r in results for step in r[3])]  # by batch number
    samples = sum(n for _, n in step_losses)
    return {
        "workers": metrics,
        "steps": len(step_losses),
        "samples": samples,
        "pushes": len(records),
        "staleness": staleness_stats([r[3] for r in records]),
        "push_log": [list(r) for r in records],
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "train_loss": epoch_losses(step_losses, batches_per_epoch, epochs),
        "last_loss": step_losses[-1][0],
    }


def fit_downpour(
    trainer,
    train_loader,
    test_loader,
    epochs,
    workers=2,
    log=print,
    checkpoint_dir=None,
    resume=False,
    bn_recalibrate=0,
    **options,
):
    """`tinydgl.train.fit`'s history (one dict per epoch, with the run's staleness and push log) for a
    Downpour run; checkpoints and resume as in `runtime.epochs.epochs_on_workers`. Each epoch starts fresh workers
    (about a second) and ends with an evaluation in the parent, with the server's weights; the server's
    optimizer state carries over. options: for `run_downpour` (n_fetch, n_push, threads_per_worker, timeout)."""

    def run_epoch(epoch, run_started):
        run = run_downpour(
            trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch, run_started=run_started, **options
        )
        log(
            f"  staleness of {run['pushes']} pushes: mean {run['staleness']['mean']:.2f}, max {run['staleness']['max']}"
        )
        return run

    return epochs_on_workers(
        run_epoch,
        trainer,
        test_loader,
        epochs,
        f"{workers} Downpour workers",
        checkpoint_dir,
        resume,
        log,
        train_loader=train_loader,
        bn_recalibrate=bn_recalibrate,
    )
