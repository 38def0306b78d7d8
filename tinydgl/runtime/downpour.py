"""Downpour SGD (`downpour`): W spawned workers and a parameter server, no worker ever waiting for another
(Dean et al., "Large Scale Distributed Deep
Networks", NeurIPS 2012, section 4.1).

Where does each block's gradient come from? **From backprop, on a stale copy of the weights**: each worker
runs `BackpropTrainer.train_step` on its own mini-batches with the weights it last *fetched* from the
server; the worker's optimizer is wrapped in `_PushedGradients`, whose `step()` adds the gradients to an
accumulator instead of updating anything. Every `n_push` steps the worker pushes the accumulated (summed)
gradient; the server applies it with the trainer's own optimizer as soon as it arrives (the paper used
Adagrad; we use whatever the trainer was built with). Meanwhile other workers' pushes may have moved the
weights, so the gradient is applied to weights it was not computed at. That gap is the *staleness*:

    staleness of a push = server version when it is applied - version the worker last fetched

where the version counts the pushes applied so far. Every push is recorded (worker, fetched version,
applied version = the version it creates, staleness) and summarised per worker and overall.

The protocol (the parent process is the server; `fetch` every n_fetch steps, `push` every n_push steps):

    parent = server + feeder                               worker w (one of W, each a model copy)
    ------------------------------------------            ------------------------------------------
    loader -> batches ----> [data ring, fifo] ----------->  get a batch (whoever is free takes the next)
                                                            every n_fetch steps: wait for its own pushes
    [shared weights + version] --(lock, copy)------------>    to be applied, then fetch (weights, version)
                                                            forward + backward at the fetched weights
                                                            accumulate the gradient
    get a push <---- [push ring, fifo: (gradient, w, v)] <- every n_push steps (and at the end): push
    p.grad = gradient; optimizer.step(); version += 1
    write weights + version (lock); record staleness

Choices, and why:
- The server is the parent process, not a process of its own: the trainer and its optimizer state already
  live there (so afterwards the trainer simply *is* the server's final state, no copying back), one process
  fewer competes for the cores, and a server failure is an exception in the caller's own process (cleaned up
  by the same `finally` as every other failure). Applying a push is one optimizer step, cheap next to a
  worker's forward + backward, and the parent does it between copying batches into the data ring.
- One shared data ring instead of fixed shards: the parent reads the loader in order and every batch is
  taken by exactly one worker, whichever is free first. Fixed shards (batch i to worker i % W) would make a
  fast worker wait for the feeder to get past a slow worker's batches, i.e. wait for another worker; with a
  shared queue a slow worker simply takes fewer batches (per-worker `steps` in the metrics show it).
- A worker waits for its *own* pushes to be applied before it fetches ("read your own writes"). It never
  waits for another worker, only for the server, and so staleness counts exactly the updates it did not
  see: with W = 1 and n_fetch = n_push = 1 every staleness is 0 and the run equals single-process SGD
  (tests/test_downpour.py checks 1e-10 in float64). The paper's client fetches asynchronously instead and
  may miss even its own last push.
- Between fetches the worker's weights stay as fetched. The paper's client also takes a local plain-SGD
  step after each gradient (Algorithm 7.1 in its appendix); we leave that out, so n_fetch > 1 means "compute
  n_fetch gradients at the same weights", which makes the effect of n_fetch easy to read.
- The pushed gradient is the *sum* of the n_push gradients (the paper's "accrued gradients"), so with SGD
  one push moves the weights about as far as n_push single steps would.
- Weights are read under a `multiprocessing.Lock` (held only for one copy), never torn: a push's weights and
  version are written together.

What differs from `dp-sync` (data_parallel.py): there, each batch is cut into W shards, the W shard
gradients are averaged and every copy applies the same update, so the copies stay identical and equal
single-process SGD, but every step waits for the slowest worker. Here each whole batch goes to one worker,
W batches are in flight at once and nobody waits for anybody; the price is that gradients are computed at
stale weights. The server takes one optimizer step per push (per batch when n_push = 1), so an epoch has as
many updates as single-process SGD, not W times fewer as in dp-sync with a W-times-larger batch.

BatchNorm caveat: the server only sees gradients; batch-norm running statistics are buffers, not
parameters, so each worker keeps its own (computed on its batches, with its own stale weights) and the
parent takes those of the worker that took the most steps (dp-sync takes worker 0's). Evaluation then uses
statistics that do not quite belong to the server's final weights; models without BatchNorm (`cnn`,
`mlp(batchnorm=False)`) have no such issue. Dropout: every worker starts from the same generator state, so
the workers draw the same sequence of masks (on different batches).

Faults (as in `data_parallel.py` and `engine.py`). While it waits for anything (a free slot in the data
ring, a push, the weights' lock) the parent checks, at least every POLL_S, every worker's
`Process.sentinel` and result pipe with `multiprocessing.connection.wait`. A worker that died or reported an
exception stops the run: the parent sets the abort flag in the weights' segment, aborts both rings (blocked
workers raise within their poll interval and exit), stops every worker (terminate, then kill), closes and
unlinks every segment and raises `WorkerFailed` naming the worker. An exception in the server (the parent)
goes through the same cleanup. Workers poll too: a worker whose parent died exits. NumPy backend only.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time
import traceback
from multiprocessing import shared_memory

import numpy as np

from ..backend import get_backend, to_numpy
from .processes import (DONE as _DONE, ERROR as _ERROR, POLL_S, WorkerFailed, ignore_stop_signals, poll_workers,
                        start_worker, stop_processes, worker_thread_environment)
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder
from .shm_ring import RingBroken, RingClosed, SharedRing

_STOP = -1  # `produced_at` of the end-of-data marker in the data ring
VERSION, ABORT = 0, 1  # fields of the weights segment's int64 header


class _Aborted(Exception):
    """The parent set the abort flag (another worker failed, or the run timed out)."""


def _weights_views(buf, num_params, dtype):
    """(header, weights) NumPy views of the weights segment: int64 header (version, abort), flat weights."""
    return np.ndarray((8,), np.int64, buf, 0), np.ndarray((num_params,), dtype, buf, 64)


def staleness_stats(values):
    """{"pushes", "mean", "max", "histogram"} of a list of staleness values; histogram[s] = pushes with
    staleness s (a plain list, JSON-ready)."""
    if not values:
        return {"pushes": 0, "mean": 0.0, "max": 0, "histogram": []}
    values = np.asarray(values, np.int64)
    return {"pushes": int(values.size), "mean": float(values.mean()), "max": int(values.max()),
            "histogram": np.bincount(values).tolist()}


class _PushedGradients:
    """Wraps a worker's optimizer: `step()` adds every p.grad to a flat accumulator and updates nothing.

    This is the one line where Downpour changes backprop: the gradient leaves the worker (pushed to the
    server every n_push steps) instead of updating the worker's weights.
    """

    def __init__(self, optimizer, dtype):
        self.optimizer = optimizer
        self.accumulated = np.zeros(sum(p.data.size for p in optimizer.params), dtype)
        self.steps = 0  # gradients in the accumulator

    def __getattr__(self, name):  # params, lr, state, ...: the wrapped optimizer's
        return getattr(self.optimizer, name)

    def step(self):
        offset = 0
        for p in self.optimizer.params:
            if p.grad is None:
                raise RuntimeError(f"Parameter of shape {p.shape} got no gradient; Downpour SGD pushes every "
                                   f"parameter's gradient to the server.")
            self.accumulated[offset:offset + p.data.size] += to_numpy(p.grad).ravel()
            offset += p.data.size
        self.steps += 1


# --- the worker (module level, so spawn can import it) ----------------------------------------------------
def _worker(index, weights_name, num_params, dtype, lock, applied, data_ring, push_ring, n_fetch, n_push,
            parent, run_started, conn):
    """Worker `index`: receives its model copy (a trainer), then batches from the data ring, gradients at
    the fetched weights, pushes. Reports ("done", index, metrics, losses, buffers) or ("error", index,
    traceback). Ctrl-C is the parent's: it stops the workers."""
    ignore_stop_signals()  # Ctrl-C and SIGTERM are the parent's: it stops the workers
    shm = None
    try:
        trainer = conn.recv()
        shm = shared_memory.SharedMemory(name=weights_name)
        header, weights = _weights_views(shm.buf, num_params, dtype)

        def check():
            if header[ABORT]:  # noqa: F821 (the views are deleted after the last step)
                raise _Aborted
            if os.getppid() != parent:
                raise SystemExit(3)

        pushed = _PushedGradients(trainer.optimizer, dtype)
        trainer.optimizer = pushed
        trainer.model.train()
        params = pushed.optimizer.params
        recorder = WorkerRecorder(index, run_started, input_is_data=True)
        pushes = fetches = unacknowledged = 0
        fetched_version = 0
        losses = []  # (batch number in the run, loss, batch size)

        def push():
            nonlocal pushes, unacknowledged
            gradient = pushed.accumulated[None, :]
            while not push_ring.put(gradient, np.array([index]), produced_at=fetched_version, timeout=POLL_S):
                check()  # the ring is full: the server is behind
            pushed.accumulated[:] = 0
            pushed.steps = 0
            pushes += 1
            unacknowledged += 1

        while True:
            t0 = recorder.now()
            item = data_ring.get(timeout=POLL_S)
            while item is None:
                check()
                item = data_ring.get(timeout=POLL_S)
            x, y, entry = item
            if entry.produced_at == _STOP:
                recorder.waited(time.time() - t0)
                break
            if recorder.steps % n_fetch == 0:
                # Read your own writes: the server has applied every push of ours before we fetch.
                while unacknowledged:
                    while not applied.acquire(timeout=POLL_S):
                        check()
                    unacknowledged -= 1
                while not lock.acquire(timeout=POLL_S):
                    check()
                try:
                    snapshot, fetched_version = weights.copy(), int(header[VERSION])
                finally:
                    lock.release()
                fetches += 1
                t1 = time.time()
                recorder.waited(t1 - t0)
                offset = 0
                for p in params:
                    view = snapshot[offset:offset + p.data.size].reshape(p.data.shape)
                    p.data = view.astype(p.data.dtype, copy=False)  # the snapshot is private: views are safe
                    offset += p.data.size
            else:
                t1 = time.time()
                recorder.waited(t1 - t0)
            loss = trainer.train_step(x, y)  # backprop at the fetched weights; the "update" only accumulates
            losses.append((entry.produced_at, float(loss), int(y.shape[0])))
            t2 = time.time()
            recorder.computed(t1, t2, int(y.shape[0]))
            if recorder.steps % n_push == 0:
                push()
                recorder.waited(time.time() - t2)
        if pushed.steps:  # the rest of the accumulator, so no gradient is lost
            t0 = time.time()
            push()
            recorder.waited(time.time() - t0)
        metrics = recorder.summary()
        metrics.update(pushes=pushes, fetches=fetches, wait_seconds=metrics["idle_seconds"])
        buffers = {name: to_numpy(b).copy() for name, b in trainer.model.named_buffers()}
        del header, weights
        conn.send((_DONE, index, metrics, losses, buffers))
    except (_Aborted, RingClosed):
        _send(conn, (_ERROR, index, "stopped: the run was aborted (another worker failed or the run timed out)"))
    except BaseException:
        _send(conn, (_ERROR, index, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()
        for ring in (data_ring, push_ring):
            ring.close()
        if shm is not None:
            try:
                shm.close()
            except BufferError:
                pass


def _send(conn, message):
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):  # the parent is gone or stopped listening
        pass


# --- the parent: feeder and parameter server -----------------------------------------------------------
def _check_trainer(trainer):
    from ..trainers.backprop import BackpropTrainer

    if type(trainer) is not BackpropTrainer:
        raise ValueError(f"Downpour SGD runs backprop (a BackpropTrainer, trainer 'bp') in every worker, got "
                         f"{getattr(trainer, 'name', type(trainer).__name__)!r}. Local-learning trainers have "
                         f"their own runtime (run_module_parallel).")
    if get_backend().name != "numpy":
        raise ValueError(f"Downpour SGD runs on the NumPy backend only for now (active backend: "
                         f"{get_backend().name!r}); switch to numpy.")


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
            offset = 0
            for p in self.optimizer.params:
                self.weights[offset:offset + p.data.size] = to_numpy(p.data).ravel()
                offset += p.data.size
            self.header[VERSION] = self.version
        finally:
            self.lock.release()

    def apply(self, push):
        """One push (gradient (1, P), [worker], entry with produced_at = fetched version): one optimizer step."""
        t0 = time.perf_counter()
        gradient, worker, entry = push[0][0], int(push[1][0]), push[2]
        offset = 0
        for p in self.optimizer.params:
            p.grad = gradient[offset:offset + p.data.size].reshape(p.data.shape).astype(p.data.dtype, copy=True)
            offset += p.data.size
        self.optimizer.step()
        staleness = self.version - entry.produced_at  # pushes applied since the worker's fetch
        self.version += 1
        self.records.append((worker, entry.produced_at, self.version, staleness))
        self.publish()
        self.applied[worker].release()
        self.seconds += time.perf_counter() - t0


def run_downpour(trainer, train_loader, epochs, workers=2, n_fetch=1, n_push=1, threads_per_worker=1, start_epoch=0,
                 timeout=None, log=None, run_started=None):
    """Train `trainer` (a BackpropTrainer) with Downpour SGD: `workers` processes, the parent as parameter server.

    Each batch of `train_loader` is taken by one worker (whichever is free); a worker fetches the weights
    every `n_fetch` of its steps and pushes its summed gradients every `n_push` steps (and at the end); the
    server applies each push with the trainer's optimizer as it arrives (module docstring). Afterwards the
    trainer holds the server's final weights and optimizer state (and the batch-norm statistics of the
    worker with the most steps). Versions count the pushes applied in this run, from 0.
    threads_per_worker: BLAS threads of each worker. timeout: seconds before the run is stopped (None: no
    limit).

    Returns (JSON-ready) {"workers": [per worker: worker, steps, samples, pushes, fetches, busy_seconds,
    wait_seconds, staleness], "steps", "samples", "pushes", "n_fetch", "n_push", "staleness" (overall:
    pushes, mean, max, histogram), "push_log" ([worker, fetched version, applied version, staleness] per
    push, in the order applied), "server_seconds" (applying pushes), "startup_seconds" (spawning the workers),
    "seconds" (training: from every worker started to the
    last result), "samples_per_second", "train_loss" (per epoch, sample-weighted), "last_loss" (on the
    loader's last batch)}.
    """
    _check_trainer(trainer)
    workers = _positive("workers", workers, "the number of worker processes")
    n_fetch = _positive("n_fetch", n_fetch, "fetch the weights every n_fetch steps")
    n_push = _positive("n_push", n_push, "push the accumulated gradient every n_push steps")
    batches = len(train_loader)
    total_steps = batches * (epochs - start_epoch)
    if total_steps < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {batches} batch(es).")
    params = trainer.optimizer.params
    num_params = sum(p.data.size for p in params)
    dtype = np.dtype(params[0].data.dtype)
    ctx = mp.get_context("spawn")
    lock = ctx.Lock()
    applied = [ctx.Semaphore(0) for _ in range(workers)]
    prefix = f"tdgl_{os.getpid()}_downpour_{secrets.token_hex(4)}"
    shm = shared_memory.SharedMemory(name=prefix, create=True, size=64 + num_params * dtype.itemsize)
    header, weights = _weights_views(shm.buf, num_params, dtype)
    header[:] = 0
    rings, processes, conns, results = [], [], [], {}
    deadline = None if timeout is None else time.perf_counter() + timeout
    started = time.perf_counter()
    run_started = time.time() if run_started is None else run_started
    try:
        data_ring = SharedRing(2 * workers, int(train_loader.batch_size), trainer.model.input_shape,
                               getattr(train_loader, "dtype", "float32"), policy="fifo", name=f"{prefix}_data",
                               ctx=ctx)
        rings.append(data_ring)
        push_ring = SharedRing(2 * workers, 1, (num_params,), dtype, policy="fifo", name=f"{prefix}_push", ctx=ctx)
        rings.append(push_ring)

        last_check = [0.0]

        def check(timeout_s=0.0):
            """Wait up to timeout_s for a worker's exit or message; raise WorkerFailed on a failure or timeout."""
            last_check[0] = time.perf_counter()
            poll_workers(conns, processes, results, lambda w: f"Downpour worker {w}", timeout_s)
            if deadline is not None and time.perf_counter() > deadline:
                raise WorkerFailed(f"The Downpour run took longer than timeout={timeout} s; it was stopped.")

        server = _Server(trainer.optimizer, weights, header, lock, applied, check)

        def serve(timeout_s):
            """Apply the pushes that arrive within timeout_s (then every one already waiting); check the
            workers if the last check is POLL_S old."""
            push = push_ring.get(timeout=timeout_s)
            while push is not None:
                server.apply(push)
                push = push_ring.get(timeout=0)
            if time.perf_counter() - last_check[0] >= POLL_S:
                check()

        def feed(x, y, produced_at):
            """Put one batch into the data ring, serving pushes while it is full."""
            while not data_ring.put(x, y, produced_at=produced_at, timeout=0):
                serve(0.01)
            serve(0)

        with worker_thread_environment(threads_per_worker):
            for w in range(workers):
                _, conn = start_worker(ctx, _worker, f"tinydgl-downpour-worker-{w}",
                                       (w, shm.name, num_params, dtype.name, lock, applied[w], data_ring,
                                        push_ring, n_fetch, n_push, os.getpid(), run_started), trainer, processes)
                conns.append(conn)
        ready = time.perf_counter()  # every worker started and has its model: training starts
        if log:
            log(f"downpour: {workers} workers, n_fetch={n_fetch}, n_push={n_push}, {num_params:,} weights on the "
                f"parameter server (the parent process)")
        try:
            number = 0  # batch number in this run: the data ring's `produced_at`
            for epoch in range(start_epoch, epochs):
                train_loader.set_epoch(epoch)
                trainer.start_epoch(epoch)
                for x, y in train_loader:
                    feed(to_numpy(x), to_numpy(y), number)
                    number += 1
            stop_x = np.zeros((1, *trainer.model.input_shape), data_ring.handle.dtype)
            for _ in range(workers):
                feed(stop_x, np.zeros(1, np.int64), _STOP)  # one end-of-data marker per worker
            while len(results) < workers:
                serve(0.05)
                check()
            serve(0)  # every worker put its last push before reporting: apply what is left
        except (RingBroken, RingClosed):  # a worker died inside put/get: name it if we can
            check(1.0)
            raise
        seconds, startup_seconds = time.perf_counter() - ready, ready - started
    finally:
        if len(results) < workers:
            header[ABORT] = 1  # waiting workers see it within POLL_S
            for ring in rings:
                ring.abort()
        stop_processes(processes)
        for conn in conns:
            conn.close()
        for ring in rings:
            ring.close()
        del header, weights
        shm.close()
        shm.unlink()

    # The trainer's weights and optimizer already are the server's; batch-norm statistics come from the
    # worker that saw the most batches (module docstring, "BatchNorm caveat").
    buffers = max((results[w] for w in range(workers)), key=lambda r: r[2]["steps"])[4]
    if buffers:
        state = trainer.model.state_dict()
        state.update(buffers)
        trainer.model.load_state_dict(state)
    metrics = [results[w][2] for w in range(workers)]
    records = server.records
    for w, m in enumerate(metrics):
        if m["pushes"] != sum(1 for r in records if r[0] == w):
            raise RuntimeError(f"Downpour worker {w} pushed {m['pushes']} times but the server applied "
                               f"{sum(1 for r in records if r[0] == w)} of its pushes; please report this.")
        m["staleness"] = staleness_stats([r[3] for r in records if r[0] == w])
    step_losses = sorted(step for w in range(workers) for step in results[w][3])  # by batch number
    train_loss = []
    for e in range(epochs - start_epoch):
        chunk = step_losses[e * batches:(e + 1) * batches]
        n = sum(s for _, _, s in chunk)
        train_loss.append(sum(loss * s for _, loss, s in chunk) / n)
    samples = sum(s for _, _, s in step_losses)
    return {"workers": metrics, "steps": len(step_losses), "samples": samples, "pushes": len(records),
            "n_fetch": n_fetch, "n_push": n_push, "staleness": staleness_stats([r[3] for r in records]),
            "push_log": [list(r) for r in records], "server_seconds": server.seconds, "seconds": seconds,
            "startup_seconds": startup_seconds,
            "samples_per_second": samples / seconds, "train_loss": train_loss, "last_loss": step_losses[-1][1]}


def fit_downpour(trainer, train_loader, test_loader, epochs, workers=2, log=print, checkpoint_dir=None, resume=False,
                 bn_recalibrate=0, **options):
    """`tinydgl.train.fit`'s history (one dict per epoch, with the run's staleness and push log) for a
    Downpour run; checkpoints and resume as in `runtime.epochs.epochs_on_workers`. Each epoch starts fresh workers
    (about a second) and ends with an evaluation in the parent, with the server's weights; the server's
    optimizer state carries over. options: for `run_downpour` (n_fetch, n_push, threads_per_worker, timeout)."""
    def run_epoch(epoch, run_started):
        run = run_downpour(trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch,
                           run_started=run_started, **options)
        log(f"  staleness of {run['pushes']} pushes: mean {run['staleness']['mean']:.2f}, max {run['staleness']['max']}")
        return run

    return epochs_on_workers(run_epoch, trainer, test_loader, epochs, f"{workers} Downpour workers", checkpoint_dir,
                             resume, log, train_loader=train_loader, bn_recalibrate=bn_recalibrate)
