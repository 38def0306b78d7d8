"""The module-parallel engine over MPI: one rank per module group, on one machine or several.

`engine.run_module_parallel` runs the J module groups of a locally trained network in J processes of one
machine, joined by shared-memory rings. This file runs the same groups as the J ranks of an MPI job, so the
ranks may sit on different machines. Launch it through the CLI:

    mpiexec -n 2 python -m mpi4py -m tinydgl train --parallel module --transport mpi --trainer dgl --model cnn ...

(`-m mpi4py` makes an exception on any rank call `MPI_Abort`, which stops the whole job instead of leaving
the other ranks waiting for a message that never comes.) Every rank builds the same trainer; rank r runs
module group r of `split_modules` (costs measured on rank 0 and broadcast, so every rank agrees); rank 0
reads the data loader itself and the last rank computes the network's loss:

    rank 0                      rank 1                      rank 2 (last)
    loader -> modules 0..a  ==> modules a+1..b          ==> modules b+1..J-1 -> loss
              |    header, x, labels  |    header, x, labels  |
              |  <---- credit ------  |  <---- credit ------  |

    ==> one batch: a header, the activations and the labels (`links.MpiSink` -> `links.MpiSource`)
    <-- a credit: room for one more batch (credits, policies and a clean end: the `links` docstring)

The same pipeline as the local engine (`pipeline`): the same plan, the same worker loop and the same
result; each rank runs `pipeline.run_stage` with MPI links, which return the same `RingEntry`s as a
`SharedRing`, so `WorkerRecorder` measures staleness, occupancy, fresh, replayed and skipped batches and
empty polls the same way, and the run reports the same samples per second.

End of an epoch (a pickled, collective step; cheap next to an epoch): every rank `gather`s its modules'
state (body, head, optimizer), its `WorkerRecorder.summary()` and (last rank) its losses to rank 0, which
loads the states into its own trainer, so `trainer.evaluate` and checkpoints work there. The metrics are
then broadcast, so every rank returns the same dict. At the start of every run rank 0 `scatter`s the
current state of each group to the rank that runs it: so a resumed checkpoint (read on rank 0 only, no
shared file system needed) or a module that changed rank between epochs starts from the right weights.
Timelines: rank 0's `time.time()` after a Barrier is broadcast as the common start (clocks of different
machines agree as well as NTP makes them).

CuPy (untested: no GPU in CI). `cuda_aware_mpi()` asks the MPI library (`MPIX_Query_cuda_support`, which
MPICH and Open MPI export); if it is, ranks receive straight into device memory, else through host memory
(`links`). The run's log line says which.

Faults. The job is one MPI program: a rank that raises makes `python -m mpi4py` (or the CLI, which calls
`Abort` itself) abort every rank; `mpiexec` then exits non-zero. There is no attempt to survive a lost
rank; resume from the last epoch's checkpoint. For tests only, `TINYDGL_MPI_TEST_FAIL_RANK=r` makes rank r
raise after its first batch.
"""
from __future__ import annotations

import os
import time


from ..backend import get_backend
from . import stages
from .epochs import epochs_on_workers
from .links import BACK, LoaderSource, MpiSink, MpiSource
from .metrics import WorkerRecorder
from .pipeline import pipeline_result, plan_pipeline, run_stage, split_modules
from .registry import check

from .data_parallel import fit_data_parallel_mpi, run_data_parallel_mpi  # noqa: F401, I001 (their old home)

FAIL_VARIABLE = "TINYDGL_MPI_TEST_FAIL_RANK"


def world(comm):
    """`comm`, or MPI's COMM_WORLD if None."""
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

    comm = world(comm)
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

    def __getattr__(self, name):  # the rest of the `links.Source` contract: the wrapped source's
        return getattr(self.source, name)


# --- one run ----------------------------------------------------------------------------------------
def _rank_links(comm, trainer, train_loader, plan, groups, start_epoch, epochs, on_device):
    """This rank's links (source, sink, from_above, to_below), as `pipeline.run_stage` takes them: rank 0
    reads the loader; rank r > 0 receives from rank r-1; the links down (tags BACK) are DNI's only."""
    rank, size = comm.Get_rank(), comm.Get_size()
    window, dtype, shapes = plan.slots, plan.dtype, plan.shapes
    if rank == 0:
        source = LoaderSource(trainer, train_loader, start_epoch, epochs)
    else:
        trainer.start_epoch(start_epoch)
        source = MpiSource(comm, rank - 1, plan.policy, window, plan.reuse_cap, shapes[groups[rank - 1][-1]], dtype,
                           on_device)
    if os.environ.get(FAIL_VARIABLE) == str(rank):
        source = _FailAfterFirstBatch(source, rank)
    sink = MpiSink(comm, rank + 1, window, dtype) if rank < size - 1 else None
    from_above = to_below = None
    if plan.talks_back and rank < size - 1:
        from_above = MpiSource(comm, rank + 1, "fifo", window, None, shapes[groups[rank][-1]], dtype, on_device,
                               tags=BACK)
    if plan.talks_back and rank > 0:
        to_below = MpiSink(comm, rank - 1, window, dtype, tags=BACK)
    return source, sink, from_above, to_below


