"""The module-parallel engine: the modules of a locally trained network in J worker processes.

Local learning (DGL, LLS, async DGL) sends nothing backwards across a module boundary, so module j+1 only
needs module j's output batches. `run_module_parallel` cuts the trainer's units (its modules; for DNI, its
groups) into J contiguous groups, one *stage* per worker process (`stages`), and connects consecutive
workers with `SharedRing`s:

    parent (reads the loader) -> ring 0 -> worker 0 -> ring 1 -> worker 1 -> ... -> worker J-1 (the loss)

DNI and cDNI also send something *back* across each boundary: the gradient the upper worker's lowest group
passes to its input, which is the target of the synthesizer at the top of the worker below. Each boundary
then has a second ring, downwards, and the worker below trains that synthesizer when the target arrives,
batches later (how late is in its metrics); with BP(lambda) > 0 it waits for it (lock-step). Both engines run
the same loop, `pipeline_worker_loop`, over whatever links they have (rings here, MPI messages there).

- The *parent* reads the data loader and feeds every batch into ring 0 (always "fifo": each data batch is
  seen exactly once, in the loader's order). Workers never touch the data set.
- Worker w gets a batch from its input ring, runs `LocalModule.step` for each of its modules in order
  (inside a worker the modules run as in synchronous DGL), and puts the output and labels into ring w+1.
  The last worker keeps the losses of its last module (the network's own loss).
- Rings between workers use policy "fifo" for `dgl` and `lls*` (synchronous pipelining: every module sees
  every batch, in order, so the weights equal the in-process trainer's) and "replay" for `async-dgl`
  (Algorithm 2, buffer size and reuse cap from the trainer). In replay a worker whose input ring has
  nothing servable counts an *empty poll*; a fifo worker stops after as many steps as there are data
  batches, a replay worker once its producer has stopped and every batch it left has been served once.
  The trainer's simulated schedule (`schedule`, `slow_module`, `slowdown`) is not used here: the workers'
  real speeds are the schedule, and the trainer's in-process counters (`AsyncDGLTrainer.stats`) stay
  untouched: the engine returns per-worker metrics of its own.
- Samples per second (docs/protocol.md, section 4) counts the samples *every* module learned from: the minimum
  over workers of fresh samples (`metrics.pipeline_counts`). In fifo that is every sample fed; in replay a
  later worker may replay batches (steps, but nothing new) and skip others (overwritten in its ring before
  it took them), and each worker's summary says how many of each. Every batch carries its data batch's
  number (`origin`) from ring to ring, so "fresh" means new data, not just a new ring entry.

Stages travel by pickling: each worker receives its stage (its `LocalModule`s: body, head, optimizer with
its state; or its DNI groups and synthesizers) through a socket pair right after it starts (`start_worker`
says why not as a `Process` argument), and sends what it learned back the same way when it is done
(`stage.state()`); the parent copies parameters, buffers (batch-norm statistics) and optimizer states into
its own trainer (`stages.load_state`), so `trainer.evaluate` and checkpoints work in the parent afterwards.

GPUs. On the CuPy backend worker w uses GPU `devices[w % len(devices)]` (`--devices`, default every visible
GPU): it selects the device before receiving its modules, so their arrays land there; the rings hold host
copies (`put` stages through host memory), and each worker moves the batches it gets to its own device.
Written with care but untested here: no GPU was available to this project (tests marked `gpu`).

Faults. The parent watches every worker's `Process.sentinel` (and its result pipe) with
`multiprocessing.connection.wait`. If a worker dies before reporting, or reports an exception, the parent
aborts every ring (blocked `put`/`get` everywhere raise `RingClosed` within `POLL_S`), joins the other
workers (terminate, then kill, if they do not stop), closes and unlinks every ring it created and raises
`WorkerFailed` naming the worker, its modules and its exit code. No process or segment outlives the run.

BLAS threads. Each worker gets `threads_per_worker` BLAS/OpenMP threads: the variables are set in the
parent's environment just while the workers start (spawn: the child reads them before importing NumPy).
"""
from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
from multiprocessing.connection import wait

