"""Synchronous data-parallel SGD (`--parallel sync`): W workers, one model copy each, gradients averaged every
step (Dean et al., "Large Scale Distributed Deep Networks", NeurIPS 2012), written once over an all-reduce:
a shared-memory segment among spawned workers (`run_data_parallel`) or MPI's Allreduce among the ranks of
an MPI job (`run_data_parallel_mpi`).

Where does each block's gradient come from? **From the block above it, as in backprop, and then from every
other worker**: each worker backpropagates its shard (`shard_step`) and `AveragedGradients.step()` all-reduces
the shard-size-weighted gradients before the real optimizer updates, so every copy equals single-process SGD
with the whole batch (BatchNorm and dropout aside). Why, one step's semaphores, what differs from one
process, faults: docs/design/runtime.md, "Synchronous data-parallel SGD".
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

from ..backend import to_numpy
from .epochs import epochs_on_workers
from .flat import flat_size, gradients, pack, set_gradients
from .metrics import WorkerRecorder, epoch_losses
from .processes import (
    DONE,
    ERROR,
    POLL_S,
    WorkerFailed,
    ignore_stop_signals,
    poll_workers,
    start_worker,
    stop_processes,
    worker_thread_environment,
)
from .registry import check
from .shm_ring import RingClosed

ABORTED = "stopped: the run was aborted (another worker failed or the run timed out)"


class Aborted(Exception):
    """The parent set the run's abort flag (another worker failed, or the run timed out)."""


def _take(sem, header, parent):
    """Acquire `sem` in a worker, giving up if the run was aborted or the parent died."""
    while not sem.acquire(timeout=POLL_S):
        if header[2]:
            raise Aborted
        if os.getppid() != parent:
            raise SystemExit(3)
    if header[2]:
        raise Aborted


def steps_to_run(train_loader, epochs, start_epoch):
    """Batches in epochs start_epoch..epochs-1; a ValueError if there are none."""
    total = len(train_loader) * (epochs - start_epoch)
    if total < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {len(train_loader)} batch(es).")
    return total


def shard_bounds(n, workers):
    """[(start, stop)] of `workers` contiguous shards of n samples; sizes differ by at most one."""
    sizes = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    edges = np.cumsum([0, *sizes]).tolist()
    return list(zip(edges[:-1], edges[1:]))


class AveragedGradients:
    """Wraps a worker's optimizer: `step()` all-reduces the gradients, then steps.

    This is the one line where data parallelism changes backprop: p.grad becomes the weighted mean of every
    worker's p.grad (weights n_w / n) before the ordinary update runs. all_reduce(weighted) takes this
    worker's flat gradient (P,) times n_w / n and returns the sum over every worker (the transport's:
    rows of a shared segment, or MPI's Allreduce).
    """

    def __init__(self, optimizer, all_reduce, index, workers):
        self.optimizer, self.all_reduce, self.index = optimizer, all_reduce, index
        self.row = np.zeros(flat_size(optimizer.params), optimizer.params[0].data.dtype)
        self.shard_sizes = [0] * workers  # set before every step (`shard_step`)
        self.wait_seconds = 0.0

    def __getattr__(self, name):  # lr, steps, state, state_dict, ...: the wrapped optimizer's
        return getattr(self.optimizer, name)

    def step(self):
        params, mine = self.optimizer.params, self.shard_sizes[self.index]
        if mine:
            pack(gradients(params, "data-parallel SGD"), self.row)
        else:
            self.row[:] = 0
        t0 = time.perf_counter()
        total = self.all_reduce(self.row * (mine / sum(self.shard_sizes)))
        self.wait_seconds += time.perf_counter() - t0
        set_gradients(params, total)
        self.optimizer.step()


