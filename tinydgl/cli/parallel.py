"""`tinydgl train --workers J`: the parallel runs. Locally, worker processes on this machine (the
module-parallel engine, or the data-parallel dp-sync and downpour); with `--engine mpi`, one MPI rank per
worker, where every rank runs the command and rank 0 alone prints and writes.
"""
import os
import sys

from ..backend import get_backend
from .checks import DATA_PARALLEL, CommandError, check_output_paths, parallel_trainers


def fit_on_workers(args, trainer, train_loader, test_loader):
    """Train with the parallel runtime (SIGTERM stops it as Ctrl-C does): data-parallel methods or the
    module-parallel engine, on local worker processes or MPI ranks. Returns the history."""
    from ..train.stopping import raise_on_sigterm

    if args.checkpoint_every:
        print("note: --checkpoint-every applies to in-process runs; with --workers, checkpoints are written at "
              "epoch boundaries, the last point where the workers' modules form one consistent model.")
    with raise_on_sigterm():
        return fit_on_engine(args, trainer, train_loader, test_loader)


def fit_on_engine(args, trainer, train_loader, test_loader):
    """The engine --engine and --trainer name, with its options checked."""
    from ..runtime import WorkerFailed, fit_data_parallel, fit_downpour, fit_module_parallel

    if getattr(args, "engine", "local") == "mpi":
        if args.trainer == "downpour":
            raise CommandError("downpour runs on the local engine (worker processes on one machine); "
                               f"over MPI there are {', '.join(parallel_trainers())} and dp-sync.")
        if args.devices:
            raise CommandError("--devices is for the local engine; with MPI, each rank picks its own GPU.")
        return fit_on_mpi(args, trainer, train_loader, test_loader)
    if args.trainer in DATA_PARALLEL and args.devices:
        raise CommandError(f"--devices applies to the module-parallel engine, not --trainer {args.trainer}.")
    if args.trainer == "downpour":
        fit_parallel, options = fit_downpour, {"n_fetch": args.n_fetch or 1, "n_push": args.n_push or 1}
    elif args.trainer == "dp-sync":
        fit_parallel, options = fit_data_parallel, {}
    else:
        fit_parallel, options = fit_module_parallel, {"devices": args.devices}
        from ..runtime.stages import units

        modules = units(trainer)
        if modules and args.workers > modules:
            kind = "group(s) of blocks between synthesizers" if args.trainer in ("dni", "cdni") else "module(s)"
            raise CommandError(f"--workers {args.workers}: --trainer {args.trainer} on {args.model} has {modules} "
                               f"{kind}, and each worker runs at least one: use --workers {modules} or fewer.")
    try:
        return fit_parallel(trainer, train_loader, test_loader, args.epochs, workers=args.workers,
                            checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                            bn_recalibrate=args.bn_recalibrate, **options)
    except ValueError as err:
        raise CommandError(f"--workers {args.workers}: {err}") from err
    except WorkerFailed as err:
        where = " Resume from the last finished epoch with --resume." if args.checkpoint_dir else ""
        raise CommandError(f"{err}{where}") from err


# --- --engine mpi -----------------------------------------------------------------------------------
MPI_LAUNCH = "mpiexec -n J python -m mpi4py -m tinydgl train --engine mpi ..."
# Set by mpiexec/mpirun (MPICH's Hydra, Open MPI, PMIx, Slurm): a world of size 1 without them is a plain
# `python -m tinydgl`, which MPI starts as a "singleton" rather than an error.
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID")


def prepare_mpi(args):
    """--engine mpi: check the launch, set args.workers to the world size, and silence every rank but 0
    (no prints, no metrics file, no plots; rank 0 also writes the checkpoints)."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        from ..extras import install_command
        raise CommandError(f"--engine mpi needs mpi4py and an MPI library: {install_command('mpi')} "
                           f"(mpi4py and the mpich wheel), then launch with {MPI_LAUNCH} ({err}).") from err
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    if size == 1 and not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        raise CommandError(f"--engine mpi runs one MPI rank per worker, but this is a single process started "
                           f"without mpiexec. Launch it as: {MPI_LAUNCH} (J = the number of workers).")
    if args.workers is not None and args.workers != size:
        raise CommandError(f"--workers {args.workers} but mpiexec started {size} rank(s): with --engine mpi the "
                           f"workers are the ranks; leave --workers out or launch mpiexec -n {args.workers}.")
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


def fit_on_mpi(args, trainer, train_loader, test_loader):
    """The parallel runtime over MPI (every rank runs this). A failure on any rank aborts the whole job
    (MPI_Abort), so no rank is left waiting for a message; mpiexec then exits non-zero."""
    import traceback

    from mpi4py import MPI

    from ..runtime.mpi_engine import fit_data_parallel_mpi, fit_module_parallel_mpi
    from ..train import CheckpointError, TrainingDiverged
    from ..train.stopping import Terminated

    comm = MPI.COMM_WORLD
    fit_parallel = fit_data_parallel_mpi if args.trainer in DATA_PARALLEL else fit_module_parallel_mpi
    try:
        return fit_parallel(trainer, train_loader, test_loader, args.epochs, comm=comm,
                            checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                            bn_recalibrate=args.bn_recalibrate)
    except BaseException as err:
        if comm.Get_size() == 1:
            if isinstance(err, ValueError):
                raise CommandError(f"--engine mpi: {err}") from err
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
        print(f"tinydgl: error on MPI rank {comm.Get_rank()} of {comm.Get_size()}: {detail}{where}", file=sys.stderr,
              flush=True)
        code = 143 if isinstance(err, Terminated) else 1  # mpiexec exits with it where it can
        comm.Abort(code)
        raise SystemExit(code)  # Abort does not always end this process at once (e.g. another rank aborted first)
