"""`tinydgl train`: read the data, build the trainer the options describe, train it in-process or on
workers, and report (the run's first line, its summary, the metrics file and the plots). `compare` builds
on the same pieces.
"""

import os
import platform
import time
import tracemalloc

import numpy as np

from .. import __version__
from ..backend import get_backend
from ..models import build_model
from ..optim import build_optimizer
from ..trainers import TRAINERS, build_trainer
from .checks import (
    DATA_PARALLEL,
    CommandError,
    check_output_paths,
    check_train_options,
    companion_plots,
    keyword_options,
    resolve_parallel,
    select_backend,
    trainer_options,
)
from .parallel import check_outputs_on_rank0, fit_on_workers, prepare_mpi
from .parser import DEFAULT_LR

# A mirrored digit is not the same digit: no horizontal flips for these.
DIGIT_DATASETS = ("mnist", "mnist-small")


def cmd_train(args):
    from ..train import fit
    from ..train.checkpoint import check_unlocked
    from ..train.memory import check_batch_memory

    notes = resolve_parallel(args)
    check_train_options(args)
    select_backend(args)
    if args.transport == "mpi":
        prepare_mpi(args)
        check_outputs_on_rank0(args)
    else:
        check_unlocked(args.checkpoint_dir)  # a folder another run is writing: said before anything else
        check_output_paths(args)
    for note in notes:
        print(f"note: {note}")
    dataset, train_loader, test_loader = load_data(args)
    trainer, lr = make_trainer(args, DATA_PARALLEL.get(args.trainer, args.trainer), dataset)
    trainer.run_info = run_identity(args)
    if args.resume and nothing_left_to_train(args, trainer):
        return 0
    if not args.workers:  # a batch too large for memory: said now, not as a MemoryError mid-epoch
        check_batch_memory(trainer, train_loader, args.batch_size)
    print(
        f"tinydgl {__version__}: {args.trainer} on {args.model} ({trainer.model.num_parameters():,} parameters), "
        f"{dataset.name}: {len(dataset.y_train):,} train / {len(dataset.y_test):,} test images, "
        f"{args.optimizer} lr {lr:g}, batch {args.batch_size}, seed {args.seed}{recalibration_note(args, trainer)}"
    )
    print(f"data read from {dataset.source}")
    plan = greedy_plan(trainer, args.epochs)
    if plan:
        print(plan)
    started = time.perf_counter()
    if args.workers:
        history = fit_on_workers(args, trainer, train_loader, test_loader)
    else:
        history = fit(
            trainer,
            train_loader,
            test_loader,
            args.epochs,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            progress=not args.no_progress,
            bn_recalibrate=args.bn_recalibrate,
            checkpoint_every=args.checkpoint_every,
            stop_on_signals=True,
            lr_schedule=args.lr_schedule,
        )
    summary = run_summary(args, args.trainer, lr, history, trainer.model.num_parameters(), trainer)
    print(
        f"{accuracy_line(summary)} after {summary['epochs']} epoch(s); "
        f"{summary['train_seconds']:.1f}s training, {time.perf_counter() - started:.1f}s in all"
    )
    write_train_outputs(args, summary, history)
    return 0


def nothing_left_to_train(args, trainer):
    """--resume of a run that has already done --epochs epochs: say so (True), so that the command exits 0:
    what was asked for (a run of --epochs epochs) exists, and a script that re-runs the same command after a
    finished run (a re-queued job) succeeds, where a refusal would be an error to retry."""
    done = epochs_done(args, trainer)
    if done < args.epochs:
        return False
    print(
        f"tinydgl: nothing to do: the checkpoint in {args.checkpoint_dir} has already done {done} epoch(s), "
        f"and --epochs {args.epochs} counts the epochs of the whole run, resumed ones included. To train "
        f"more, raise it (e.g. --epochs {done + 1}); nothing was trained or written."
    )
    return True


def epochs_done(args, trainer):
    """How many epochs the checkpoint --resume names has finished; CheckpointError if it is missing, damaged
    or not this run's (the same checks as the resume itself, made before anything else happens)."""
    from ..train import load_checkpoint

    _, meta = load_checkpoint(args.checkpoint_dir, args.resume, trainer=trainer)
    return meta["epoch"]


