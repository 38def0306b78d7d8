"""What the `tinydgl` command checks before it trains, so that a mistake is one clear message up front and
not a traceback after the last epoch: option types with their ranges, which method options each trainer
takes, output paths, the backend, and option combinations. Every check raises `CommandError` (exit 1) or
argparse's `ArgumentTypeError` (a usage error, exit 2); `tinydgl.cli` runs them.
"""

import argparse
import difflib
import inspect
import math
import os

from ..backend import get_backend, set_backend
from ..runtime import registry
from ..trainers import TRAINERS

# Old spellings, still accepted with a one-line note: pseudo-trainers that chose a data-parallel engine, and
# --engine for the transport. Which trainer runs where is the registry's (tinydgl/runtime/registry.py).
OLD_TRAINERS = {"dp-sync": "sync", "downpour": "downpour"}
OLD_ENGINES = {"local": "shm", "mpi": "mpi"}
DATA_PARALLEL = {old: registry.trainers_for(parallel)[0] for old, parallel in OLD_TRAINERS.items()}


class CommandError(Exception):
    """An error in the user's request, reported without a traceback."""


def number(kind, wanted, in_range, range_says):
    """An argparse type for numbers: `kind` (int or float) read from the text; "must be {wanted}, got TEXT" when
    it is none (or not finite), "must be {range_says}, got TEXT" when `in_range` refuses it. argparse prefixes
    the option's name and exits with 2, so a bad value never reaches training."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        if not in_range(value):
            raise argparse.ArgumentTypeError(f"must be {range_says}, got {text}")
        return value

    return parse


positive_int = number(int, "a positive integer", lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, "an integer, 0 or more", lambda v: v >= 0, "0 or more")
positive_float = number(float, "a positive number", lambda v: v > 0, "positive")
non_negative_float = number(float, "a number, 0 or more", lambda v: v >= 0, "0 or more")
# e.g. label smoothing: 1 would spread every label evenly over all classes
fraction = number(float, "a number in [0, 1)", lambda v: 0 <= v < 1, "in [0, 1)")


def trainer_list(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TRAINERS]
    if unknown or not names:
        close = [match for name in unknown for match in difflib.get_close_matches(name, list(TRAINERS), n=1)]
        guess = f"; did you mean {', '.join(close)}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"unknown trainer(s) {', '.join(unknown) or text!r}; choose from: {', '.join(TRAINERS)}{guess}"
        )
    twice = sorted({t for t in names if names.count(t) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} listed twice in {text!r}; name each trainer once")
    return names


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r} (no numbers)")
    return values


def positive_int_list(text):
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


# The method options: each option's name is the keyword argument of the trainers that take it (--bp-lambda:
# bp_lambda=...), and `keyword_options` tells which trainers those are.
METHOD_OPTIONS = (
    "label_smoothing",
    "aux",
    "modules",
    "boundaries",
    "epochs_per_module",
    "waveform",
    "temperature",
    "synthesizer",
    "interfaces",
    "synth_hidden",
    "synth_channels",
    "update_prob",
    "sg_scale",
    "bp_lambda",
    "buffer_size",
    "schedule",
    "slow_module",
    "slowdown",
    "reuse_cap",
    "buffer_codec",
    "warmup",
    "feedback_init",
    "loss",
    "basis_size",
    "predsim_beta",
    "pepita_f_scale",
    "ff_hidden",
    "ff_relu_grad",
    "peer_norm",
    "ff_predict",
    "ff_classifier_lr_scale",
    "ff_classifier_wd_scale",
    "fg_mode",
    "fg_loss",
    "fg_directions",
    "fg_guess",
    "feedback_scale",
    "synth_placement",
    "synth_units",
    "synth_zero_init",
    "module_epoch",
)


def keyword_options(cls):
    """Names of the keyword options a trainer class accepts, following `**options` up to its parents."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return names


def trainer_options(args, trainer_name, strict=True):
    """The method options the user set that trainer `trainer_name` accepts.

    strict=True (train): an option the trainer does not have is an error, so nothing is silently ignored.
    strict=False (compare): each trainer takes the options it has.
    """
    accepted = keyword_options(TRAINERS[trainer_name])
    options, unused = {}, []
    for keyword in METHOD_OPTIONS:
        value = getattr(args, keyword, None)
        if value is None:
            continue
        if keyword in accepted:
            options[keyword] = value
        else:
            unused.append("--" + keyword.replace("_", "-"))
    if "seed" in accepted:
        options["seed"] = args.seed
    if unused and strict:
        raise CommandError(
            f"{', '.join(unused)} do(es) not apply to --trainer {trainer_name}: leave "
            f"{'it' if len(unused) == 1 else 'them'} out, or choose a trainer that has "
            f"{'it' if len(unused) == 1 else 'them'} (tinydgl train --help)."
        )
    return options