def shard_step(trainer, averaged, x, y, index, workers):
    """Worker `index`'s step on batch (x, y): its shard through `trainer.train_step`, whose optimizer is
    `averaged`. Returns (shard loss, shard size)."""
    bounds = shard_bounds(int(y.shape[0]), workers)
    averaged.shard_sizes = [b - a for a, b in bounds]
    lo, hi = bounds[index]
    if hi == lo:
        averaged.step()  # nothing to learn from, but the exchange and the common update still happen
        return 0.0, 0
    return float(trainer.train_step(x[lo:hi].copy(), y[lo:hi].copy())), hi - lo


def data_parallel_result(worker_metrics, shard_losses, batches_per_epoch, epochs, seconds, **extra):
    """The run's dict from every worker's [(shard loss, shard size)] per step: {"workers", "steps", "samples",
    "seconds", "samples_per_second", "train_loss" (per epoch, sample-weighted), "last_loss", **extra}."""
    step_losses = []
    for shards in zip(*shard_losses):
        n = sum(s for _, s in shards)
        step_losses.append((sum(loss * s for loss, s in shards) / n, n))
    samples = sum(s for _, s in step_losses)
    return {
        "workers": worker_metrics,
        "steps": len(step_losses),
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
        "train_loss": epoch_losses(step_losses, batches_per_epoch, epochs),
        "last_loss": step_losses[-1][0],
        **extra,
    }


# --- shared memory: spawned workers, the parent feeds the batches ---------------------------------------
class WorkerGroup:
    """The spawned workers of one shared-memory run (data-parallel or Downpour): started, watched, stopped.
    label names them in errors ("data-parallel worker 1 died ..."); timeout: seconds for the whole run."""

    def __init__(self, label, timeout=None):
        self.label, self.timeout = label, timeout
        self.ctx = mp.get_context("spawn")
        self.processes, self.conns, self.results = [], [], {}
        self.deadline = None if timeout is None else time.perf_counter() + timeout

    def start(self, target, name, count, args, trainer, threads_per_worker):
        """Start workers target(*args(w), conn) for w < count, named f"{name}-{w}", each sent `trainer`."""
        with worker_thread_environment(threads_per_worker):
            for w in range(count):
                _, conn = start_worker(self.ctx, target, f"{name}-{w}", args(w), trainer, self.processes)
                self.conns.append(conn)

    def check(self, timeout_s=0.0):
        """Wait up to timeout_s for a worker's exit or message; raise WorkerFailed on a failure or timeout."""
        poll_workers(self.conns, self.processes, self.results, lambda w: f"{self.label} worker {w}", timeout_s)
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise WorkerFailed(f"The {self.label} run took longer than timeout={self.timeout} s; it was stopped.")

    def stop(self):
        stop_processes(self.processes)
        for conn in self.conns:
            conn.close()


def _layout(max_batch, sample_shape, x_dtype, workers, num_grads, grad_dtype):
    """Byte offsets in the segment: header (n, stop, abort), batch x, labels y, gradient rows; and the total size."""
    align = lambda b: (b + 63) // 64 * 64  # noqa: E731
    x_off = 64
    y_off = align(x_off + max_batch * math.prod(sample_shape) * np.dtype(x_dtype).itemsize)
    g_off = align(y_off + max_batch * 8)
    total = g_off + workers * num_grads * np.dtype(grad_dtype).itemsize
    return {
        "x": x_off,
        "y": y_off,
        "grads": g_off,
        "total": max(total, 1),
        "max_batch": max_batch,
        "sample_shape": tuple(sample_shape),
        "x_dtype": np.dtype(x_dtype).name,
        "workers": workers,
        "num_grads": num_grads,
        "grad_dtype": np.dtype(grad_dtype).name,
    }


def _views(buf, layout):
    """(header, x, y, grads) NumPy views of the segment's buffer."""
    header = np.ndarray((3,), np.int64, buf, 0)  # n, stop, abort
    x = np.ndarray((layout["max_batch"], *layout["sample_shape"]), layout["x_dtype"], buf, layout["x"])
    y = np.ndarray((layout["max_batch"],), np.int64, buf, layout["y"])
    grads = np.ndarray((layout["workers"], layout["num_grads"]), layout["grad_dtype"], buf, layout["grads"])
    return header, x, y, grads