def write_train_outputs(args, summary, history):
    """--metrics-json and --plot (with --workers, also the workers' timeline beside it)."""
    from ..train import plot_history
    from ..train.outputs import Outputs

    outputs = Outputs()  # a disk that filled up while training: the results go elsewhere, said
    if args.metrics_json:
        outputs.write_json("metrics", args.metrics_json, summary)
    if args.plot:
        outputs.write_file(
            "learning curves",
            args.plot,
            lambda path: plot_history({args.trainer: history}, path, title=f"{args.model} on {args.dataset}"),
        )
        if args.workers:
            from ..runtime.metrics import plot_timeline

            timeline = companion_plots(args)["worker timeline"]
            outputs.write_file(
                "worker timeline",
                timeline,
                lambda path: plot_timeline(
                    [w for h in history for w in h.get("workers", [])],
                    path,
                    title=f"{args.trainer} on {args.model}, {args.workers} workers",
                ),
            )
    outputs.finish()


def load_data(args):
    """The dataset and its train/test loaders, as the options ask."""
    from ..data import DATASETS, DataLoader, load_dataset

    if args.data_dir and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise CommandError(
            f"--data-dir {args.data_dir} is a file; give the folder that holds the {args.dataset} "
            f"files (or leave --data-dir out to use $TINYDGL_DATA or the cache)."
        )
    bundled = DATASETS[args.dataset].read is None
    if args.data_dir and not os.path.exists(args.data_dir):
        # Refused rather than created: the other places searched ($TINYDGL_DATA, the cache) would silently
        # supply the data instead, and a typo in the path would go unnoticed.
        instead = (
            f"{args.dataset} is bundled with tinydgl and reads no folder: leave --data-dir out"
            if bundled
            else f"give the folder that holds the {args.dataset} files (make it first to download into it), or "
            f"leave --data-dir out to use $TINYDGL_DATA or the cache"
        )
        raise CommandError(f"--data-dir {args.data_dir} does not exist; {instead}; nothing was trained.")
    if args.data_dir and bundled:
        print(f"note: {args.dataset} is bundled with tinydgl; --data-dir {args.data_dir} is not read.")
    dataset = load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        progress=not args.no_progress,
    )
    if args.data_dir and not bundled and not _inside(dataset.source, args.data_dir):
        print(f"note: --data-dir {args.data_dir} has no {args.dataset} files; they were found in {dataset.source}.")
    mean, std = input_statistics(args, dataset)
    train_loader = DataLoader(
        dataset.x_train,
        dataset.y_train,
        args.batch_size,
        shuffle=True,
        seed=args.seed,
        augment=args.augment,
        hflip=args.dataset not in DIGIT_DATASETS,
        mean=mean,
        std=std,
    )
    # Evaluate in batches no larger than training ones, so evaluation never sets the peak memory.
    test_loader = DataLoader(
        dataset.x_test, dataset.y_test, min(args.batch_size, 500), shuffle=False, mean=mean, std=std
    )
    return dataset, train_loader, test_loader


def _inside(path, folder):
    """Whether `path` is `folder` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def input_statistics(args, dataset):
    """(mean, std) the loaders normalise with: the dataset's (--normalize dataset), or None, None (raw [0, 1])."""
    if getattr(args, "normalize", "dataset") == "none":
        return None, None
    return dataset.mean, dataset.std


