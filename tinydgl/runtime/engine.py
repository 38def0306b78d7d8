"""The module-parallel engine: the modules of a locally trained network in J worker processes.

`run_module_parallel` runs the pipeline of `pipeline` in spawned processes (`processes`), one per group,
joined by shared-memory rings (`shm_ring`; for DNI a second ring per boundary, downwards):

    parent (reads the loader) -> ring 0 -> worker 0 -> ring 1 -> worker 1 -> ... -> worker J-1 (the loss)

Stages travel by pickling over a socket pair and come back the same way into the parent's trainer. On CuPy
worker w uses GPU devices[w % len(devices)] (untested: no GPU was available). A worker that dies aborts
every ring and raises `WorkerFailed`; no process or segment outlives the run.

Design notes (stages, GPUs, faults, BLAS threads): docs/design/runtime.md, "On one machine".
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback

from ..backend import get_backend, to_numpy
from . import stages
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder
from .device_ring import DeviceRing, device_links_available
from .pipeline import check_groups, pipeline_result, pipeline_worker_loop, plan_pipeline, run_stage, split_modules
from .processes import (
    DONE,
    ERROR,
    READY,
    WorkerFailed,
    ignore_stop_signals,
    poll_workers,
    start_worker,
    stop_processes,
    wait_ready,
    worker_thread_environment,
)
from .registry import check
from .shm_ring import RingClosed, SharedRing

# the names this engine has always offered, wherever they live now
__all__ = ["WorkerFailed", "fit_module_parallel", "pipeline_worker_loop", "run_module_parallel", "split_modules"]


def _worker_devices(workers, devices):
    """The CUDA device of each worker (None for each on NumPy): worker w gets devices[w % len(devices)]."""
    if get_backend().name != "cupy":
        if devices:
            raise ValueError(
                f"devices={list(devices)} needs the CuPy backend (--backend cupy); the active "
                f"backend is {get_backend().name!r}."
            )
        return [None] * workers
    import cupy

    visible = cupy.cuda.runtime.getDeviceCount()
    devices = list(range(visible)) if not devices else [int(d) for d in devices]
    bad = [d for d in devices if not 0 <= d < visible]
    if bad or not devices:
        raise ValueError(f"devices {devices}: CuPy sees {visible} GPU(s), ids 0..{visible - 1}.")
    return [devices[w % len(devices)] for w in range(workers)]


# --- the worker (module level, so spawn can import it) ----------------------------------------------------
def _worker(index, links, plan, replay_input, parent, run_started, gpu, conn):
    """Worker `index`: receives its stage, runs `pipeline.run_stage` over its rings; reports ("done", state,
    metrics, losses) or ("error", text). links: (in_ring, out_ring, back_in, back_out); back_in / back_out
    are the rings of messages from the worker above / to the worker below (None unless the stage talks
    back: DNI); out_ring is None for the last worker. gpu: the CUDA device it uses with CuPy (None: NumPy).
    Ctrl-C is the parent's to handle: it stops every worker through the rings."""
    ignore_stop_signals()
    if gpu is not None:
        from ..backend import set_backend

        set_backend("cupy", gpu).device.use()  # before receiving: unpickled CuPy arrays land on this device
    stage = conn.recv()
    conn.send((READY, index))  # the parent feeds no batch before every worker has its stage
    recorder = WorkerRecorder(index, run_started, input_is_data=index == 0, fed_batches=plan.total)

    def keep_alive():
        if os.getppid() != parent:  # the parent died without stopping us: nobody will read our results
            raise SystemExit(3)

    in_ring, out_ring, back_in, back_out = links
    try:
        losses = run_stage(stage, in_ring, out_ring, plan, recorder, replay_input, keep_alive, back_in, back_out)
        conn.send((DONE, index, stage.state(), recorder.summary(), losses))
    except RingClosed:
        conn.send((ERROR, index, "stopped: a ring was aborted (another worker failed)"))
    except BaseException:
        conn.send((ERROR, index, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()
        for ring in links:
            if ring is not None:
                ring.close()


# --- the parent -------------------------------------------------------------------------------------------
class _Run:
    """Processes, pipes and rings of one run, and how to stop them all."""

    def __init__(self, groups, timeout):
        self.groups, self.timeout = groups, timeout
        self.processes, self.conns, self.rings, self.results = [], [], [], {}
        self.started = time.perf_counter()
        self.deadline = None if timeout is None else self.started + timeout

    def describe(self, w):
        g = self.groups[w]
        return f"worker {w} (modules {g[0]}..{g[-1]})" if len(g) > 1 else f"worker {w} (module {g[0]})"

    def poll(self, timeout):
        """Wait up to `timeout` s for a result or a worker's exit; raise WorkerFailed on a failure, or when
        the run is past its timeout."""
        poll_workers(self.conns, self.processes, self.results, self.describe, timeout)
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise WorkerFailed(f"The module-parallel run took longer than timeout={self.timeout} s; it was stopped.")

    def make_rings(self, trainer, plan, max_batch, slots, ctx, ring=SharedRing):
        """Ring 0 (the data) and one `ring` up per boundary (a `DeviceRing` keeps activations on the GPUs);
        returns back[w]: the ring from worker w+1 down to worker w, shaped like worker w's output (the
        gradient at it); None for each unless DNI."""
        self.rings.append(SharedRing(2, max_batch, trainer.model.input_shape, "float32", "fifo", ctx=ctx))
        for group in self.groups[:-1]:
            self.rings.append(
                ring(
                    plan.slots,
                    max_batch,
                    plan.shapes[group[-1]],
                    plan.dtype,
                    plan.policy,
                    reuse_cap=plan.reuse_cap,
                    ctx=ctx,
                )
            )
        back = (
            [
                SharedRing(slots or 2, max_batch, plan.shapes[group[-1]], plan.dtype, "fifo", ctx=ctx)
                for group in self.groups[:-1]
            ]
            if plan.talks_back
            else [None] * (len(self.groups) - 1)
        )
        self.rings += [ring for ring in back if ring is not None]
        return back

    def stop(self):
        """Abort the rings, stop every worker, release every segment. Safe to call twice."""
        for ring in self.rings:
            ring.abort()
        stop_processes(self.processes)
        self.close()

    def close(self):
        for conn in self.conns:
            conn.close()
        for ring in self.rings:
            ring.close()


def _start_workers(run, trainer, plan, back, start_epoch, run_started, gpus, threads_per_worker, ctx):
    """Start one worker per group, each with its stage and its rings; wait until every one holds its stage."""
    last = len(run.groups) - 1
    with worker_thread_environment(threads_per_worker):
        for w, group in enumerate(run.groups):
            links = (
                run.rings[w],
                None if w == last else run.rings[w + 1],
                None if w == last else back[w],
                back[w - 1] if w else None,
            )
            args = (w, links, plan, w > 0 and plan.policy == "replay", os.getpid(), run_started, gpus[w])
            _, conn = start_worker(
                ctx,
                _worker,
                f"tinydgl-worker-{w}",
                args,
                trainer.pipeline_stage(group, plan.batches_per_epoch, start_epoch),
                run.processes,
            )
            run.conns.append(conn)
    wait_ready(run.conns, run.processes, run.describe, timeout=120)


def _feed(run, trainer, train_loader, start_epoch, epochs):
    """The parent's part: every data batch into ring 0, in the loader's order; then wait for the results."""
    feed, fed = run.rings[0], 0
    for epoch in range(start_epoch, epochs):
        train_loader.set_epoch(epoch)
        trainer.start_epoch(epoch)
        for x, y in train_loader:
            fed += 1
            while not feed.put(to_numpy(x), to_numpy(y), produced_at=fed, timeout=0.05):
                run.poll(0)
            run.poll(0)
    feed.finish()
    while len(run.results) < len(run.groups):
        run.poll(0.2)


def run_module_parallel(
    trainer,
    train_loader,
    epochs,
    workers=2,
    slots=None,
    threads_per_worker=1,
    start_epoch=0,
    timeout=None,
    log=None,
    balance=True,
    run_started=None,
    devices=None,
    groups=None,
):
    """Train `trainer`'s modules for `epochs` epochs in `workers` processes; returns metrics (JSON-ready).

    trainer: a `LocalTrainer` (dgl, lls, lls-m, lls-mxm, async-dgl) or DNI; afterwards it holds the trained
    weights. train_loader: batches (x, y) with `set_epoch` and `batch_size`. slots: batches per ring
    between workers (default 2 for fifo; the trainer's buffer_size for async-dgl's replay rings).
    threads_per_worker: BLAS threads of each worker. timeout: seconds before the run is stopped (None: no
    limit). balance: split the modules by their measured step cost (`stages.unit_costs`) rather than count.
    groups: an explicit split, e.g. [[0, 1], [2, 3]] (contiguous, every module once; overrides `workers`
    and `balance`), to run exactly the pipeline a prediction was made for.
    run_started: `time.time()` the workers' timelines count from (default: now). devices: with the CuPy
    backend, the GPU ids to use, worker w on devices[w % len(devices)] (default: every visible GPU);
    activations cross devices through `DeviceRing`s (CUDA IPC; untested) where `device_links_available()`,
    else staged in host memory. Must be None on NumPy.

    Returns `pipeline.pipeline_result`'s dict ("workers", "policy", "seconds": training, from the moment
    every worker has started and received its modules to the last result; "samples", "fed_samples",
    "samples_per_second", "train_loss", "last_loss", "rings": [ring stats]) plus "startup_seconds"
    (spawning the workers and handing them their modules) and "activations" ("device": on the GPUs
    between workers, or "host").
    """
    check("module", "shm", trainer)
    checked = trainer.pipeline_links()
    num_units = len(trainer.pipeline_units())
    if groups is not None:
        groups = check_groups(groups, num_units)
    else:
        costs = stages.unit_costs(trainer, int(train_loader.batch_size)) if balance and workers > 1 else None
        groups = split_modules(num_units, workers, costs)
    gpus = _worker_devices(len(groups), devices)
    on_device, why = device_links_available() if gpus[0] is not None else (False, "NumPy")
    plan = plan_pipeline(trainer, train_loader, epochs, start_epoch, slots, checked)
    ctx = mp.get_context("spawn")
    run = _Run(groups, timeout)
    run_started = time.time() if run_started is None else run_started
    try:
        back = run.make_rings(
            trainer, plan, int(train_loader.batch_size), slots, ctx, DeviceRing if on_device else SharedRing
        )
        _start_workers(run, trainer, plan, back, start_epoch, run_started, gpus, threads_per_worker, ctx)
        ready = time.perf_counter()  # every worker started and has its stage: training starts
        if log:
            where = (
                "" if gpus[0] is None else f"; activations {'on the GPUs' if on_device else 'via host memory'}: {why}"
            )
            log(f"module-parallel: {len(groups)} workers, modules {groups}, rings {plan.policy}{where}")
        _feed(run, trainer, train_loader, start_epoch, epochs)
        seconds, startup_seconds = time.perf_counter() - ready, ready - run.started
        ring_stats = [ring.stats() for ring in run.rings]
        for process in run.processes:
            process.join(10)
    except WorkerFailed as err:
        run.stop()
        err.ring_names = tuple(ring.name for ring in run.rings)
        raise
    except BaseException:
        run.stop()
        raise
    run.close()
    reports = [run.results[w][2:5] for w in range(len(groups))]
    result = pipeline_result(trainer, groups, reports, plan, epochs - start_epoch, seconds, ring_stats)
    return {**result, "startup_seconds": startup_seconds, "activations": "device" if on_device else "host"}


def fit_module_parallel(
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
    """`tinydgl.train.fit`'s history (one dict per epoch) for a module-parallel run, plus each epoch's
    per-worker metrics and ring statistics; checkpoints and resume as in `runtime.epochs.epochs_on_workers`. Each
    epoch starts fresh workers and ends with an evaluation in the parent, so an epoch's seconds include the
    workers' start (about a second) and async-dgl's replay rings start empty every epoch (as after a
    resume). options: passed to `run_module_parallel`."""

    def run_epoch(epoch, run_started):
        return run_module_parallel(
            trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch, run_started=run_started, **options
        )

    return epochs_on_workers(
        run_epoch,
        trainer,
        test_loader,
        epochs,
        f"{workers} workers",
        checkpoint_dir,
        resume,
        log,
        train_loader=train_loader,
        bn_recalibrate=bn_recalibrate,
    )
