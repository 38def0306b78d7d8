"""The module-parallel engine over MPI: one rank per module group, on one machine or several.

`engine.run_module_parallel` runs the J module groups of a locally trained network in J processes of one
machine, joined by shared-memory rings. This file runs the same groups as the J ranks of an MPI job, so the
ranks may sit on different machines. Launch it through the CLI:

    mpiexec -n 2 python -m mpi4py -m tinydgl train --engine mpi --trainer dgl --model cnn ...

(`-m mpi4py` makes an exception on any rank call `MPI_Abort`, which stops the whole job instead of leaving
the other ranks waiting for a message that never comes.) Every rank builds the same trainer; rank r runs
module group r of `split_modules` (costs measured on rank 0 and broadcast, so every rank agrees); rank 0
reads the data loader itself and the last rank computes the network's loss:

    rank 0                      rank 1                      rank 2 (last)
    loader -> modules 0..a  ==> modules a+1..b          ==> modules b+1..J-1 -> loss
              |    header, x, labels  |    header, x, labels  |
              |  <---- credit ------  |  <---- credit ------  |

    ==> one batch = three messages (tags HEADER, X, LABELS), NumPy buffers sent with Isend, received with
        Recv into arrays of the right shape: no pickling. HEADER is int64 [samples, produced_at, serial,
        stop, origin] (origin: the data batch it was computed from, see `metrics`); the receiver knows the
        activation shape and dtype (every rank built the same model).
    <-- a credit (tag CREDIT, one int64) gives the producer room for one more batch.

The same loop as the local engine. Each rank runs `engine.pipeline_worker_loop` unchanged; only its
`source` and `sink` differ: `_MpiSource.get` and `_MpiSink.put` have the interface of `SharedRing.get/put`
and return the same `RingEntry`s, so `WorkerRecorder` measures staleness, occupancy, fresh, replayed and
skipped batches and empty polls the same way, and the run reports the same samples per second (the samples
every module learned from, `metrics.pipeline_counts`). The two policies of `shm_ring` map onto credits like this:

- "fifo" (dgl, lls*): the producer starts with `slots` credits and spends one per batch; the consumer
  hands a credit back when it *serves* a batch. So at most `slots` batches are in flight or waiting, and
  the producer blocks when the consumer lags, like a full fifo ring. Batches are served in order, exactly
  once: the weights equal the in-process trainer's.
- "replay" (async-dgl): the consumer *drains* every batch that has arrived (Iprobe) into a local
  `ReplayBuffer` (Algorithm 2's B_j: capacity M, push replaces the oldest) and hands the credit back at
  once; it serves by `replay_choice` (fewest uses, then the freshest, under the reuse cap) and counts an
  empty poll when nothing is servable. So the producer waits only if `slots` batches are still on the wire, undrained,
  i.e. if the consumer is in the middle of one long step (the bounded window); it never waits for a batch
  to be used.

A clean end. After its last batch a producer sends a HEADER with stop=1 and then reads credits until a BYE
(credit -1). A consumer, after its last step, drains its input until that stop header (in replay it may
finish its steps first: what still arrives is discarded, but credited, so the producer is never stuck),
then sends BYE. MPI keeps the messages of one (source, tag) in order, so the BYE is the last message on
CREDIT: when the producer reads it no credit is left unread, and every batch has been received, so its
Isends complete. Nothing is left in flight when the ranks move on to the end-of-epoch collectives.

End of an epoch (a pickled, collective step; cheap next to an epoch): every rank `gather`s its modules'
state (body, head, optimizer), its `WorkerRecorder.summary()` and (last rank) its losses to rank 0, which
loads the states into its own trainer, so `trainer.evaluate` and checkpoints work there. The metrics are
then broadcast, so every rank returns the same dict. At the start of every run rank 0 `scatter`s the
current state of each group to the rank that runs it: so a resumed checkpoint (read on rank 0 only, no
shared file system needed) or a module that changed rank between epochs starts from the right weights.
Timelines: rank 0's `time.time()` after a Barrier is broadcast as the common start (clocks of different
machines agree as well as NTP makes them).

CuPy (untested: no GPU in CI). `cuda_aware_mpi()` asks the MPI library (`MPIX_Query_cuda_support`, which
MPICH and Open MPI export). `pipeline_worker_loop` hands the sink host arrays (`to_numpy`), so sending is
always staged through host memory; receiving goes straight into device memory (a CuPy array as the Recv
buffer) when MPI is CUDA-aware, else into a host array moved to the device with `asarray`. The run's log
line says which.

Faults. The job is one MPI program: a rank that raises makes `python -m mpi4py` (or the CLI, which calls
`Abort` itself) abort every rank; `mpiexec` then exits non-zero. There is no attempt to survive a lost
rank; resume from the last epoch's checkpoint. For tests only, `TINYDGL_MPI_TEST_FAIL_RANK=r` makes rank r
raise after its first batch.
"""
from __future__ import annotations