def make_trainer(args, trainer_name, dataset, strict=True):
    channels, size, _ = dataset.input_shape
    shape = {
        k: v
        for k, v in (
            ("hidden", getattr(args, "hidden", None)),
            ("activation", getattr(args, "activation", None)),
            ("batchnorm", getattr(args, "batchnorm", None)),
            ("bias", getattr(args, "bias", None)),
            ("output_batchnorm", getattr(args, "output_batchnorm", None)),
        )
        if v is not None
    }
    if shape and trainer_name == "ff":
        raise CommandError(
            f"--{', --'.join(shape)} shape(s) the mlp, which ff does not train (it builds its own "
            f"network): give its widths with --ff-hidden."
        )
    if shape and args.model != "mlp":
        names, one = "--" + ", --".join(shape), len(shape) == 1
        raise CommandError(
            f"{names} appl{'ies' if one else 'y'} to --model mlp only: add --model mlp, or leave "
            f"{'it' if one else 'them'} out for --model {args.model}."
        )
    try:
        model = build_model(
            args.model, in_channels=channels, image_size=size, num_classes=dataset.num_classes, seed=args.seed, **shape
        )
    except ValueError as err:
        raise CommandError(
            f"model {args.model!r} does not fit {args.dataset} images ({channels}x{size}x{size}): {err}"
        ) from err
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    options = {"weight_decay": args.weight_decay} if args.weight_decay else {}
    if getattr(args, "momentum", None) is not None:
        if args.optimizer not in ("sgd", "nag") and args.momentum:
            raise CommandError(
                f"--momentum applies to --optimizer sgd (adam and the schedule-free optimizers have "
                f"their own averaging; nag is Nesterov's momentum), not {args.optimizer}."
            )
        if args.optimizer == "nag" and not args.momentum:
            raise CommandError("--optimizer nag needs --momentum above 0 (Nesterov momentum; default 0.9).")
        if args.momentum:
            options["momentum"] = args.momentum

    def make_optimizer(params):
        return build_optimizer(args.optimizer, params, lr=lr, **options)

    method_options = trainer_options(args, trainer_name, strict)
    if "input_mean" in keyword_options(TRAINERS[trainer_name]):
        # ff writes labels into pixels: in the units of the images the loader gives (normalised with these)
        mean, std = input_statistics(args, dataset)
        if mean is not None:
            method_options.update(input_mean=float(np.ravel(mean)[0]), input_std=float(np.ravel(std)[0]))
    try:
        return build_trainer(trainer_name, model, make_optimizer, **method_options), lr
    except ValueError as err:
        raise CommandError(f"--trainer {trainer_name}: {err}") from err


# Options that decide the shapes of parameters (or which parameters exist): a checkpoint written with other
# values cannot be resumed (tinydgl.train.checkpoint.check_fits compares them, then every array's shape).
SHAPING_OPTIONS = (
    "aux",
    "modules",
    "boundaries",
    "synthesizer",
    "interfaces",
    "synth_hidden",
    "synth_channels",
    "buffer_codec",
    "waveform",
    "basis_size",
    "hidden",
    "activation",
    "batchnorm",
    "ff_hidden",
    "bias",
    "output_batchnorm",
)


def run_identity(args):
    """What a checkpoint of this run records about it, and what `--resume` must match."""
    return {
        "trainer": args.trainer,
        "model": args.model,
        "dataset": args.dataset,
        "optimizer": args.optimizer,
        "options": {k: getattr(args, k) for k in SHAPING_OPTIONS if getattr(args, k, None) is not None},
        "batch_size": args.batch_size,
        "seed": args.seed,
        "limit_train": args.limit_train,
    }


def greedy_plan(trainer, epochs):
    """greedy trains its modules one after another, `epochs_per_module` each (the last takes any epochs left):
    a line saying which module trains in which epochs, and, when --epochs leaves some modules untrained, what
    that means and how to train them all. None for the other trainers."""
    from ..trainers.dgl import GreedyTrainer

    if not isinstance(trainer, GreedyTrainer):
        return None
    k, per = len(trainer.modules), trainer.epochs_per_module
    spans = [(j * per, epochs if j == k - 1 else min(epochs, (j + 1) * per)) for j in range(k)]
    trained = [(j, a, b) for j, (a, b) in enumerate(spans) if b > a]
    plan = "; ".join(f"module {j + 1}: epoch{f's {a + 1}-{b}' if b - a > 1 else f' {b}'}" for j, a, b in trained)
    left = ", the last one also the epochs left" if epochs > k * per else ""
    line = (
        f"greedy trains its {k} modules one after another, {per} epoch(s) each (--epochs-per-module {per})"
        f"{left}: {plan}."
    )
    if len(trained) == k:
        return line
    first_idle = len(trained) + 1
    idle = f"module {k} keeps its" if first_idle == k else f"modules {first_idle}-{k} keep their"
    other = f", or --epochs-per-module {epochs // k} with --epochs {epochs}" if epochs >= k else ""
    return (
        f"{line} Note: with --epochs {epochs}, {idle} random initial weights, and the test uses module "
        f"{len(trained)}'s auxiliary head. To train {'both' if k == 2 else f'all {k}'} modules, use --epochs "
        f"{k * per}{other}."
    )