def _rank_groups(comm, trainer, train_loader, balance):
    """Every rank's module group: `split_modules` over the ranks, by costs measured on rank 0 (broadcast,
    so every rank agrees)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    num_modules = len(trainer.pipeline_units())
    if size > num_modules:
        raise ValueError(f"{size} MPI ranks but the trainer has {num_modules} modules: launch at most "
                         f"{num_modules} ranks (mpiexec -n {num_modules}) or cut the model into more modules.")
    costs = None
    if rank == 0 and balance and size > 1:
        costs = stages.unit_costs(trainer, int(train_loader.batch_size))
    return split_modules(num_modules, size, comm.bcast(costs, root=0))


def _describe(size, groups, plan, on_device):
    cupy = get_backend().name == "cupy"
    staging = "" if not cupy else ("; CuPy: MPI is CUDA-aware, receiving into device memory (untested)" if on_device
                                   else "; CuPy: MPI is not CUDA-aware, staging through host memory")
    back = "; synthesizer targets sent back down" if plan.talks_back else ""
    return (f"module-parallel over MPI: {size} ranks, modules {groups}, links {plan.policy} ({plan.slots} in "
            f"flight){back}{staging}")


def run_module_parallel_mpi(trainer, train_loader, epochs, comm=None, slots=None, start_epoch=0, run_started=None,
                            log=None, balance=True):
    """Train `trainer`'s modules for epochs start_epoch..epochs-1 on the ranks of `comm` (one group each).

    Call it on every rank (a collective), each with the same trainer (same model, seed and options) and the
    same loader (only rank 0 reads it; the others use its length and batch size). comm: an mpi4py
    communicator (default `MPI.COMM_WORLD`); its size is the number of workers J. slots: batches in flight
    per link (default 2 for fifo, the trainer's buffer_size for replay). run_started: rank 0's `time.time()`
    the timelines count from (default: now, after a Barrier). balance: split by `module_costs` (measured on
    rank 0) rather than by count. log: called on rank 0 only.

    Returns, on every rank, `pipeline.pipeline_result`'s dict (as `engine.run_module_parallel`) plus
    "transport": "mpi". rings[0] stands for the loader (rank 0 reads it: slots 0); rings[r] is rank r's
    input link, with "bytes_sent" by rank r-1. Afterwards rank 0's trainer holds every module's learned
    state; rank r's holds its own modules'.
    """
    comm = world(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    check("module", "mpi", trainer)
    plan = plan_pipeline(trainer, train_loader, epochs, start_epoch, slots, trainer.pipeline_links())
    groups = _rank_groups(comm, trainer, train_loader, balance)
    # Every rank starts from rank 0's state of its modules (a resume or a new split moves them).
    states = [trainer.pipeline_stage(g, plan.batches_per_epoch, start_epoch).state() for g in groups] \
        if rank == 0 else None
    trainer.load_pipeline_stage(groups[rank], comm.scatter(states, root=0))
    stage = trainer.pipeline_stage(groups[rank], plan.batches_per_epoch, start_epoch)
    on_device = get_backend().name == "cupy" and cuda_aware_mpi()
    if log:
        log(_describe(size, groups, plan, on_device))
    source, sink, from_above, to_below = _rank_links(comm, trainer, train_loader, plan, groups, start_epoch, epochs,
                                                     on_device)
    comm.Barrier()
    started_at = time.time() if rank == 0 else None
    run_started = comm.bcast(run_started if run_started is not None else started_at, root=0)
    started = time.perf_counter()
    recorder = WorkerRecorder(rank, run_started, input_is_data=rank == 0, fed_batches=plan.total)
    losses = run_stage(stage, source, sink, plan, recorder, rank > 0 and plan.policy == "replay",
                       from_above=from_above, to_below=to_below)
    seconds = time.perf_counter() - started
    report = (stage.state(), recorder.summary(), losses)
    gathered = comm.gather((report, source.stats(), sink.stats() if sink else {}, seconds), root=0)
    result = None
    if rank == 0:
        rings = [gathered[0][1]] + [{**gathered[r][1], **gathered[r - 1][2]} for r in range(1, size)]
        seconds = max(entry[3] for entry in gathered)
        result = pipeline_result(trainer, groups, [entry[0] for entry in gathered], plan, epochs - start_epoch,
                                 seconds, rings)
        result["transport"] = "mpi"
    return comm.bcast(result, root=0)


def fit_on_ranks(run_epoch, trainer, test_loader, epochs, label, comm, log, checkpoint_dir, resume, train_loader=None,
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
    comm = world(comm)
    size = comm.Get_size()

    def run_epoch(epoch, run_started):
        return run_module_parallel_mpi(trainer, train_loader, epoch + 1, comm=comm, start_epoch=epoch,
                                       run_started=run_started, log=log if comm.Get_rank() == 0 else None, **options)

    return fit_on_ranks(run_epoch, trainer, test_loader, epochs, f"{size} MPI ranks", comm, log, checkpoint_dir,
                         resume, train_loader, bn_recalibrate)