import collections
import math
import os
import time

import numpy as np

from ..backend import asarray, get_backend, to_numpy, use_backend
from ..trainers.buffers import ReplayBuffer
from . import stages
from .engine import pipeline_worker_loop, split_modules
from .epochs import epochs_on_workers
from .metrics import WorkerRecorder, epoch_losses, pipeline_counts
from .shm_ring import RingEntry

HEADER, X, LABELS, CREDIT = 11, 12, 13, 14  # message tags of the links up (activations)
BACK = (21, 22, 23, 24)  # the same four, for the links down (DNI: synthesizer targets), so the two never mix
BYE = -1  # a credit of -1: the consumer has read the stop header, nothing more will come
POLL_S = 0.0005  # sleep between polls while waiting (MPI's blocking calls spin a core; these waits need not)
FAIL_VARIABLE = "TINYDGL_MPI_TEST_FAIL_RANK"


def _world(comm):
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    return comm


def cuda_aware_mpi():
    """True if the MPI library says it can send and receive CUDA device buffers (`MPIX_Query_cuda_support`
    in MPICH and Open MPI; mpi4py's `MPI.Query_cuda_support` where it has one), else False."""
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return bool(query())
        except Exception:
            pass
    try:
        import ctypes

        return bool(ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support())
    except (AttributeError, OSError):
        return False


def choose_rank_gpu(comm=None):
    """CuPy under MPI: each rank takes GPU `local_rank % GPUs visible`, and makes it its backend's device.

    local_rank is the rank's number among the ranks on its own machine (a node-local communicator, split by
    shared memory: `Split_type(COMM_TYPE_SHARED)`), so ranks on one machine spread over its GPUs and every
    machine starts from its GPU 0; more ranks than GPUs share them round-robin. A collective: every rank
    calls it. Returns, on every rank, one line naming every rank's choice (rank 0 prints it).
    """
    from mpi4py import MPI

    from ..backend import gpu_count, set_backend

    comm = _world(comm)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        local_rank, local_size = node.Get_rank(), node.Get_size()
    finally:
        node.Free()
    import cupy

    count = gpu_count(cupy)
    gpu = local_rank % count
    set_backend("cupy", gpu)
    mine = f"rank {comm.Get_rank()} -> {MPI.Get_processor_name()} GPU {gpu}"
    every = comm.allgather((mine, local_size > count))
    shared = " (more ranks than GPUs on a machine: they share them)" if any(s for _, s in every) else ""
    return (f"GPUs for the MPI ranks (local rank % {count} GPU(s) visible per machine){shared}: "
            + ", ".join(m for m, _ in every))


# --- the sending and receiving ends of one link (rank r -> rank r+1) --------------------------------
class _MpiSink:
    """Rank r's output: `put` sends a batch to rank r+1 when a credit allows it (see the module docstring)."""

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
            time.sleep(POLL_S)
            self._read_credits()
        # Copies: an Isend reads its buffer until the receiver has it (a large message waits for the matching
        # Recv), while the caller goes on computing and might reuse its arrays.
        x = np.array(to_numpy(x), dtype=self.dtype, order="C", copy=True)
        labels = np.array(to_numpy(labels), dtype=np.int64, order="C", copy=True)
        origin = self.serial if origin is None else int(origin)
        header = np.array([x.shape[0], int(produced_at), self.serial, 0, origin], np.int64)
        header_tag, x_tag, labels_tag, _ = self.tags
        reqs = [self.comm.Isend(header, self.dest, header_tag), self.comm.Isend(x, self.dest, x_tag),
                self.comm.Isend(labels, self.dest, labels_tag)]
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
            time.sleep(POLL_S)
        request.Wait()
        for reqs, _ in self.in_flight:
            for r in reqs:
                r.Wait()
        self.in_flight = []

    def stats(self):
        return {"sent": self.serial, "bytes_sent": self.bytes}