def recalibration_note(args, trainer):
    """', BN recalibration on 50 batches' for the run's first line (nothing for models without batch norm)."""
    from ..train.evaluation import has_batchnorm

    if not has_batchnorm(trainer.model):
        return ""
    return f", BN recalibration on {args.bn_recalibrate} batches" if args.bn_recalibrate else ", no BN recalibration"


def best_epoch(history):
    """(best test accuracy, its 1-based epoch) over a history; the earliest epoch on a tie."""
    best = max(history, key=lambda h: (h["test_accuracy"], -h["epoch"]))
    return best["test_accuracy"], best["epoch"]


def accuracy_line(summary):
    """'test accuracy 0.8812 (final, epoch 3; best 0.8850 at epoch 2)': the paper's tables give the best
    epoch, a last-epoch comparison needs the final one (docs/protocol.md, section 3)."""
    final, best, epoch = summary["test_accuracy"], summary["best_test_accuracy"], summary["best_epoch"]
    if summary["epochs"] == 1 or epoch == summary["epochs"]:
        return f"test accuracy {final:.4f} (final = best, epoch {summary['epochs']})"
    return f"test accuracy {final:.4f} (final, epoch {summary['epochs']}; best {best:.4f} at epoch {epoch})"


def run_summary(args, trainer_name, lr, history, num_parameters, trainer=None):
    total_seconds = sum(h["seconds"] for h in history)
    total_samples = sum(h["seconds"] * h["samples_per_second"] for h in history)
    best, best_at = best_epoch(history) if history else (None, None)
    return {
        "trainer": trainer_name,
        "model": args.model,
        "dataset": args.dataset,
        "epochs": len(history),
        "test_accuracy": history[-1]["test_accuracy"] if history else None,
        "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
        "best_test_accuracy": best,
        "best_epoch": best_at,
        "train_seconds": total_seconds,
        # samples every module learned from, per second of training (docs/protocol.md, section 4)
        "samples_per_second": total_samples / total_seconds if total_seconds else None,
        "parameters": num_parameters,
        "config": {
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
            "lr": lr,
            "lr_schedule": getattr(args, "lr_schedule", "constant"),
            "momentum": getattr(args, "momentum", None),
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "augment": args.augment,
            "normalize": getattr(args, "normalize", "dataset"),
            "recipe": getattr(args, "recipe", None),
            "bn_recalibrate": args.bn_recalibrate,
            "limit_train": args.limit_train,
            "limit_test": args.limit_test,
        },
        "environment": {
            "tinydgl": __version__,
            "backend": get_backend().name,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "history": history,
        # per-method counters, e.g. async DGL's steps, empty polls, fresh/replayed/skipped batches per module
        "trainer_stats": trainer.stats() if hasattr(trainer, "stats") else None,
    }


class PeakMemory:
    """Peak memory of a block of work: tracemalloc (which sees NumPy's allocations) on NumPy; the size the
    memory pool grew to on CuPy (the pool keeps freed blocks, so its total is the peak)."""

    def __init__(self, backend_name):
        self.backend_name, self.peak_bytes = backend_name, None

    def __enter__(self):
        if self.backend_name == "cupy":
            import cupy

            self.pool = cupy.get_default_memory_pool()
            self.pool.free_all_blocks()
        else:
            tracemalloc.start()
        return self

    def __exit__(self, *exc):
        if self.backend_name == "cupy":
            self.peak_bytes = int(self.pool.total_bytes())
        else:
            self.peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
