"""The module-parallel engine over MPI: one rank per module group, on one machine or several.

The same pipeline as `engine.run_module_parallel` (the same plan, worker loop, metrics and result), with MPI
links (`links.MpiSink` -> `links.MpiSource`) instead of shared-memory rings. Launch it through the CLI:

    mpiexec -n 2 python -m mpi4py -m tinydgl train --parallel module --transport mpi --trainer dgl --model cnn ...

Rank 0 reads the loader, the last rank computes the loss; at each epoch's end every rank gathers its state
and metrics to rank 0, which evaluates and checkpoints. A rank that raises aborts the job (no survival of a
lost rank: resume from the last checkpoint); `TINYDGL_MPI_TEST_FAIL_RANK=r` makes rank r fail, for tests.
Ranks, messages, state, timelines, CUDA-aware MPI and faults: docs/design/runtime.md, "The MPI engine".
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
    return f"GPUs for the MPI ranks (local rank % {count} GPU(s) visible per machine){shared}: " + ", ".join(
        m for m, _ in every
    )


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
        source = MpiSource(
            comm, rank - 1, plan.policy, window, plan.reuse_cap, shapes[groups[rank - 1][-1]], dtype, on_device
        )
    if os.environ.get(FAIL_VARIABLE) == str(rank):
        source = _FailAfterFirstBatch(source, rank)
    sink = MpiSink(comm, rank + 1, window, dtype) if rank < size - 1 else None
    from_above = to_below = None
    if plan.talks_back and rank < size - 1:
        from_above = MpiSource(
            comm, rank + 1, "fifo", window, None, shapes[groups[rank][-1]], dtype, on_device, tags=BACK
        )
    if plan.talks_back and rank > 0:
        to_below = MpiSink(comm, rank - 1, window, dtype, tags=BACK)
    return source, sink, from_above, to_below


def _rank_groups(comm, trainer, train_loader, balance):
    """Every rank's module group: `split_modules` over the ranks, by costs measured on rank 0 (broadcast,
    so every rank agrees)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    num_modules = len(trainer.pipeline_units())
    if size > num_modules:
        raise ValueError(
            f"{size} MPI ranks but the trainer has {num_modules} modules: launch at most "
            f"{num_modules} ranks (mpiexec -n {num_modules}) or cut the model into more modules."
        )
    costs = None
    if rank == 0 and balance and size > 1:
        costs = stages.unit_costs(trainer, int(train_loader.batch_size))
    return split_modules(num_modules, size, comm.bcast(costs, root=0))


def _describe(size, groups, plan, on_device):
    cupy = get_backend().name == "cupy"
    staging = (
        ""
        if not cupy
        else (
            "; CuPy: MPI is CUDA-aware, receiving into device memory (untested)"
            if on_device
            else "; CuPy: MPI is not CUDA-aware, staging through host memory"
        )
    )
    back = "; synthesizer targets sent back down" if plan.talks_back else ""
    return (
        f"module-parallel over MPI: {size} ranks, modules {groups}, links {plan.policy} ({plan.slots} in "
        f"flight){back}{staging}"
    )


def run_module_parallel_mpi(
    trainer, train_loader, epochs, comm=None, slots=None, start_epoch=0, run_started=None, log=None, balance=True
):
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
    states = (
        [trainer.pipeline_stage(g, plan.batches_per_epoch, start_epoch).state() for g in groups] if rank == 0 else None
    )
    trainer.load_pipeline_stage(groups[rank], comm.scatter(states, root=0))
    stage = trainer.pipeline_stage(groups[rank], plan.batches_per_epoch, start_epoch)
    on_device = get_backend().name == "cupy" and cuda_aware_mpi()
    if log:
        log(_describe(size, groups, plan, on_device))
    source, sink, from_above, to_below = _rank_links(
        comm, trainer, train_loader, plan, groups, start_epoch, epochs, on_device
    )
    comm.Barrier()
    started_at = time.time() if rank == 0 else None
    run_started = comm.bcast(run_started if run_started is not None else started_at, root=0)
    started = time.perf_counter()
    recorder = WorkerRecorder(rank, run_started, input_is_data=rank == 0, fed_batches=plan.total)
    losses = run_stage(
        stage,
        source,
        sink,
        plan,
        recorder,
        rank > 0 and plan.policy == "replay",
        from_above=from_above,
        to_below=to_below,
    )
    seconds = time.perf_counter() - started
    report = (stage.state(), recorder.summary(), losses)
    gathered = comm.gather((report, source.stats(), sink.stats() if sink else {}, seconds), root=0)
    result = None
    if rank == 0:
        rings = [gathered[0][1]] + [{**gathered[r][1], **gathered[r - 1][2]} for r in range(1, size)]
        seconds = max(entry[3] for entry in gathered)
        result = pipeline_result(
            trainer, groups, [entry[0] for entry in gathered], plan, epochs - start_epoch, seconds, rings
        )
        result["transport"] = "mpi"
    return comm.bcast(result, root=0)


def fit_on_ranks(
    run_epoch,
    trainer,
    test_loader,
    epochs,
    label,
    comm,
    log,
    checkpoint_dir,
    resume,
    train_loader=None,
    bn_recalibrate=0,
):
    """`epochs_on_workers` on rank 0 (evaluation, log, checkpoints); the other ranks run the same epochs' runs.
    Every rank returns rank 0's history (broadcast at the end)."""
    from .epochs import load_epoch_checkpoint

    rank = comm.Get_rank()
    if rank == 0:
        start = load_epoch_checkpoint(checkpoint_dir, resume, trainer)[1]["epoch"] if resume else 0
        comm.bcast(start, root=0)
        history = epochs_on_workers(
            run_epoch,
            trainer,
            test_loader,
            epochs,
            label,
            checkpoint_dir,
            resume,
            log,
            train_loader=train_loader,
            bn_recalibrate=bn_recalibrate,
        )
    else:
        start = comm.bcast(None, root=0)
        for epoch in range(start, epochs):
            run_epoch(epoch, None)
        history = None
    return comm.bcast(history, root=0)


def fit_module_parallel_mpi(
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
        return run_module_parallel_mpi(
            trainer,
            train_loader,
            epoch + 1,
            comm=comm,
            start_epoch=epoch,
            run_started=run_started,
            log=log if comm.Get_rank() == 0 else None,
            **options,
        )

    return fit_on_ranks(
        run_epoch,
        trainer,
        test_loader,
        epochs,
        f"{size} MPI ranks",
        comm,
        log,
        checkpoint_dir,
        resume,
        train_loader,
        bn_recalibrate,
    )