def _all_done(requests):
    return all(r.Test() for r in requests)


class _MpiSource:
    """Rank r's input from rank r-1: `get` serves a batch as `SharedRing.get` would (fifo or replay)."""

    def __init__(self, comm, src, policy, capacity, reuse_cap, sample_shape, dtype, on_device,
                 tags=(HEADER, X, LABELS, CREDIT)):
        self.comm, self.src, self.policy, self.tags = comm, src, policy, tags
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
                raise RuntimeError(f"rank {self.src} stopped after sending {self.received} batches, fewer than "
                                   f"this rank was told to expect; the ranks disagree about the run's length.")
            if self.stopped or (deadline is not None and time.monotonic() > deadline):
                return None
            time.sleep(POLL_S)

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
        return x, labels, RingEntry(e.serial, e.produced_at, e.samples, e.uses, -1, pushed, len(self.replay),
                                    e.origin)

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
                time.sleep(POLL_S)
        self.comm.Send(self._bye, self.src, self.tags[3])
        for r in self.credits_out:
            r.Wait()
        self.credits_out = []

    def stats(self, slots):
        replay = self.replay
        return {"policy": self.policy, "slots": slots, "pushed": self.received, "served": self.served,
                "overwritten": max(0, replay.pushed - replay.capacity) if replay else 0,
                "dropped_unused": replay.dropped_unused if replay else 0,
                "stored": len(replay) if replay else len(self.waiting), "discarded_at_end": self.discarded}


class _DataSource:
    """Rank 0's input: the loader's batches, epoch after epoch (entry None: they are data, not a buffer)."""

    def __init__(self, trainer, train_loader, start_epoch, epochs):
        self.batches = self._batches(trainer, train_loader, start_epoch, epochs)

    @staticmethod
    def _batches(trainer, train_loader, start_epoch, epochs):
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            yield from train_loader

    def get(self, timeout=None):
        x, y = next(self.batches)
        return x, y, None

    def close(self):
        self.batches.close()  # the loader's iteration ends here, not whenever the generator is collected


class _FailAfterFirstBatch:
    """Test hook (TINYDGL_MPI_TEST_FAIL_RANK): a source that raises on its second `get`."""

    def __init__(self, source, rank):
        self.source, self.rank, self.served = source, rank, 0

    def get(self, timeout=None):
        if self.served >= 1:
            raise RuntimeError(f"rank {self.rank}: failure injected by {FAIL_VARIABLE}={self.rank} (for testing)")
        got = self.source.get(timeout)
        self.served += got is not None
        return got


# --- one run ----------------------------------------------------------------------------------------
def _check(trainer):
    """The local engine's checks (a local or DNI trainer, no buffer codec); CuPy is allowed here (staged,
    untested)."""
    if get_backend().name == "cupy":
        with use_backend("numpy"):  # the local engine refuses CuPy only because its rings are host memory
            return stages.check_trainer(trainer)
    return stages.check_trainer(trainer)