def choice(kind, names):
    """An argparse type that accepts one of `names` and otherwise lists them all (and the closest, for a typo).
    The names are kept on the type as `.names`, so that tests can check --help lists them."""

    def parse(text):
        if text not in names:
            close = difflib.get_close_matches(text, names, n=1)
            guess = f"; did you mean {close[0]}?" if close else ""
            raise argparse.ArgumentTypeError(f"unknown {kind} {text!r}; choose one of: {', '.join(names)}{guess}")
        return text

    parse.names = list(names)
    return parse


def check_output_paths(args):
    """Make sure every file and folder the run will write can be written, before training starts: an error
    after the last epoch would lose the whole run. Creates the folders; writes and removes a probe file in
    each. Raises CommandError naming the option, the path and what went wrong."""
    import tempfile

    outputs = [
        ("--metrics-json", args.metrics_json, "file"),
        ("--plot", getattr(args, "plot", None), "file"),
        ("--checkpoint-dir", getattr(args, "checkpoint_dir", None), "folder"),
    ]
    for option, path, kind in outputs:
        if path is None:
            continue
        if not path.strip():
            raise CommandError(
                f"{option} got an empty name; give a {kind} name, or leave {option} out; nothing was trained."
            )
        if kind == "file" and os.path.isdir(path):
            raise CommandError(
                f"{option} {path} is a folder; give a file name (e.g. {os.path.join(path, 'run.json' if option == '--metrics-json' else 'run.png')}); nothing was trained."
            )
        if (
            kind == "folder"
            and not getattr(args, "resume", False)
            and os.path.exists(os.path.join(path, "latest.json"))
        ):
            raise CommandError(
                f"{option} {path} already holds a checkpoint. Add --resume to continue that run, or "
                f"choose another folder; nothing was overwritten."
            )
        folder = path if kind == "folder" else (os.path.dirname(os.path.abspath(path)))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".tinydgl-write-check-")
            os.close(fd)
            os.remove(probe)
        except OSError as err:
            blocker = _file_in_the_way(folder)
            reason = (
                f"{blocker} is a file, not a folder"
                if blocker
                else f"{err.filename}: {err.strerror}"
                if err.filename and err.strerror
                else err.strerror or err
            )
            raise CommandError(
                f"{option} {path}: cannot write there ({reason}). Choose a path in a "
                f"folder you can write to; nothing was trained."
            ) from err
    for what, path in companion_plots(args).items():
        if os.path.isdir(path):
            raise CommandError(
                f"--plot {args.plot} also writes the {what} to {path}, which is a folder: choose "
                f"another --plot name, or move that folder; nothing was trained."
            )
    if (
        args.metrics_json
        and getattr(args, "plot", None)
        and os.path.realpath(args.metrics_json) == os.path.realpath(args.plot)
    ):
        raise CommandError(
            f"--metrics-json and --plot both name {args.plot}: the plot would overwrite the metrics. "
            f"Give them different names (e.g. run.json and run.png); nothing was trained."
        )
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            from ..extras import install_command

            raise CommandError(
                f"--plot needs matplotlib, which is not installed: {install_command('plot')} "
                f"(or leave --plot out); nothing was trained."
            ) from err
        _check_plot_format(args.plot)


def companion_plots(args):
    """The figures written beside --plot, {what: path}: with --workers the workers' timeline (a PNG), with
    compare's --alignment the alignment per block. Named here so that the check and the writer agree."""
    if not getattr(args, "plot", None):
        return {}
    base, extension = os.path.splitext(args.plot)
    plots = {}
    if getattr(args, "workers", None):
        plots["worker timeline"] = base + "-timeline.png"
    if getattr(args, "alignment", False):
        plots["alignment per block"] = base + "-alignment" + extension
    return plots


def _file_in_the_way(folder):
    """The nearest existing ancestor of `folder` (itself included) if it is a file, else None."""
    current = os.path.abspath(folder)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None if os.path.isdir(current) else current


