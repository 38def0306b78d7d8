"""The `tinydgl` command: `tinydgl train`, `compare`, `recipes` and `assignments` (`tinydgl --help`).

Errors a person can fix (an unknown name, missing data, a diverging run, an output path that cannot be
written) print one clear message and exit with status 1, before any training where they can be known
before it; argparse's usage errors exit with 2.

One file per job: parser.py (the options), checks.py (what is checked before any work), train.py (data,
trainer, the in-process run, its report), parallel.py (`train --workers`: local processes or MPI ranks),
compare.py; here, `main`, which runs a subcommand and turns the errors above into one line.
"""

import os
import sys

from ..recipes import RECIPES, describe
from .checks import CommandError
from .compare import cmd_compare
from .parser import DEFAULT_LR, apply_recipe, build_parser, parse_command_line
from .train import cmd_train

__all__ = ["main"]


def cmd_assignments(args):
    from ..course import AssignmentError, run_command

    try:
        return run_command(args)
    except AssignmentError as err:
        raise CommandError(str(err)) from err


def default_lr_hint(args):
    """After a divergence with --lr above the optimizer's default: ' The default for --optimizer adam is ...'."""
    default = DEFAULT_LR.get(getattr(args, "optimizer", None))
    lr = getattr(args, "lr", None)
    if lr is None or default is None or lr <= default:
        return ""
    return f" The default for --optimizer {args.optimizer} is {default:g}: leave --lr out to use it."


def main(argv=None):
    from ..data import DataFileError, DatasetNotFoundError, DownloadError
    from ..train import CheckpointError, TrainingDiverged
    from ..train.memory import NotEnoughMemory, out_of_memory_message
    from ..train.outputs import OutputError
    from ..train.stopping import RunStopped, Terminated

    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # each line as it is printed, also into a pipe or a file (block-buffered otherwise: silent for minutes)
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):  # a stream without it (a test's capture, a notebook)
        pass
    parser = build_parser()
    args = parse_command_line(parser, argv)
    try:
        args = apply_recipe(parser, argv, args)
        return {"train": cmd_train, "compare": cmd_compare, "assignments": cmd_assignments, "recipes": cmd_recipes}[
            args.command
        ](args)
    except (
        CommandError,
        DatasetNotFoundError,
        DataFileError,
        DownloadError,
        CheckpointError,
        TrainingDiverged,
        ImportError,
        NotEnoughMemory,
        OutputError,
    ) as err:
        # A diverged run exits 1 too: its weights stopped learning, so its numbers mean nothing (and no metrics or
        # plot are written that would look like a finished run).
        print(
            f"tinydgl: error: {err}{default_lr_hint(args) if isinstance(err, TrainingDiverged) else ''}",
            file=sys.stderr,
        )
        return 1
    except MemoryError as err:  # NumPy's _ArrayMemoryError, CuPy's OutOfMemoryError
        print(f"tinydgl: error: {out_of_memory_message(err, getattr(args, 'batch_size', None))}", file=sys.stderr)
        return 1
    except RunStopped as stopped:
        how = f" To resume:\n  {resume_command(argv)}" if stopped.checkpoint_dir else ""
        print(f"tinydgl: {stopped}.{how}", file=sys.stderr)
        return stopped.exit_code
    except (KeyboardInterrupt, Terminated) as err:
        name, code = ("SIGTERM", 143) if isinstance(err, Terminated) else ("Ctrl-C", 130)
        saved = getattr(args, "checkpoint_dir", None)
        how = (
            f" The last finished epoch's checkpoint in {saved} is intact; to resume:\n  {resume_command(argv)}"
            if saved and os.path.exists(os.path.join(saved, "latest.json"))
            else ""
        )
        workers = "; every worker process was stopped" if getattr(args, "workers", None) else ""
        print(f"tinydgl: interrupted by {name}{workers}.{how}", file=sys.stderr)
        return code


def cmd_recipes(args):
    for name, recipe in RECIPES.items():
        print("\n".join(describe(recipe)))
    print("Run one: tinydgl train --recipe NAME [--trainer T] [--dataset D] [--epochs E] [options that override it]")
    return 0


def resume_command(argv):
    """The command line that resumes a stopped run: the same one, with --resume."""
    import shlex

    kept, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = i + 1 < len(argv) and argv[i + 1] in ("latest", "previous")
            continue
        if arg.startswith("--resume="):
            continue
        kept.append(arg)
    return "tinydgl " + shlex.join([*kept, "--resume"])