def run_module_parallel_mpi(trainer, train_loader, epochs, comm=None, slots=None, start_epoch=0, run_started=None,
                            log=None, balance=True):
    """Train `trainer`'s modules for epochs start_epoch..epochs-1 on the ranks of `comm` (one group each).

    Call it on every rank (a collective), each with the same trainer (same model, seed and options) and the
    same loader (only rank 0 reads it; the others use its length and batch size). comm: an mpi4py
    communicator (default `MPI.COMM_WORLD`); its size is the number of workers J. slots: batches in flight
    per link (default 2 for fifo, the trainer's buffer_size for replay). run_started: rank 0's `time.time()`
    the timelines count from (default: now, after a Barrier). balance: split by `module_costs` (measured on
    rank 0) rather than by count. log: called on rank 0 only.

    Returns, on every rank, the dict of `engine.run_module_parallel`: {"workers": [per-rank
    `WorkerRecorder.summary()` + "modules"], "policy", "seconds", "samples" (that every module learned
    from), "fed_samples", "samples_per_second", "train_loss" (per epoch; fifo), "last_loss", "rings"} plus
    "transport": "mpi". rings[0] stands for the
    loader (rank 0 reads it: slots 0); rings[r] is rank r's input link, with "bytes_sent" by rank r-1.
    Afterwards rank 0's trainer holds every module's learned state; rank r's holds its own modules'.
    """
    comm = _world(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    policy, replay_slots, reuse_cap = _check(trainer)
    batches_per_epoch = len(train_loader)
    total = batches_per_epoch * (epochs - start_epoch)
    if total < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {batches_per_epoch} batch(es).")
    num_modules = stages.units(trainer)
    if size > num_modules:
        raise ValueError(f"{size} MPI ranks but the trainer has {num_modules} modules: launch at most "
                         f"{num_modules} ranks (mpiexec -n {num_modules}) or cut the model into more modules.")
    costs = None
    if rank == 0 and balance and size > 1:
        costs = stages.unit_costs(trainer, int(train_loader.batch_size))
    costs = comm.bcast(costs, root=0)
    groups = split_modules(num_modules, size, costs)
    group = groups[rank]
    # Every rank starts from rank 0's state of its modules (a resume or a new split moves them).
    states = [stages.make_stage(trainer, g, batches_per_epoch, start_epoch).state() for g in groups] if rank == 0 else None
    stages.load_state(trainer, group, comm.scatter(states, root=0))
    stage = stages.make_stage(trainer, group, batches_per_epoch, start_epoch)
    model = trainer.model
    dtype = np.dtype(str(model.parameters()[0].data.dtype).split(".")[-1])
    shapes = stages.unit_output_shapes(trainer)
    window = int(slots or replay_slots or 2)
    cupy_backend = get_backend().name == "cupy"
    on_device = cupy_backend and cuda_aware_mpi()
    talks_back = stages.is_synthetic(trainer)  # DNI: each synthesizer's target comes back down (tags BACK)
    if log:
        staging = "" if not cupy_backend else ("; CuPy: MPI is CUDA-aware, receiving into device memory (untested)"
                                               if on_device else "; CuPy: MPI is not CUDA-aware, staging through host memory")
        back = "; synthesizer targets sent back down" if talks_back else ""
        log(f"module-parallel over MPI: {size} ranks, modules {groups}, links {policy} ({window} in flight){back}{staging}")

    if rank == 0:
        source = _DataSource(trainer, train_loader, start_epoch, epochs)
    else:
        trainer.start_epoch(start_epoch)
        source = _MpiSource(comm, rank - 1, policy, window, reuse_cap, shapes[groups[rank - 1][-1]], dtype, on_device)
    sink = _MpiSink(comm, rank + 1, window, dtype) if rank < size - 1 else None
    from_above = to_below = None
    if talks_back and rank < size - 1:
        from_above = _MpiSource(comm, rank + 1, "fifo", window, None, shapes[group[-1]], dtype, on_device, tags=BACK)
    if talks_back and rank > 0:
        to_below = _MpiSink(comm, rank - 1, window, dtype, tags=BACK)
    worker_source = source
    if os.environ.get(FAIL_VARIABLE) == str(rank):
        worker_source = _FailAfterFirstBatch(source, rank)

    comm.Barrier()
    started_at = time.time() if rank == 0 else None
    run_started = comm.bcast(run_started if run_started is not None else started_at, root=0)
    started = time.perf_counter()
    recorder = WorkerRecorder(rank, run_started, input_is_data=rank == 0, fed_batches=total)
    replay_input = rank > 0 and policy == "replay"
    losses = pipeline_worker_loop(stage, worker_source, sink, total, recorder, replay_input,
                                  source.producer_stopped if replay_input else (lambda: False),
                                  from_above=from_above, to_below=to_below)
    # The links down end first, from the top rank down (each rank's from_above waits for the rank above to
    # finish its to_below), then the links up as before: no rank waits on one that waits on it.
    if from_above is not None:
        from_above.finish()
    if to_below is not None:
        to_below.finish()
    if rank > 0:
        source.finish()
    else:
        source.close()
    if sink is not None:
        sink.finish()
    seconds = time.perf_counter() - started

    summary = recorder.summary()
    summary["modules"] = group
    link = source.stats(window) if rank > 0 else None
    sent = sink.stats() if sink is not None else None
    gathered = comm.gather((stage.state(), summary, link, sent, losses, seconds), root=0)
    result = None
    if rank == 0:
        for g, (state, *_) in zip(groups, gathered):
            stages.load_state(trainer, g, state)
        workers = [entry[1] for entry in gathered]
        rings = [{"policy": "fifo", "slots": 0, "pushed": total, "served": total, "overwritten": 0,
                  "dropped_unused": 0, "stored": 0}]  # the loader, read by rank 0 itself
        for r in range(1, size):
            rings.append({**gathered[r][2], **gathered[r - 1][3]})
        losses = gathered[-1][4]
        seconds = max(entry[5] for entry in gathered)
        train_loss = epoch_losses(losses, batches_per_epoch, epochs - start_epoch) if policy == "fifo" else []
        result = {"workers": workers, "policy": policy, "seconds": seconds, **pipeline_counts(workers, seconds),
                  "train_loss": train_loss,
                  "last_loss": losses[-1][0] if losses else math.nan, "rings": rings, "transport": "mpi"}
    return comm.bcast(result, root=0)


def _fit_on_ranks(run_epoch, trainer, test_loader, epochs, label, comm, log, checkpoint_dir, resume, train_loader=None,
                  bn_recalibrate=0):
    """`epochs_on_workers` on rank 0 (evaluation, log, checkpoints); the other ranks run the same epochs' runs.
    Every rank returns rank 0's history (broadcast at the end)."""
    from .epochs import load_epoch_checkpoint

    rank = comm.Get_rank()
    if rank == 0:
        start = load_epoch_checkpoint(checkpoint_dir, resume, trainer)[1]["epoch"] if resume else 0
        comm.bcast(start, root=0)
        history = epochs_on_workers(run_epoch, trainer, test_loader, epochs, label, checkpoint_dir, resume, log,
                                    train_loader=train_loader, bn_recalibrate=bn_recalibrate)
    else:
        start = comm.bcast(None, root=0)
        for epoch in range(start, epochs):
            run_epoch(epoch, None)
        history = None
    return comm.bcast(history, root=0)


def fit_module_parallel_mpi(trainer, train_loader, test_loader, epochs, comm=None, log=print, checkpoint_dir=None,
                            resume=False, bn_recalibrate=0, **options):
    """`tinydgl.train.fit`'s history for a module-parallel run over MPI; call it on every rank.

    Rank 0 evaluates after every epoch, logs (log is used on rank 0 only) and saves the checkpoint (the
    format of `runtime.epochs.epochs_on_workers`); with resume=True rank 0 reads the checkpoint and the next run
    scatters its weights to the ranks, so only rank 0 needs to see checkpoint_dir. Every rank returns the
    same history (rank 0's, broadcast); rank 0's trainer holds the whole trained model, another rank's only
    its own modules. options: for `run_module_parallel_mpi` (slots, balance).
    """
    comm = _world(comm)
    size = comm.Get_size()

    def run_epoch(epoch, run_started):
        return run_module_parallel_mpi(trainer, train_loader, epoch + 1, comm=comm, start_epoch=epoch,
                                       run_started=run_started, log=log if comm.Get_rank() == 0 else None, **options)

    return _fit_on_ranks(run_epoch, trainer, test_loader, epochs, f"{size} MPI ranks", comm, log, checkpoint_dir,
                         resume, train_loader, bn_recalibrate)


# --- dp-sync over MPI ---------------------------------------------------------------------------------
def run_data_parallel_mpi(trainer, train_loader, epochs, comm=None, start_epoch=0, log=None):
    """Synchronous data-parallel SGD on the ranks of `comm` (`data_parallel.run_data_parallel` over MPI).

    Call it on every rank with the same BackpropTrainer and the same loader: every rank reads the loader
    itself (same seed, so the same batches; no data crosses ranks), takes its shard of each batch
    (`shard_bounds`) and runs `train_step` with its optimizer wrapped in `_AveragedGradients`, whose
    all-reduce is `comm.Allreduce` of the shard-size-weighted gradient row: the sum is the whole batch's
    gradient, so the update equals single-process SGD on whole batches (BatchNorm and dropout aside, as in
    the local version). Rank 0 broadcasts its state first, so the copies start equal (after a resume too).

    Returns on every rank the dict of `run_data_parallel` ("workers": per-rank steps, samples, busy_seconds,
    wait_seconds; "steps", "samples", "seconds", "samples_per_second", "train_loss", "last_loss") plus
    "transport": "mpi". Every rank's trainer holds the same weights; BatchNorm running statistics are each
    rank's own (rank 0's are the ones evaluated and saved).
    """
    from .data_parallel import _AveragedGradients, _check_trainer as _check_backprop, shard_bounds

    comm = _world(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    _check_backprop(trainer)
    total_steps = len(train_loader) * (epochs - start_epoch)
    if total_steps < 1:
        raise ValueError(f"Nothing to train: {epochs - start_epoch} epoch(s) of {len(train_loader)} batch(es).")
    state = comm.bcast(trainer.state_dict() if rank == 0 else None, root=0)
    if rank != 0:
        trainer.load_state_dict(state)
    params = trainer.optimizer.params
    num_grads = sum(p.data.size for p in params)
    if log:
        log(f"data-parallel over MPI: {size} ranks, {num_grads:,} gradients all-reduced per step")

    def all_reduce(weighted_row):
        total = np.empty_like(weighted_row)
        comm.Allreduce(weighted_row, total)  # MPI.SUM by default
        return total

    # One row per rank, as `_AveragedGradients` expects; only this rank's row is ever written (np.zeros
    # pages that are never touched take no memory).
    grads = np.zeros((size, num_grads), params[0].data.dtype)
    averaged = _AveragedGradients(trainer.optimizer, grads, rank, None, all_reduce=all_reduce)
    trainer.optimizer = averaged
    trainer.model.train()
    busy, steps, samples, losses = 0.0, 0, 0, []
    comm.Barrier()
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            trainer.start_epoch(epoch)
            for x, y in train_loader:
                t0 = time.perf_counter()
                bounds = shard_bounds(int(y.shape[0]), size)
                averaged.shard_sizes = [b - a for a, b in bounds]
                lo, hi = bounds[rank]
                if hi > lo:
                    loss = trainer.train_step(x[lo:hi], y[lo:hi])
                else:
                    loss = 0.0
                    averaged.step()  # nothing to learn from, but the collective and the update still happen
                steps += 1
                samples += hi - lo
                losses.append((float(loss), hi - lo))
                busy += time.perf_counter() - t0
    finally:
        trainer.optimizer = averaged.optimizer
    seconds = time.perf_counter() - started
    # every rank learns from its shard of every batch, once: the same work counts as the other engines report
    metrics = {"worker": rank, "steps": steps, "samples": samples, "busy_seconds": busy - averaged.wait_seconds,
               "wait_seconds": averaged.wait_seconds, "fresh_batches": steps, "fresh_samples": samples,
               "replayed_batches": 0, "replayed_samples": 0, "skipped_batches": 0}
    gathered = comm.gather((metrics, losses, seconds), root=0)
    result = None
    if rank == 0:
        step_losses = []
        for shards in zip(*(g[1] for g in gathered)):
            n = sum(s for _, s in shards)
            step_losses.append((sum(loss * s for loss, s in shards) / n, n))
        train_loss = epoch_losses(step_losses, len(train_loader), epochs - start_epoch)
        samples = sum(s for _, s in step_losses)
        seconds = max(g[2] for g in gathered)
        result = {"workers": [g[0] for g in gathered], "steps": len(step_losses), "samples": samples,
                  "seconds": seconds, "samples_per_second": samples / seconds, "train_loss": train_loss,
                  "last_loss": step_losses[-1][0], "transport": "mpi"}
    return comm.bcast(result, root=0)


def fit_data_parallel_mpi(trainer, train_loader, test_loader, epochs, comm=None, log=print, checkpoint_dir=None,
                          resume=False, bn_recalibrate=0, **options):
    """`tinydgl.train.fit`'s history for dp-sync over MPI; call it on every rank. Rank 0 evaluates, logs and
    checkpoints (`epochs_on_workers`); on resume it reads the checkpoint and each run broadcasts its state. Every
    rank returns rank 0's history."""
    comm = _world(comm)

    def run_epoch(epoch, run_started):
        return run_data_parallel_mpi(trainer, train_loader, epoch + 1, comm=comm, start_epoch=epoch,
                                     log=log if comm.Get_rank() == 0 else None, **options)

    return _fit_on_ranks(run_epoch, trainer, test_loader, epochs, f"{comm.Get_size()} data-parallel MPI ranks",
                         comm, log, checkpoint_dir, resume, train_loader, bn_recalibrate)