import numpy as np

from ..backend import asarray, get_backend, to_numpy
from . import stages
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder, epoch_losses, pipeline_counts
from .shm_ring import RingClosed, SharedRing

# BLAS reads the first three when NumPy starts; tinydgl.threads reads them too, TINYDGL_NUM_THREADS first.
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYDGL_NUM_THREADS")


@contextlib.contextmanager
def worker_thread_environment(threads):
    """Set the BLAS/OpenMP thread variables while worker processes start (a spawned child reads them when it
    imports NumPy), then restore the parent's own values."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(int(threads)) for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
_ERROR, _DONE, _READY = "error", "done", "ready"


def start_worker(ctx, target, name, args, payload, processes):
    """Start a spawned worker `target(*args, conn)`, append it to `processes` and send it `payload` (its
    modules or trainer) through `conn`, one end of a socket pair; returns (process, the parent's end).

    The process joins `processes` while Ctrl-C and SIGTERM are still blocked: a signal that arrived during
    the start is raised the moment they are unblocked, and the run's clean-up must then know this worker,
    or it would leave it starting after the parent exits (and unlinks the semaphores the child is still
    unpickling: a traceback on the terminal).

    Why the payload is not a `Process` argument: spawn writes a process's arguments into a pipe whose read
    end the *parent itself* keeps open until the write finishes. A child that dies before reading them all
    (a script without `if __name__ == "__main__":` makes every child re-run it and die) leaves the parent
    blocked forever once the payload is larger than the pipe's 64 KiB. A socket whose other end is gone
    makes `send` fail at once instead. The worker's first act is `conn.recv()`.
    """
    mine, theirs = ctx.Pipe(duplex=True)
    process = ctx.Process(target=target, name=name, daemon=True, args=(*args, theirs))
    with stop_signals_blocked():
        process.start()
        processes.append(process)
    theirs.close()  # the child holds its end now; ours sees EOF once the child exits
    try:
        mine.send(payload)
    except OSError as err:
        process.join(2)
        code = process.exitcode
        why = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        mine.close()
        raise WorkerFailed(f"{name} died ({why}) before it received its work ({err.__class__.__name__}). If you "
                           f"started the run from a script, put the code under `if __name__ == \"__main__\":` "
                           f"(spawned workers re-import the main script).") from None
    return process, mine


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_blocked():
    """Block SIGINT and SIGTERM in this thread while a worker process starts. The child inherits the mask, so
    a Ctrl-C that reaches the process group while the child is still importing NumPy waits until the child
    ignores it (`ignore_stop_signals`) instead of ending it with a KeyboardInterrupt traceback; the parent
    gets its own copy of the signal as soon as the block ends. (CPython's resource tracker starts the same
    way.) Where there is no `pthread_sigmask` (Windows), nothing is blocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # Starting a process first starts multiprocessing's resource tracker if it is not running, and that
    # start ends by unblocking these very signals; so start it before blocking them.
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def ignore_stop_signals():
    """In a worker: leave Ctrl-C (SIGINT) and SIGTERM to the parent, which stops every worker through its
    rings or queues and cleans up. A terminal's Ctrl-C and a cluster's SIGTERM reach the whole process group;
    a worker that died of them would look like a crash. (A worker still exits if its parent dies.) The worker
    started with both signals blocked (`stop_signals_blocked`); once they are ignored, any that arrived in the
    meantime are dropped by unblocking them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class WorkerFailed(RuntimeError):
    """A worker process died or raised; the run was stopped and cleaned up.

    ring_names: the shared-memory segments the run created (all unlinked by the time this is raised)."""

    ring_names: tuple = ()


def describe_exit(process):
    """'exit code 1' or 'signal SIGKILL': how a finished worker process ended."""
    process.join(1)
    code = process.exitcode
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


def receive_result(conn, process, name):
    """A worker's ("done", ...) message from `conn`, or None if none has arrived yet (the worker is still
    running). Raises WorkerFailed if the worker reported an error or died without reporting."""
    try:
        message = conn.recv() if conn.poll(0) else None
    except (EOFError, OSError):
        message = None
    if message is not None and message[0] == _DONE:
        return message
    if message is not None:
        raise WorkerFailed(f"{name} failed:\n{message[2]}")
    if not process.is_alive():
        raise WorkerFailed(f"{name} died ({describe_exit(process)}) before it finished; the run was stopped. "
                           f"Check memory (a killed process often means out of memory) and run again.")
    return None


def poll_workers(conns, processes, results, name, timeout):
    """Wait up to `timeout` s for a message or the exit of any worker that has not reported yet; store each
    ("done", ...) message in `results[w]`. Raises WorkerFailed if a worker reported an error or died.
    name(w): how errors name worker w."""
    pending = [w for w in range(len(processes)) if w not in results]
    waitables = [conns[w] for w in pending] + [processes[w].sentinel for w in pending]
    ready = wait(waitables, timeout) if waitables else []
    for w in pending:
        if conns[w] in ready or processes[w].sentinel in ready:
            message = receive_result(conns[w], processes[w], name(w))
            if message is not None:
                results[w] = message


def stop_processes(processes):
    """Wait briefly for each worker to exit, then terminate it, then kill it: none outlives the run."""
    for process in processes:
        process.join(2)
        if process.is_alive():
            process.terminate()
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join()


def split_modules(num_modules, workers, costs=None):
    """Cut modules 0..num_modules-1 into `workers` contiguous groups.

    Without `costs`: groups of equal size (earlier groups get the extra ones). With `costs` (one number per
    module): the contiguous split whose most loaded group costs least, because a pipeline runs at the pace
    of its slowest stage (the classic linear-partition problem, solved exactly by dynamic programming).
    """
    if not 1 <= int(workers) <= num_modules:
        raise ValueError(f"workers must be between 1 and {num_modules} (the trainer's modules), got {workers}.")
    k = int(workers)
    if costs is None:
        sizes = [num_modules // k + (1 if i < num_modules % k else 0) for i in range(k)]
        edges = np.cumsum([0, *sizes]).tolist()
        return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:])]
    if len(costs) != num_modules:
        raise ValueError(f"costs has {len(costs)} entries for {num_modules} modules.")
    prefix = np.cumsum([0.0, *costs])
    # best[g][n]: the least possible maximum load when the first n modules form g groups; cut[g][n]: where
    # the last of those groups starts.
    best = np.full((k + 1, num_modules + 1), np.inf)
    cut = np.zeros((k + 1, num_modules + 1), dtype=int)
    best[0][0] = 0.0
    for g in range(1, k + 1):
        for n in range(g, num_modules + 1):
            for start in range(g - 1, n):
                load = max(best[g - 1][start], prefix[n] - prefix[start])
                if load < best[g][n]:
                    best[g][n], cut[g][n] = load, start
    edges, n = [num_modules], num_modules
    for g in range(k, 0, -1):
        n = cut[g][n]
        edges.append(n)
    edges = edges[::-1]
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def _worker_devices(workers, devices):
    """The CUDA device of each worker (None for each on NumPy): worker w gets devices[w % len(devices)]."""
    if get_backend().name != "cupy":
        if devices:
            raise ValueError(f"devices={list(devices)} needs the CuPy backend (--backend cupy); the active "
                             f"backend is {get_backend().name!r}.")
        return [None] * workers
    import cupy

    visible = cupy.cuda.runtime.getDeviceCount()
    devices = list(range(visible)) if not devices else [int(d) for d in devices]
    bad = [d for d in devices if not 0 <= d < visible]
    if bad or not devices:
        raise ValueError(f"devices {devices}: CuPy sees {visible} GPU(s), ids 0..{visible - 1}.")
    return [devices[w % len(devices)] for w in range(workers)]


# --- the worker (module level, so spawn can import it) ----------------------------------------------------
def pipeline_worker_loop(stage, source, sink, total_batches, recorder, replay_input=False,
                         producer_stopped=lambda: False, keep_alive=lambda: None, from_above=None, to_below=None):
    """The loop every module-parallel worker runs, whatever carries its batches (shared-memory rings here,
    MPI messages in `mpi_engine`): get a batch, run its stage on it, pass the output on; and, for stages
    whose units talk back (DNI), send back down what the stage computed for the stage below and take in
    what the stage above sent back, whenever it comes.

    stage: a `stages.ModuleChain` or `stages.SyntheticGradientStage` (a list of local modules is taken as a
    ModuleChain). source.get(timeout) -> (x, labels, entry) or None when nothing came within `timeout` s
    (entry: a `RingEntry`, or None for raw data). sink.put(x, labels, produced_at, timeout, origin) -> False
    when there was no room within `timeout` s; sink None for the last worker. from_above / to_below: the
    links in the backward direction, with the same get / put (a `SharedRing` each way, or MPI messages):
    None where there is no stage above / below. A stage that waits for the stage above (BP(lambda)) finishes
    each step only when that batch's message is back: the pipeline runs in lock-step. While it waits for
    room or for a batch, a worker keeps taking in what comes back from above, so two neighbours waiting on
    each other's full links always make progress.
    replay_input: the source is a replay buffer, so "nothing servable" is an empty poll, and once
    `producer_stopped()` the worker serves what was never served and stops (Algorithm 2 has no end; this run
    does, without replays past the last fresh batch). keep_alive(): called while waiting (raises to stop the
    worker, e.g. the parent died). recorder: the worker's `WorkerRecorder`; each output goes on with the
    origin (data batch number) that `recorder.got` returned for its input, and each message from above is
    recorded with how late it came (`WorkerRecorder.fed_back`). Returns the last worker's [(loss, samples)]
    per step.
    """
    from .stages import ModuleChain

    if isinstance(stage, (list, tuple)):
        stage = ModuleChain(stage)
    losses = []
    waiting = collections.deque()  # the step numbers of batches whose message from above is still to come

    def take_from_above(block):
        """Take in the messages that came back from above (block: wait until at least one has come)."""
        while waiting:
            t0 = time.time()
            got = from_above.get(timeout=1.0 if block else 0)
            if got is None:
                if not block:
                    return
                recorder.waited(time.time() - t0)
                keep_alive()
                continue
            t1 = time.time()
            recorder.waited(t1 - t0)
            message = asarray(got[0])
            sent_at = waiting.popleft()
            if stage.waits_for_above:
                stage.finish(message)
                loss = None
            else:
                loss = stage.learn_from_above(message)
            recorder.fed_back(t1, time.time(), recorder.steps - sent_at, loss)
            block = False  # one came: take what else is there, without waiting

    def send_below(labels, origin):
        message = stage.message_below()
        if message is None or to_below is None:
            return
        t0 = time.time()
        while not to_below.put(to_numpy(message), labels, produced_at=recorder.steps, timeout=1.0, origin=origin):
            if from_above is not None:
                take_from_above(block=False)
            keep_alive()
        recorder.waited(time.time() - t0)

    # fifo: exactly one step per data batch. replay: replays are steps too, so the count says nothing about
    # the data; such a worker runs until its producer has stopped and every fresh batch has been served.
    while replay_input or recorder.steps < total_batches:
        if from_above is not None:
            take_from_above(block=False)
        t0 = recorder.now()
        if replay_input:
            stopped = producer_stopped()  # read before get: whatever was pushed before the stop is seen
            got = source.get(timeout=0.05)
            if stopped and (got is None or got[2].uses > 1):
                break  # the producer is done and nothing fresh is left: no replays after the end
            if got is None:
                recorder.empty_poll(time.time() - t0)
                keep_alive()
                continue
        else:
            while (got := source.get(timeout=0.05 if from_above is not None else 1.0)) is None:
                if from_above is not None:
                    take_from_above(block=False)
                keep_alive()
        x, y, entry = got
        t1 = time.time()
        x, y = asarray(x), asarray(y)  # to this worker's backend and device (a no-op on NumPy)
        recorder.waited(t1 - t0)
        origin = recorder.got(entry)
        loss, x = stage.step(x, y, origin)
        t2 = time.time()
        recorder.computed(t1, t2, int(y.shape[0]))
        expects = from_above is not None and stage.expects_from_above()
        if expects:
            waiting.append(recorder.steps)
        if not stage.waits_for_above:
            send_below(y, origin)
        if sink is None:
            losses.append((float(loss), int(y.shape[0])))
        else:
            while not sink.put(to_numpy(x), y, produced_at=recorder.steps, timeout=1.0, origin=origin):
                if from_above is not None:
                    take_from_above(block=False)
                keep_alive()
            recorder.waited(time.time() - t2)
        if stage.waits_for_above:  # lock-step (BP(lambda)): this batch's update needs what comes from above
            if expects:
                take_from_above(block=True)
            else:
                stage.finish(None)
            send_below(y, origin)
    while waiting:  # the targets of the last batches are still on their way back
        take_from_above(block=True)
    return losses


def _worker(index, in_ring, out_ring, back_in, back_out, total_batches, producer_done, done, replay_input, parent,
            run_started, gpu, conn):
    """Worker `index`: receives its stage, runs `pipeline_worker_loop` over its rings; reports ("done", state,
    metrics, losses) or ("error", text). back_in / back_out: the rings of messages from the worker above /
    to the worker below (None unless the stage talks back: DNI). gpu: the CUDA device it uses with CuPy
    (None: NumPy). Ctrl-C is the parent's to handle: it stops every worker through the rings."""
    ignore_stop_signals()
    if gpu is not None:
        from ..backend import set_backend

        set_backend("cupy", gpu).device.use()  # before receiving: unpickled CuPy arrays land on this device
    stage = conn.recv()
    conn.send((_READY, index))  # the parent feeds no batch before every worker has its stage
    recorder = WorkerRecorder(index, run_started, input_is_data=index == 0, fed_batches=total_batches)

    def keep_alive():
        if os.getppid() != parent:  # the parent died without stopping us: nobody will read our results
            raise SystemExit(3)

    rings = [r for r in (in_ring, out_ring, back_in, back_out) if r is not None]
    try:
        losses = pipeline_worker_loop(stage, in_ring, out_ring, total_batches, recorder, replay_input,
                                      producer_done.is_set, keep_alive, from_above=back_in, to_below=back_out)
        done.set()
        conn.send((_DONE, index, stage.state(), recorder.summary(), losses))
    except RingClosed:
        done.set()
        conn.send((_ERROR, index, "stopped: a ring was aborted (another worker failed)"))
    except BaseException:
        done.set()
        conn.send((_ERROR, index, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()
        for ring in rings:
            ring.close()


# --- the parent -------------------------------------------------------------------------------------------
class _Run:
    """Processes, pipes and rings of one run, and how to stop them all."""

    def __init__(self, groups):
        self.groups = groups
        self.processes, self.conns, self.rings, self.results = [], [], [], {}

    def describe(self, w):
        g = self.groups[w]
        return f"worker {w} (modules {g[0]}..{g[-1]})" if len(g) > 1 else f"worker {w} (module {g[0]})"

    def wait_ready(self, timeout):
        """Wait until every worker has said it holds its stage (a worker that started late would otherwise
        find its input ring overwritten, or start after the others had finished). Raises WorkerFailed if
        one dies or reports an error first, or if they are not all ready within `timeout` s."""
        deadline = time.monotonic() + timeout
        waiting = set(range(len(self.processes)))
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"{', '.join(self.describe(w) for w in sorted(waiting))} did not start within "
                                   f"{timeout} s.")
            ready = wait([self.conns[w] for w in waiting] + [self.processes[w].sentinel for w in waiting], left)
            for w in sorted(waiting):
                if self.conns[w] in ready:
                    try:
                        message = self.conns[w].recv()
                    except (EOFError, OSError):
                        message = None
                    if message is not None and message[0] == _READY:
                        waiting.discard(w)
                        continue
                    if message is not None:
                        raise WorkerFailed(f"{self.describe(w)} failed:\n{message[2]}")
                if self.processes[w].sentinel in ready or not self.processes[w].is_alive():
                    raise WorkerFailed(f"{self.describe(w)} died ({describe_exit(self.processes[w])}) before it "
                                       "started; the run was stopped.")

    def poll(self, timeout):
        """Wait up to `timeout` s for a result or a worker's exit; raise WorkerFailed on a failure."""
        poll_workers(self.conns, self.processes, self.results, self.describe, timeout)

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


def run_module_parallel(trainer, train_loader, epochs, workers=2, slots=None, threads_per_worker=1,
                        start_epoch=0, timeout=None, log=None, balance=True, run_started=None, devices=None,
                        groups=None):
    """Train `trainer`'s modules for `epochs` epochs in `workers` processes; returns metrics (JSON-ready).

    trainer: a `LocalTrainer` (dgl, lls, lls-m, lls-mxm, async-dgl); afterwards it holds the trained
    weights. train_loader: batches (x, y) with `set_epoch` and `batch_size`. slots: batches per ring
    between workers (default 2 for fifo; the trainer's buffer_size for async-dgl's replay rings).
    threads_per_worker: BLAS threads of each worker. timeout: seconds before the run is stopped (None: no
    limit). balance: split the modules by their measured step cost (`stages.unit_costs`) rather than count.
    groups: an explicit split, e.g. [[0, 1], [2, 3]] (contiguous, every module once; overrides `workers`
    and `balance`), to run exactly the pipeline a prediction was made for.
    run_started: `time.time()` the workers' timelines count from (default: now). devices: with the CuPy
    backend, the GPU ids to use, worker w on devices[w % len(devices)] (default: every visible GPU);
    activations cross devices through the rings, staged in host memory. Must be None on NumPy.

    Returns {"workers": [per-worker `WorkerRecorder.summary()` + "modules"], "policy", "seconds" (training:
    from the moment every worker has started and received its modules to the last result),
    "startup_seconds" (spawning the workers and handing them their modules), "samples" (that every module
    learned from), "fed_samples" (that the first worker took from the data), "samples_per_second" (samples /
    seconds), "train_loss" (per epoch; fifo only), "last_loss", "rings": [ring stats]}.
    """
    policy, replay_slots, reuse_cap = stages.check_trainer(trainer)
    num_units = stages.units(trainer)
    if groups is not None:
        groups = [list(map(int, g)) for g in groups]
        if [j for g in groups for j in g] != list(range(num_units)) or not all(groups):
            raise ValueError(f"groups {groups} must cut modules 0..{num_units - 1} into contiguous, "
                             f"non-empty groups, in order.")
        workers = len(groups)
    else:
        costs = stages.unit_costs(trainer, int(train_loader.batch_size)) if balance and workers > 1 else None
        groups = split_modules(num_units, workers, costs)
    gpus = _worker_devices(workers, devices)
    shapes = stages.unit_output_shapes(trainer)
    talks_back = stages.is_synthetic(trainer)  # DNI: each synthesizer's target comes back down a ring
    model = trainer.model
    dtype = str(model.parameters()[0].data.dtype).split(".")[-1]
    ctx = mp.get_context("spawn")
    batches_per_epoch = len(train_loader)
    total = batches_per_epoch * (epochs - start_epoch)
    if total < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {batches_per_epoch} batch(es).")
    max_batch = int(train_loader.batch_size)

    run = _Run(groups)
    started = time.perf_counter()
    run_started = time.time() if run_started is None else run_started
    try:
        run.rings.append(SharedRing(2, max_batch, model.input_shape, "float32", "fifo", ctx=ctx))
        for group in groups[:-1]:
            run.rings.append(SharedRing(slots or replay_slots or 2, max_batch, shapes[group[-1]], dtype, policy,
                                        reuse_cap=reuse_cap if policy == "replay" else None, ctx=ctx))
        # back[w]: from worker w+1 down to worker w, shaped like worker w's output (the gradient at it)
        back = [SharedRing(slots or 2, max_batch, shapes[group[-1]], dtype, "fifo", ctx=ctx)
                for group in groups[:-1]] if talks_back else [None] * (len(groups) - 1)
        run.rings += [ring for ring in back if ring is not None]
        done = [ctx.Event() for _ in groups]
        feeder_done = ctx.Event()
        with worker_thread_environment(threads_per_worker):
            for w, group in enumerate(groups):
                last = w == len(groups) - 1
                args = (w, run.rings[w], None if last else run.rings[w + 1], None if last else back[w],
                        back[w - 1] if w else None, total, done[w - 1] if w else feeder_done,
                        done[w], w > 0 and policy == "replay", os.getpid(), run_started, gpus[w])
                _, conn = start_worker(ctx, _worker, f"tinydgl-worker-{w}", args,
                                       stages.make_stage(trainer, group, batches_per_epoch, start_epoch),
                                       run.processes)
                run.conns.append(conn)
        run.wait_ready(timeout=120)
        ready = time.perf_counter()  # every worker started and has its stage: training starts
        if log:
            log(f"module-parallel: {len(groups)} workers, modules {groups}, rings {policy}")
        deadline = None if timeout is None else started + timeout

        def check_time():
            if deadline is not None and time.perf_counter() > deadline:
                raise WorkerFailed(f"The module-parallel run took longer than timeout={timeout} s; it was stopped.")

        feed, fed = run.rings[0], 0
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            for x, y in train_loader:
                fed += 1
                while not feed.put(to_numpy(x), to_numpy(y), produced_at=fed, timeout=0.05):
                    run.poll(0)
                    check_time()
                run.poll(0)
        feeder_done.set()
        while len(run.results) < len(groups):
            run.poll(0.2)
            check_time()
        seconds, startup_seconds = time.perf_counter() - ready, ready - started
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

    # Copy what the workers learned into the parent's trainer (the model's blocks are the stages' units).
    for w, group in enumerate(groups):
        stages.load_state(trainer, group, run.results[w][2])

    worker_metrics = [run.results[w][3] for w in range(len(groups))]
    for m, group in zip(worker_metrics, groups):
        m["modules"] = group
    losses = run.results[len(groups) - 1][4]
    train_loss = epoch_losses(losses, batches_per_epoch, epochs - start_epoch) if policy == "fifo" else []
    return {"workers": worker_metrics, "policy": policy, "seconds": seconds, "startup_seconds": startup_seconds,
            **pipeline_counts(worker_metrics, seconds), "train_loss": train_loss,
            "last_loss": losses[-1][0] if losses else math.nan, "rings": ring_stats}


def fit_module_parallel(trainer, train_loader, test_loader, epochs, workers=2, log=print, checkpoint_dir=None,
                        resume=False, bn_recalibrate=0, **options):
    """`tinydgl.train.fit`'s history (one dict per epoch) for a module-parallel run, plus each epoch's
    per-worker metrics and ring statistics; checkpoints and resume as in `runtime.epochs.epochs_on_workers`. Each
    epoch starts fresh workers and ends with an evaluation in the parent, so an epoch's seconds include the
    workers' start (about a second) and async-dgl's replay rings start empty every epoch (as after a
    resume). options: passed to `run_module_parallel`."""
    def run_epoch(epoch, run_started):
        return run_module_parallel(trainer, train_loader, epoch + 1, workers=workers, start_epoch=epoch,
                                   run_started=run_started, **options)

    return epochs_on_workers(run_epoch, trainer, test_loader, epochs, f"{workers} workers", checkpoint_dir, resume, log,
                             train_loader=train_loader, bn_recalibrate=bn_recalibrate)
