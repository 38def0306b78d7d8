"""The `tinydgl` command.

    tinydgl train [--trainer bp] [--model cnn] [--dataset mnist-small] [--epochs 1] [--batch-size 128]
                  [--optimizer adam|adamw|sgd] [--lr ...] [--seed 0] [--backend numpy|cupy]
                  [--data-dir DIR] [--limit-train N] [--limit-test N] [--augment/--no-augment]
                  [--checkpoint-dir DIR] [--resume] [--metrics-json PATH] [--plot PATH]

Errors a person can fix (an unknown name, missing data, a diverging run) print one clear message and exit
with status 1; argparse's usage errors exit with 2.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from . import __version__
from .backend import BACKENDS, set_backend
from .models import MODELS, build_model
from .optim import OPTIMIZERS, build_optimizer
from .trainers import TRAINERS, build_trainer

# A mirrored digit is not the same digit: no horizontal flips for these.
DIGIT_DATASETS = ("mnist", "mnist-small")
DEFAULT_LR = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.05}


class CommandError(Exception):
    """An error in the user's request, reported without a traceback."""


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _choice(kind, names):
    """An argparse type that accepts one of `names` and otherwise lists them all."""

    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown {kind} {text!r}; choose one of: {', '.join(names)}")
        return text

    return parse


def add_training_arguments(parser):
    """The options shared by `train` and `compare`."""
    from .data import DATASETS

    parser.add_argument("--model", type=_choice("model", list(MODELS)), default="cnn", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("--dataset", type=_choice("dataset", list(DATASETS)), default="mnist-small",
                        help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--epochs", type=_positive_int, default=1)
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument("--optimizer", type=_choice("optimizer", list(OPTIMIZERS)), default="adam")
    parser.add_argument("--lr", type=_positive_float, default=None,
                        help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", type=_choice("backend", [b for b in BACKENDS if b != "array_api_strict"]), default=None,
                        help="numpy or cupy (default: $TINYDGL_BACKEND or numpy)")
    parser.add_argument("--data-dir", default=None, help="where dataset files are (default: $TINYDGL_DATA, the cache)")
    parser.add_argument("--limit-train", type=_positive_int, default=None, help="use only the first N training images (stratified)")
    parser.add_argument("--limit-test", type=_positive_int, default=None, help="use only the first N test images (stratified)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                        help="random crop (4-pixel zero padding) and, except for digits, horizontal flip")
    parser.add_argument("--metrics-json", default=None, help="write the final metrics and per-epoch history here")
    parser.add_argument("--plot", default=None, help="write a PNG of the learning curves here (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(prog="tinydgl", description="Deep learning without end-to-end backprop, written out in NumPy/CuPy.")
    parser.add_argument("--version", action="version", version=f"tinydgl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one model with one method")
    train.add_argument("--trainer", type=_choice("trainer", list(TRAINERS)), default="bp", help=f"one of: {', '.join(TRAINERS)}")
    add_training_arguments(train)
    train.add_argument("--checkpoint-dir", default=None, help="save a checkpoint after every epoch here")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    return parser


def load_data(args):
    """The dataset and its train/test loaders, as the options ask."""
    from .data import DataLoader, load_dataset

    dataset = load_dataset(args.dataset, data_dir=args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test,
                           progress=not args.no_progress)
    train_loader = DataLoader(dataset.x_train, dataset.y_train, args.batch_size, shuffle=True, seed=args.seed,
                              augment=args.augment, hflip=args.dataset not in DIGIT_DATASETS, mean=dataset.mean, std=dataset.std)
    test_loader = DataLoader(dataset.x_test, dataset.y_test, 500, shuffle=False, mean=dataset.mean, std=dataset.std)
    return dataset, train_loader, test_loader


def make_trainer(args, trainer_name, dataset):
    channels, size, _ = dataset.input_shape
    try:
        model = build_model(args.model, in_channels=channels, image_size=size, num_classes=dataset.num_classes, seed=args.seed)
    except ValueError as err:
        raise CommandError(f"model {args.model!r} does not fit {args.dataset} images ({channels}x{size}x{size}): {err}") from err
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    options = {"weight_decay": args.weight_decay} if args.weight_decay else {}

    def make_optimizer(params):
        return build_optimizer(args.optimizer, params, lr=lr, **options)

    return build_trainer(trainer_name, model, make_optimizer), lr


def run_summary(args, trainer_name, lr, history, num_parameters):
    total_seconds = sum(h["seconds"] for h in history)
    total_samples = sum(h["seconds"] * h["samples_per_second"] for h in history)
    return {
        "trainer": trainer_name,
        "model": args.model,
        "dataset": args.dataset,
        "epochs": len(history),
        "test_accuracy": history[-1]["test_accuracy"] if history else None,
        "train_seconds": total_seconds,
        "samples_per_second": total_samples / total_seconds if total_seconds else None,
        "parameters": num_parameters,
        "config": {"batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr, "seed": args.seed,
                   "augment": args.augment, "limit_train": args.limit_train, "limit_test": args.limit_test},
        "environment": {"tinydgl": __version__, "backend": os.environ.get("TINYDGL_BACKEND", args.backend or "numpy"),
                        "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count()},
        "history": history,
    }


def write_json(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def cmd_train(args):
    from .train import fit, plot_history

    if args.resume and not args.checkpoint_dir:
        raise CommandError("--resume needs --checkpoint-dir (the directory the first run saved to).")
    if args.backend:
        set_backend(args.backend)
    dataset, train_loader, test_loader = load_data(args)
    trainer, lr = make_trainer(args, args.trainer, dataset)
    print(f"tinydgl {__version__}: {args.trainer} on {args.model} ({trainer.model.num_parameters():,} parameters), "
          f"{dataset.name}: {len(dataset.y_train):,} train / {len(dataset.y_test):,} test images, "
          f"{args.optimizer} lr {lr:g}, batch {args.batch_size}, seed {args.seed}")
    started = time.perf_counter()
    history = fit(trainer, train_loader, test_loader, args.epochs, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                  progress=not args.no_progress)
    summary = run_summary(args, args.trainer, lr, history, trainer.model.num_parameters())
    print(f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epoch(s); "
          f"{summary['train_seconds']:.1f}s training, {time.perf_counter() - started:.1f}s in all")
    if args.metrics_json:
        write_json(args.metrics_json, summary)
        print(f"metrics written to {args.metrics_json}")
    if args.plot:
        plot_history({args.trainer: history}, args.plot, title=f"{args.model} on {args.dataset}")
        print(f"learning curves written to {args.plot}")
    return 0


def main(argv=None):
    from .data import DataFileError, DatasetNotFoundError, DownloadError
    from .train import CheckpointError, TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train}[args.command](args)
    except (CommandError, DatasetNotFoundError, DataFileError, DownloadError, CheckpointError, TrainingDiverged, ImportError) as err:
        print(f"tinydgl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinydgl: interrupted; the last finished epoch's checkpoint (if any) is intact.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
