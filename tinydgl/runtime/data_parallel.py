"""Synchronous data-parallel SGD (`dp-sync`): W spawned workers, one model copy each, gradients averaged
every step through shared memory (synchronous parallel SGD, as in Dean et al., "Large Scale Distributed Deep Networks", NeurIPS 2012).

Where does each block's gradient come from? **From the block above it, as in backprop, and then from every
other worker**: each worker runs `BackpropTrainer.train_step` on its shard of the batch; the trainer's
optimizer is wrapped in `_AveragedGradients`, whose `step()` writes the worker's gradients into its row of a
shared array, waits for everyone, replaces every `p.grad` by the shard-size-weighted mean of the rows and
only then lets the real optimizer update. Every copy applies the same update to the same weights, so the
copies stay identical and equal single-process SGD with the whole batch:

    grad of mean_{i in batch} loss_i = sum_w (n_w / B) * grad of mean_{i in shard w} loss_i

One step, synchronised by the parent with semaphores (`go[w]`, `done[w]` per worker, one `arrived`):

    parent: write batch (x, y, n) -> release every go[w] -> take `arrived` W times (rows written)
            -> release every done[w] -> take `arrived` W times (rows read) -> next batch
    worker: take go[w] -> copy its shard, forward + backward -> write its gradient row -> release arrived
            -> take done[w] -> average the rows (same order, same arithmetic in every worker)
            -> optimizer step -> release arrived

The second round keeps a fast worker from overwriting its row while a slow one still averages. Not a
`multiprocessing.Barrier`: its condition variable waits for every sleeper to acknowledge a wake-up, so
aborting it while a dead worker "sleeps" in it hangs forever; a semaphore release never waits.

Shards. A batch of n samples is cut into W contiguous shards whose sizes differ by at most one (the first
n % W shards get the extra sample), so any batch size works, including a last smaller batch; the rows are
weighted by shard size. A worker with an empty shard (n < W) contributes weight 0 and still steps.

What is not the same as the single-process run (as in real data-parallel training):
- BatchNorm uses each shard's batch statistics (no SyncBN), so the gradients differ from the whole batch's;
  each worker also keeps its own running statistics, and the parent takes worker 0's at the end.
- Dropout: every worker starts from the same generator state, so masks are not those of one process.
Models without either (`cnn`, `mlp(batchnorm=False)`) match single-process SGD to rounding
(tests/test_data_parallel.py checks 1e-10 in float64).

Faults (as in `engine.py`). Whenever the parent waits for `arrived` and nothing comes within POLL_S, it
checks every worker's `Process.sentinel` and result pipe with `multiprocessing.connection.wait`; a worker
that died or reported an exception stops the run: the parent sets the abort flag in the segment, releases
every worker's semaphores (waiting workers wake, see the flag and exit), stops every worker (terminate,
then kill), unlinks the segment and raises `WorkerFailed` naming the worker. No process or segment
outlives the run. Workers also poll: a worker whose parent died exits. NumPy backend only.
"""
from __future__ import annotations

import math
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
from .metrics import WorkerRecorder, epoch_losses



class _Aborted(Exception):
    """The parent set the segment's abort flag."""


def _take(sem, header, parent):
    """Acquire `sem` in a worker, giving up if the run was aborted or the parent died."""
    while not sem.acquire(timeout=POLL_S):
        if header[2]:
            raise _Aborted
        if os.getppid() != parent:
            raise SystemExit(3)
    if header[2]:
        raise _Aborted