def _check_plot_format(path):
    """Matplotlib picks the image format from --plot's extension; try it on an empty figure now (no LaTeX for
    .pgf, no codec for .avif, a typo like .pgn ...) rather than after the last epoch."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if not extension:
        raise CommandError(
            f"--plot {path} has no extension, which names the image format: end it in .png (or "
            f".pdf, .svg, ...); nothing was trained."
        )
    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.text(0.5, 0.5, "1")  # text, as the real plot has: .pgf only needs LaTeX to measure text
    try:
        figure.savefig(io.BytesIO(), format=extension)
    except Exception as err:  # ValueError for an unknown format; RuntimeError/OSError for a missing tool
        raise CommandError(
            f"--plot {path}: cannot write .{extension} images ({err}). Use .png (or .pdf, .svg); nothing was trained."
        ) from err


def select_backend(args):
    """Switch to --backend, or settle $TINYDGL_BACKEND now, so that a backend that cannot run here (an
    unknown name, CuPy missing, no GPU) is one clear error before any data is read."""
    try:
        set_backend(args.backend) if args.backend else get_backend()
    except ValueError as err:  # $TINYDGL_BACKEND names no backend (BackendUnavailableError is an ImportError)
        raise CommandError(str(err)) from err


def resolve_parallel(args):
    """Read the old spellings (--trainer dp-sync/downpour, --engine, --workers alone) as --parallel and
    --transport; returns their deprecation notes, one line each."""
    notes = []

    def settle(field, value, old, say=""):
        given = getattr(args, field)
        if given not in (None, value):
            raise CommandError(f"{old} means --{field} {value}, but --{field} {given} was given: say only --{field}.")
        setattr(args, field, value)
        notes.append(f"{old} is deprecated: say {say}--{field} {value}.")

    if args.trainer in OLD_TRAINERS:
        settle(
            "parallel",
            OLD_TRAINERS[args.trainer],
            f"--trainer {args.trainer}",
            f"--trainer {DATA_PARALLEL[args.trainer]} ",
        )
    if getattr(args, "engine", None):
        settle("transport", OLD_ENGINES[args.engine], f"--engine {args.engine}")
    if args.parallel is None and (args.workers or args.transport):
        settle("parallel", "module", f"{'--workers' if args.workers else '--transport'} without --parallel")
    if args.parallel and args.transport is None:
        args.transport = "shm"
    return notes


def check_train_options(args):
    """`train`: refuse option combinations that cannot work, before anything is read or written."""
    if args.resume and not args.checkpoint_dir:
        raise CommandError("--resume needs --checkpoint-dir (the directory the first run saved to).")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise CommandError("--checkpoint-every needs --checkpoint-dir (where to write the checkpoints).")
    if args.workers and getattr(args, "module_epoch", None) == "own":
        source = f" (set by --recipe {args.recipe})" if getattr(args, "recipe", None) else ""
        raise CommandError(
            f"--module-epoch own{source} applies to in-process runs; the parallel engines end an epoch "
            f"with the data's: leave --workers out, or add --module-epoch first."
        )
    if args.workers and args.lr_schedule != "constant":
        raise CommandError(
            f"--lr-schedule {args.lr_schedule} applies to in-process runs; the parallel engines train "
            f"at a constant rate (leave --workers out, or the schedule)."
        )
    check_parallel_options(args)


def check_parallel_options(args):
    """`train`: refuse a (--parallel, --transport) pair without an engine, a trainer that does not run
    there, and options the chosen engine does not read, before anything is read or written (all read from
    the registry). With --transport mpi the workers are the ranks, counted later by `prepare_mpi`."""
    engine = None
    if args.parallel:
        try:
            engine = registry.find(args.parallel, args.transport)
        except ValueError as err:
            raise CommandError(str(err)) from err
        trainer = DATA_PARALLEL.get(args.trainer, args.trainer)
        if args.parallel not in registry.supported(trainer):
            raise CommandError(registry.refusal(args.parallel, trainer, TRAINERS[trainer].parallel_note))
        if args.transport == "shm" and not args.workers:
            raise CommandError(f"--parallel {args.parallel} runs on worker processes: say how many with --workers J.")
    for option in dict.fromkeys(o for e in registry.ENGINES.values() for o in e.options):
        if getattr(args, option, None) and (engine is None or option not in engine.options):
            homes = [e for e in registry.ENGINES.values() if option in e.options]
            where = " or ".join(f"--parallel {e.parallel} --transport {e.transport}" for e in homes)
            now = (
                f", not --parallel {engine.parallel} --transport {engine.transport}: leave it out"
                if engine
                else f": add --parallel {homes[0].parallel} --workers J, or leave it out"
            )
            raise CommandError(f"--{option.replace('_', '-')} applies to {where} only{now}.")


def check_compare_options(args):
    """`compare`: a method option that none of --trainers has would be silently ignored; refuse it."""
    for keyword in METHOD_OPTIONS:
        if getattr(args, keyword, None) is None:
            continue
        if not any(keyword in keyword_options(TRAINERS[name]) for name in args.trainers):
            option = "--" + keyword.replace("_", "-")
            have = [n for n in TRAINERS if keyword in keyword_options(TRAINERS[n])]
            raise CommandError(
                f"{option} applies to none of --trainers {','.join(args.trainers)} (it applies to "
                f"{', '.join(have)}): add one of those or leave {option} out."
            )