def _shared_all_reduce(rows, index, all_rows_written):
    """The shared-memory all-reduce: write this worker's row, wait for every row, sum them in worker order
    (the same rows, order and arithmetic in every worker: the sums, and the copies, are bit-identical)."""

    def all_reduce(weighted):
        rows[index] = weighted
        all_rows_written()
        total = rows[0].copy()
        for w in range(1, rows.shape[0]):
            total += rows[w]
        return total

    return all_reduce


def serve_worker(index, conn, segment_name, work, closes=()):
    """What every shared-memory worker runs: it receives its trainer, attaches the segment, runs
    work(trainer, buf) -> (metrics, losses, extra) and reports ("done", index, metrics, losses, extra), or
    ("error", index, why); then closes `closes` (rings) and the segment, whatever happened."""
    ignore_stop_signals()  # Ctrl-C and SIGTERM are the parent's: it stops the workers
    shm = None
    try:
        trainer = conn.recv()
        shm = shared_memory.SharedMemory(name=segment_name)
        conn.send((DONE, index, *work(trainer, shm.buf)))
    except (Aborted, RingClosed):
        report(conn, (ERROR, index, ABORTED))
    except BaseException:
        report(conn, (ERROR, index, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()
        for ring in closes:
            ring.close()
        if shm is not None:
            try:
                shm.close()
            except BufferError:
                pass


def report(conn, message):
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):  # the parent is gone or stopped listening
        pass


def _worker(index, segment_name, layout, go, done, arrived, parent, run_started, conn):
    """Worker `index`: per step its shard through `trainer.train_step` with averaged gradients; reports its
    metrics, [(shard loss, shard size)] per step and (worker 0) the trainer's state (`serve_worker`)."""

    def work(trainer, buf):
        header, x, y, grads = _views(buf, layout)

        def all_rows_written():
            arrived.release()
            _take(done, header, parent)

        averaged = AveragedGradients(
            trainer.optimizer, _shared_all_reduce(grads, index, all_rows_written), index, layout["workers"]
        )
        trainer.optimizer = averaged
        trainer.model.train()
        recorder = WorkerRecorder(index, run_started, input_is_data=True)
        losses = []
        while True:
            t0 = recorder.now()
            _take(go, header, parent)  # the parent wrote a batch (or the stop signal)
            t1 = time.time()
            recorder.waited(t1 - t0)
            if header[1]:
                break
            waited_before, n = averaged.wait_seconds, int(header[0])
            losses.append(shard_step(trainer, averaged, x[:n], y[:n], index, layout["workers"]))
            arrived.release()  # done reading the rows
            # busy = the step minus its wait for the other workers' gradient rows (counted as idle)
            all_reduce_wait = averaged.wait_seconds - waited_before
            recorder.computed(t1, time.time() - all_reduce_wait, losses[-1][1])
            recorder.waited(all_reduce_wait)
        metrics = recorder.summary()
        metrics["wait_seconds"] = metrics["idle_seconds"]
        trainer.optimizer = averaged.optimizer
        return metrics, losses, trainer.state_dict() if index == 0 else None

    serve_worker(index, conn, segment_name, work)


def _feed(trainer, train_loader, start_epoch, epochs, views, go, done, gather):
    """The parent's loop: write each batch into the segment, let the workers step on it, wait for them."""
    header, x_shared, y_shared, _ = views
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


def run_data_parallel(
    trainer,
    train_loader,
    epochs,
    workers=2,
    threads_per_worker=1,
    start_epoch=0,
    timeout=None,
    log=None,
    run_started=None,
):
    """Train `trainer` (a BackpropTrainer) with synchronous data-parallel SGD in `workers` processes.

    Every batch of `train_loader` is split over the workers (see `shard_bounds`); the update equals the
    single-process update on the whole batch (docs/design/runtime.md). Afterwards the trainer holds worker 0's
    weights, buffers and optimizer state. threads_per_worker: BLAS threads of each worker. timeout: seconds
    before the run is stopped (None: no limit). run_started: `time.time()` the workers' timelines count
    from (default: now).

    Returns (JSON-ready) `data_parallel_result`'s dict, its "workers" the per-worker
    `WorkerRecorder.summary()` + wait_seconds, "seconds" counted from every worker started to the last
    result, plus "startup_seconds" (spawning the workers).
    """
    check("sync", "shm", trainer)
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    steps_to_run(train_loader, epochs, start_epoch)
    params, x_dtype = trainer.optimizer.params, getattr(train_loader, "dtype", "float32")
    grads = (flat_size(params), params[0].data.dtype)
    layout = _layout(int(train_loader.batch_size), trainer.model.input_shape, x_dtype, workers, *grads)
    group = WorkerGroup("data-parallel", timeout)
    go, done = [group.ctx.Semaphore(0) for _ in range(workers)], [group.ctx.Semaphore(0) for _ in range(workers)]
    arrived = group.ctx.Semaphore(0)
    name = f"tdgl_{os.getpid()}_dp_{secrets.token_hex(4)}"
    shm = shared_memory.SharedMemory(name=name, create=True, size=layout["total"])

    def gather():
        """Take `arrived` once per worker, checking for failures whenever a wait lasts POLL_S."""
        for _ in range(workers):
            while not arrived.acquire(timeout=POLL_S):
                group.check()

    views = _views(shm.buf, layout)
    views[0][:] = 0
    started = time.perf_counter()
    run_started = time.time() if run_started is None else run_started
    try:
        args = lambda w: (w, shm.name, layout, go[w], done[w], arrived, os.getpid(), run_started)  # noqa: E731
        group.start(_worker, "tinydgl-dp-worker", workers, args, trainer, threads_per_worker)
        ready = time.perf_counter()  # every worker started and has its model: training starts
        if log:
            log(f"data-parallel: {workers} workers, {layout['num_grads']:,} gradients averaged per step")
        _feed(trainer, train_loader, start_epoch, epochs, views, go, done, gather)
        while len(group.results) < workers:
            group.check(1.0)
        seconds, startup_seconds = time.perf_counter() - ready, ready - started
    finally:
        if len(group.results) < workers:
            views[0][2] = 1  # abort: waiting workers see it at their next wake-up
            for sem in go + done:
                sem.release()
        group.stop()
        del views
        shm.close()
        shm.unlink()

    # Every copy is the same; worker 0's also carries its own running statistics (docs/design/runtime.md).
    results = [group.results[w] for w in range(workers)]
    trainer.load_state_dict(results[0][4])
    recorders, losses = [r[2] for r in results], [r[3] for r in results]
    steps = (len(train_loader), epochs - start_epoch, seconds)
    return data_parallel_result(recorders, losses, *steps, startup_seconds=startup_seconds)


def fit_data_parallel(
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
    """`tinydgl.train.fit`'s history (one dict per epoch) for a data-parallel run; checkpoints and resume as
    in `runtime.epochs.epochs_on_workers`. Each epoch starts fresh workers (about a second) and ends with an
    evaluation in the parent. options: for `run_data_parallel`."""

    def run_epoch(epoch, run_started):
        return run_data_parallel(
            trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch, run_started=run_started, **options
        )

    return epochs_on_workers(
        run_epoch,
        trainer,
        test_loader,
        epochs,
        f"{workers} data-parallel workers",
        checkpoint_dir,
        resume,
        log,
        train_loader=train_loader,
        bn_recalibrate=bn_recalibrate,
    )


# --- MPI: every rank reads the loader itself and takes its shard; MPI's Allreduce sums the rows ----------
def run_data_parallel_mpi(trainer, train_loader, epochs, comm=None, start_epoch=0, log=None):
    """Synchronous data-parallel SGD on the ranks of `comm` (an mpi4py communicator, default COMM_WORLD).

    Call it on every rank with the same BackpropTrainer and the same loader: every rank reads the loader
    itself (same seed, so the same batches; no data crosses ranks) and runs `shard_step` with
    `AveragedGradients` over `comm.Allreduce`: the sum is the whole batch's gradient, so the update equals
    single-process SGD on whole batches (BatchNorm and dropout aside, as with shared memory). Rank 0
    broadcasts its state first, so the copies start equal (after a resume too).

    Returns on every rank `data_parallel_result`'s dict ("workers": per-rank steps, samples, busy_seconds,
    wait_seconds) plus "transport": "mpi". Every rank's trainer holds the same weights; BatchNorm running
    statistics are each rank's own (rank 0's are the ones evaluated and saved).
    """
    from .mpi_engine import world

    comm = world(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    check("sync", "mpi", trainer)
    steps_to_run(train_loader, epochs, start_epoch)
    state = comm.bcast(trainer.state_dict() if rank == 0 else None, root=0)
    if rank != 0:
        trainer.load_state_dict(state)
    if log:
        log(
            f"data-parallel over MPI: {size} ranks, {flat_size(trainer.optimizer.params):,} gradients all-reduced "
            f"per step"
        )

    def all_reduce(weighted):
        total = np.empty_like(weighted)
        comm.Allreduce(weighted, total)  # MPI.SUM by default
        return total

    averaged = AveragedGradients(trainer.optimizer, all_reduce, rank, size)
    trainer.optimizer = averaged
    trainer.model.train()
    busy, losses = 0.0, []
    comm.Barrier()
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            for x, y in train_loader:
                t0 = time.perf_counter()
                losses.append(shard_step(trainer, averaged, x, y, rank, size))
                busy += time.perf_counter() - t0
    finally:
        trainer.optimizer = averaged.optimizer
    seconds = time.perf_counter() - started
    steps, samples = len(losses), sum(n for _, n in losses)
    # every rank learns from its shard of every batch, once: the same work counts as the other engines report
    metrics = {
        "worker": rank,
        "steps": steps,
        "samples": samples,
        "busy_seconds": busy - averaged.wait_seconds,
        "wait_seconds": averaged.wait_seconds,
        "fresh_batches": steps,
        "fresh_samples": samples,
        "replayed_batches": 0,
        "replayed_samples": 0,
        "skipped_batches": 0,
    }
    gathered = comm.gather((metrics, losses, seconds), root=0)
    result = None
    if rank == 0:
        result = data_parallel_result(
            [g[0] for g in gathered],
            [g[1] for g in gathered],
            len(train_loader),
            epochs - start_epoch,
            max(g[2] for g in gathered),
            transport="mpi",
        )
    return comm.bcast(result, root=0)


def fit_data_parallel_mpi(
    trainer,
    train_loader,
    test_loader,
    epochs,
    comm=None,
    log=print,
    checkpoint_dir=None,
    resume=False,
    bn_recalibrate=0,
    **options,
):
    """`tinydgl.train.fit`'s history for dp-sync over MPI; call it on every rank. Rank 0 evaluates, logs and
    checkpoints (`epochs_on_workers`); on resume it reads the checkpoint and each run broadcasts its state. Every
    rank returns rank 0's history."""
    from .mpi_engine import fit_on_ranks, world

    comm = world(comm)

    def run_epoch(epoch, run_started):
        return run_data_parallel_mpi(
            trainer,
            train_loader,
            epoch + 1,
            comm=comm,
            start_epoch=epoch,
            log=log if comm.Get_rank() == 0 else None,
            **options,
        )

    return fit_on_ranks(
        run_epoch,
        trainer,
        test_loader,
        epochs,
        f"{comm.Get_size()} data-parallel MPI ranks",
        comm,
        log,
        checkpoint_dir,
        resume,
        train_loader,
        bn_recalibrate,
    )