def shard_bounds(n, workers):
    """[(start, stop)] of `workers` contiguous shards of n samples; sizes differ by at most one."""
    sizes = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    edges = np.cumsum([0, *sizes]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def _layout(max_batch, sample_shape, x_dtype, workers, num_grads, grad_dtype):
    """Byte offsets in the segment: header (n, stop, abort), batch x, labels y, gradient rows; and the total size."""
    align = lambda b: (b + 63) // 64 * 64  # noqa: E731
    x_off = 64
    y_off = align(x_off + max_batch * math.prod(sample_shape) * np.dtype(x_dtype).itemsize)
    g_off = align(y_off + max_batch * 8)
    total = g_off + workers * num_grads * np.dtype(grad_dtype).itemsize
    return {"x": x_off, "y": y_off, "grads": g_off, "total": max(total, 1), "max_batch": max_batch,
            "sample_shape": tuple(sample_shape), "x_dtype": np.dtype(x_dtype).name, "workers": workers,
            "num_grads": num_grads, "grad_dtype": np.dtype(grad_dtype).name}


def _views(buf, layout):
    """(header, x, y, grads) NumPy views of the segment's buffer."""
    header = np.ndarray((3,), np.int64, buf, 0)  # n, stop, abort
    x = np.ndarray((layout["max_batch"], *layout["sample_shape"]), layout["x_dtype"], buf, layout["x"])
    y = np.ndarray((layout["max_batch"],), np.int64, buf, layout["y"])
    grads = np.ndarray((layout["workers"], layout["num_grads"]), layout["grad_dtype"], buf, layout["grads"])
    return header, x, y, grads


class _AveragedGradients:
    """Wraps a worker's optimizer: `step()` all-reduces the gradients through the segment, then steps.

    This is the one line where data parallelism changes backprop: p.grad becomes the weighted mean of every
    worker's p.grad (weights n_w / n) before the ordinary update runs.
    """

    def __init__(self, optimizer, grads, index, all_rows_written, all_reduce=None):
        self.optimizer, self.grads, self.index = optimizer, grads, index
        self.all_rows_written = all_rows_written  # blocks until every worker wrote its row
        # all_reduce(weighted_row) -> the sum of every worker's weighted row (MPI's Allreduce in
        # mpi_engine.run_data_parallel_mpi): then no worker reads the others' rows
        self.all_reduce = all_reduce
        self.shard_sizes = [0] * grads.shape[0]
        self.wait_seconds = 0.0

    def __getattr__(self, name):  # lr, steps, state, state_dict, ...: the wrapped optimizer's
        return getattr(self.optimizer, name)

    def step(self):
        params, row = self.optimizer.params, self.grads[self.index]
        if self.shard_sizes[self.index]:
            offset = 0
            for p in params:
                if p.grad is None:
                    raise RuntimeError(f"Parameter of shape {p.shape} got no gradient; data-parallel SGD "
                                       f"averages every parameter's gradient.")
                row[offset:offset + p.data.size] = to_numpy(p.grad).ravel()
                offset += p.data.size
        else:
            row[:] = 0
        total = sum(self.shard_sizes)
        t0 = time.perf_counter()
        if self.all_reduce is not None:
            average = self.all_reduce(row * (self.shard_sizes[self.index] / total))
            self.wait_seconds += time.perf_counter() - t0
        else:
            self.all_rows_written()
            self.wait_seconds += time.perf_counter() - t0
            # The same rows, weights and order in every worker: the averages (and the copies) are bit-identical.
            average = self.grads[0] * (self.shard_sizes[0] / total)
            for w in range(1, len(self.shard_sizes)):
                average += self.grads[w] * (self.shard_sizes[w] / total)
        offset = 0
        for p in params:
            p.grad = average[offset:offset + p.data.size].reshape(p.data.shape).astype(p.data.dtype, copy=True)
            offset += p.data.size
        self.optimizer.step()


# --- the worker (module level, so spawn can import it) ----------------------------------------------------
def _worker(index, segment_name, layout, go, done, arrived, parent, run_started, conn):
    """Worker `index`: receives its model copy (a trainer), then per step its shard through
    `trainer.train_step` with averaged gradients; reports ("done", index, metrics, losses, state or None)
    or ("error", index, traceback)."""
    ignore_stop_signals()  # Ctrl-C and SIGTERM are the parent's: it stops the workers
    shm = None
    try:
        trainer = conn.recv()
        shm = shared_memory.SharedMemory(name=segment_name)
        header, x, y, grads = _views(shm.buf, layout)
        workers = layout["workers"]

        def all_rows_written():
            arrived.release()
            _take(done, header, parent)  # noqa: F821 (the views are deleted after the last step)

        averaged = _AveragedGradients(trainer.optimizer, grads, index, all_rows_written)
        trainer.optimizer = averaged
        trainer.model.train()
        recorder = WorkerRecorder(index, run_started, input_is_data=True)
        losses = []  # (shard loss, shard size) per step
        while True:
            t0 = recorder.now()
            _take(go, header, parent)  # the parent wrote a batch (or the stop signal)
            t1 = time.time()
            recorder.waited(t1 - t0)
            n, stop = int(header[0]), int(header[1])
            if stop:
                break
            bounds = shard_bounds(n, workers)
            averaged.shard_sizes = [b - a for a, b in bounds]
            lo, hi = bounds[index]
            waited_before = averaged.wait_seconds
            if hi > lo:
                loss = trainer.train_step(x[lo:hi].copy(), y[lo:hi].copy())
            else:
                loss = 0.0
                averaged.step()  # nothing to learn from, but the exchange and the common update still happen
            losses.append((float(loss), hi - lo))
            arrived.release()  # done reading the rows
            t2 = time.time()
            # busy = the step minus its wait for the other workers' gradient rows (counted as idle)
            all_reduce_wait = averaged.wait_seconds - waited_before
            recorder.computed(t1, t2 - all_reduce_wait, hi - lo)
            recorder.waited(all_reduce_wait)
        metrics = recorder.summary()
        metrics["wait_seconds"] = metrics["idle_seconds"]
        trainer.optimizer = averaged.optimizer
        state = trainer.state_dict() if index == 0 else None
        del header, x, y, grads, averaged
        conn.send((_DONE, index, metrics, losses, state))
    except _Aborted:
        conn.send((_ERROR, index, "stopped: the run was aborted (another worker failed or the run timed out)"))
    except BaseException:
        conn.send((_ERROR, index, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()
        if shm is not None:
            try:
                shm.close()
            except BufferError:
                pass


# --- the parent -------------------------------------------------------------------------------------------
def _check_trainer(trainer):
    from ..trainers.backprop import BackpropTrainer

    if type(trainer) is not BackpropTrainer:
        raise ValueError(f"Synchronous data-parallel SGD runs backprop (a BackpropTrainer) in every worker, got "
                         f"{getattr(trainer, 'name', type(trainer).__name__)!r}.")
    if get_backend().name != "numpy":
        raise ValueError(f"Data-parallel SGD runs on the NumPy backend only for now (active backend: "
                         f"{get_backend().name!r}).")


def run_data_parallel(trainer, train_loader, epochs, workers=2, threads_per_worker=1, start_epoch=0,
                      timeout=None, log=None, run_started=None):
    """Train `trainer` (a BackpropTrainer) with synchronous data-parallel SGD in `workers` processes.

    Every batch of `train_loader` is split over the workers (see `shard_bounds`); the update equals the
    single-process update on the whole batch (module docstring). Afterwards the trainer holds worker 0's
    weights, buffers and optimizer state. threads_per_worker: BLAS threads of each worker. timeout: seconds
    before the run is stopped (None: no limit). run_started: `time.time()` the workers' timelines count
    from (default: now).

    Returns (JSON-ready) {"workers": [per-worker `WorkerRecorder.summary()` + wait_seconds], "steps",
    "samples", "seconds" (training: from every worker started to the last result), "startup_seconds"
    (spawning the workers), "samples_per_second", "train_loss" (per
    epoch, sample-weighted), "last_loss"}.
    """
    _check_trainer(trainer)
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    total_steps = len(train_loader) * (epochs - start_epoch)
    if total_steps < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {len(train_loader)} batch(es).")
    model = trainer.model
    params = trainer.optimizer.params
    num_grads = sum(p.data.size for p in params)
    layout = _layout(int(train_loader.batch_size), model.input_shape, getattr(train_loader, "dtype", "float32"),
                     workers, num_grads, params[0].data.dtype)
    ctx = mp.get_context("spawn")
    go, done, arrived = [ctx.Semaphore(0) for _ in range(workers)], [ctx.Semaphore(0) for _ in range(workers)], ctx.Semaphore(0)
    shm = shared_memory.SharedMemory(name=f"tdgl_{os.getpid()}_dp_{secrets.token_hex(4)}", create=True,
                                     size=layout["total"])
    processes, conns, results = [], [], {}
    deadline = None if timeout is None else time.perf_counter() + timeout

    def check(timeout_s):
        """Wait up to timeout_s for a worker's exit or message; raise WorkerFailed on a failure or timeout."""
        poll_workers(conns, processes, results, lambda w: f"data-parallel worker {w}", timeout_s)
        if deadline is not None and time.perf_counter() > deadline:
            raise WorkerFailed(f"The data-parallel run took longer than timeout={timeout} s; it was stopped.")

    def gather():
        """Take `arrived` once per worker, checking for failures whenever a wait lasts POLL_S."""
        for _ in range(workers):
            while not arrived.acquire(timeout=POLL_S):
                check(0)

    header, x_shared, y_shared, _ = _views(shm.buf, layout)
    header[:] = 0
    started = time.perf_counter()
    run_started = time.time() if run_started is None else run_started
    try:
        with worker_thread_environment(threads_per_worker):
            for w in range(workers):
                _, conn = start_worker(ctx, _worker, f"tinydgl-dp-worker-{w}",
                                       (w, shm.name, layout, go[w], done[w], arrived, os.getpid(), run_started), trainer,
                                       processes)
                conns.append(conn)
        ready = time.perf_counter()  # every worker started and has its model: training starts
        if log:
            log(f"data-parallel: {workers} workers, {num_grads:,} gradients averaged per step")
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            for x, y in train_loader:
                n = int(y.shape[0])
                x_shared[:n] = to_numpy(x)
                y_shared[:n] = to_numpy(y)
                header[0] = n
                for sem in go:
                    sem.release()
                gather()  # every shard copied, every gradient row written
                for sem in done:
                    sem.release()
                gather()  # every worker averaged and stepped: the rows and the batch may be overwritten
        header[1] = 1
        for sem in go:
            sem.release()
        while len(results) < workers:
            check(1.0)
        seconds, startup_seconds = time.perf_counter() - ready, ready - started
    finally:
        if len(results) < workers:
            header[2] = 1  # abort: waiting workers see it at their next wake-up
            for sem in go + done:
                sem.release()
        stop_processes(processes)
        for conn in conns:
            conn.close()
        del header, x_shared, y_shared
        shm.close()
        shm.unlink()

    # Every copy is the same; worker 0's also carries its own running statistics (module docstring).
    trainer.load_state_dict(results[0][4])
    per_step = [results[w][3] for w in range(workers)]
    step_losses = []
    for shards in zip(*per_step):
        n = sum(s for _, s in shards)
        step_losses.append((sum(loss * s for loss, s in shards) / n, n))
    train_loss = epoch_losses(step_losses, len(train_loader), epochs - start_epoch)
    samples = sum(s for _, s in step_losses)
    return {"workers": [results[w][2] for w in range(workers)], "steps": len(step_losses), "samples": samples,
            "seconds": seconds, "startup_seconds": startup_seconds, "samples_per_second": samples / seconds,
            "train_loss": train_loss,
            "last_loss": step_losses[-1][0]}


def fit_data_parallel(trainer, train_loader, test_loader, epochs, workers=2, log=print, checkpoint_dir=None,
                      resume=False, bn_recalibrate=0, **options):
    """`tinydgl.train.fit`'s history (one dict per epoch) for a data-parallel run; checkpoints and resume as
    in `runtime.epochs.epochs_on_workers`. Each epoch starts fresh workers (about a second) and ends with an
    evaluation in the parent. options: for `run_data_parallel`."""
    def run_epoch(epoch, run_started):
        return run_data_parallel(trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch,
                                 run_started=run_started, **options)

    return epochs_on_workers(run_epoch, trainer, test_loader, epochs, f"{workers} data-parallel workers",
                             checkpoint_dir, resume, log, train_loader=train_loader, bn_recalibrate=bn_recalibrate)
