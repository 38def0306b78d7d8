"""`tinydgl train --parallel module|sync|downpour --workers J`: the parallel runs, on the engine the registry
(`runtime/registry.py`) keys by (--parallel, --transport). With `--transport shm`, worker processes on this
machine; with `--transport mpi`, one MPI rank per worker, where every rank runs the command and rank 0
alone prints and writes.
"""

import os
import sys

from ..backend import get_backend
from .checks import CommandError, check_output_paths


def fit_on_workers(args, trainer, train_loader, test_loader):
    """Train with the parallel runtime (SIGTERM stops it as Ctrl-C does): data-parallel methods or the
    module-parallel engine, on local worker processes or MPI ranks. Returns the history."""
    from ..train.stopping import raise_on_sigterm

    if args.checkpoint_every:
        print(
            "note: --checkpoint-every applies to in-process runs; with --workers, checkpoints are written at "
            "epoch boundaries, the last point where the workers' modules form one consistent model."
        )
    with raise_on_sigterm():
        return fit_on_engine(args, trainer, train_loader, test_loader)


def fit_on_engine(args, trainer, train_loader, test_loader):
    """Train with the engine the registry keys by (--parallel, --transport)."""
    from ..runtime import WorkerFailed, registry

    engine = registry.find(args.parallel, args.transport)
    if args.transport == "mpi":
        return fit_on_mpi(args, trainer, train_loader, test_loader, engine.fit_function())
    units = len(trainer.pipeline_units()) if args.parallel == "module" else None
    if units and args.workers > units:
        kind = getattr(trainer, "pipeline_unit_name", "module(s)")
        raise CommandError(
            f"--workers {args.workers}: --trainer {args.trainer} on {args.model} has {units} "
            f"{kind}, and each worker runs at least one: use --workers {units} or fewer."
        )
    options = {o: getattr(args, o) for o in engine.options if getattr(args, o, None) is not None}
    try:
        return engine.fit_function()(
            trainer,
            train_loader,
            test_loader,
            args.epochs,
            workers=args.workers,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            bn_recalibrate=args.bn_recalibrate,
            **options,
        )
    except ValueError as err:
        raise CommandError(f"--workers {args.workers}: {err}") from err
    except WorkerFailed as err:
        where = " Resume from the last finished epoch with --resume." if args.checkpoint_dir else ""
        raise CommandError(f"{err}{where}") from err


# --- --transport mpi -----------------------------------------------------------------------------------
MPI_LAUNCH = "mpiexec -n J python -m mpi4py -m tinydgl train --transport mpi ..."
# Set by mpiexec/mpirun (MPICH's Hydra, Open MPI, PMIx, Slurm): a world of size 1 without them is a plain
# `python -m tinydgl`, which MPI starts as a "singleton" rather than an error.
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID")


def prepare_mpi(args):
    """--transport mpi: check the launch, set args.workers to the world size, and silence every rank but 0
    (no prints, no metrics file, no plots; rank 0 also writes the checkpoints)."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        from ..extras import install_command

        raise CommandError(
            f"--transport mpi needs mpi4py and an MPI library: {install_command('mpi')} "
            f"(mpi4py and the mpich wheel), then launch with {MPI_LAUNCH} ({err})."
        ) from err
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    if size == 1 and not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        raise CommandError(
            f"--transport mpi runs one MPI rank per worker, but this is a single process started "
            f"without mpiexec. Launch it as: {MPI_LAUNCH} (J = the number of workers)."
        )
    if args.workers is not None and args.workers != size:
        raise CommandError(
            f"--workers {args.workers} but mpiexec started {size} rank(s): with --transport mpi the "
            f"workers are the ranks; leave --workers out or launch mpiexec -n {args.workers}."
        )
    args.workers = size
    if get_backend().name == "cupy":
        from ..runtime.mpi_engine import choose_rank_gpu

        choice = choose_rank_gpu(comm)  # a collective: every rank picks its GPU, rank 0 says which
        if comm.Get_rank() == 0:
            print(choice)
    if comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")
        args.metrics_json = args.plot = None


def check_outputs_on_rank0(args):
    """`check_output_paths` on rank 0 (the only rank that writes), its verdict broadcast, so that every rank
    stops with the error rather than waiting forever for rank 0."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    problem = None
    if comm.Get_rank() == 0:
        try:
            check_output_paths(args)
        except CommandError as err:
            problem = str(err)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise CommandError(problem)


def fit_on_mpi(args, trainer, train_loader, test_loader, fit_parallel):
    """The parallel runtime over MPI (every rank runs this). A failure on any rank aborts the whole job
    (MPI_Abort), so no rank is left waiting for a message; mpiexec then exits non-zero."""
    import traceback

    from mpi4py import MPI

    from ..train import CheckpointError, TrainingDiverged
    from ..train.stopping import Terminated

    comm = MPI.COMM_WORLD
    try:
        return fit_parallel(
            trainer,
            train_loader,
            test_loader,
            args.epochs,
            comm=comm,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            bn_recalibrate=args.bn_recalibrate,
        )
    except BaseException as err:
        if comm.Get_size() == 1:
            if isinstance(err, ValueError):
                raise CommandError(f"--transport mpi: {err}") from err
            raise
        request_error = isinstance(err, (ValueError, CommandError, CheckpointError))  # the person's to fix
        if isinstance(err, (KeyboardInterrupt, Terminated)):
            detail = "interrupted by SIGTERM" if isinstance(err, Terminated) else "interrupted"
        elif request_error or isinstance(err, TrainingDiverged):
            detail = str(err)
        else:
            detail = traceback.format_exc()
        resumable = args.checkpoint_dir and not request_error
        where = " Resume from the last finished epoch with --resume." if resumable else ""
        print(
            f"tinydgl: error on MPI rank {comm.Get_rank()} of {comm.Get_size()}: {detail}{where}",
            file=sys.stderr,
            flush=True,
        )
        code = 143 if isinstance(err, Terminated) else 1  # mpiexec exits with it where it can
        comm.Abort(code)
        raise SystemExit(code)  # Abort does not always end this process at once (e.g. another rank aborted first)
