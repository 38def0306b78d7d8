"""The `tinydgl` command.

    tinydgl train [--trainer bp] [--model cnn] [--dataset mnist-small] [--epochs 1] [--batch-size 128]
                  [--optimizer adam|adamw|sgd|adamw-sf|sgd-sf] [--lr ...] [--seed 0] [--backend numpy|cupy]
                  [--data-dir DIR] [--limit-train N] [--limit-test N] [--augment/--no-augment]
                  [--bn-recalibrate 50] [--checkpoint-dir DIR] [--checkpoint-every N] [--resume [previous]]
                  [--metrics-json PATH] [--plot PATH]

Errors a person can fix (an unknown name, missing data, a diverging run, an output path that cannot be
written) print one clear message and exit with status 1, before any training where they can be known
before it; argparse's usage errors exit with 2.
"""
import argparse
import difflib
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

from . import __version__
from .course import add_assignments_parser
from .backend import BACKENDS, get_backend
from .models import MODELS, build_model
from .optim import OPTIMIZERS, build_optimizer
from .recipes import RECIPES, TRAINER_DEFAULTS, describe, recipe_defaults
from .trainers import TRAINERS, build_trainer
from .trainers.heads import PREDSIM_BETA
from .trainers.pepita import F_SCALE as PEPITA_F_SCALE
from .cli_checks import (DATA_PARALLEL, METHOD_OPTIONS, OLD_ENGINES, OLD_TRAINERS, CommandError, check_compare_options,
                         check_output_paths, check_parallel_options, choice, fraction, int_list, keyword_options,
                         non_negative_float, non_negative_int, positive_float, positive_int, positive_int_list,
                         resolve_parallel, select_backend, trainer_list, trainer_options)

# A mirrored digit is not the same digit: no horizontal flips for these.
DIGIT_DATASETS = ("mnist", "mnist-small")
# adamw-sf: the LLS paper's rate (every table, batch 128). sgd-sf: the rate that trained tinydgl's models
# without diverging (the official class default, 1.0, is tuned for ImageNet-scale schedules).
DEFAULT_LR = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.05, "nag": 0.05, "adamw-sf": 5e-3, "sgd-sf": 0.5}
# The LLS authors re-estimate batch-norm statistics on 50 training batches before every test
# (docs/protocol.md, section 1); `tinydgl` does the same by default, `fit()` only when asked.
DEFAULT_BN_RECALIBRATE = 50


def add_training_arguments(parser):
    """The options shared by `train` and `compare`."""
    from .data import DATASETS

    parser.add_argument("--model", type=choice("model", list(MODELS)), default="cnn",
                        help=f"one of: {', '.join(MODELS)} (default %(default)s)")
    model = parser.add_argument_group("model options (--model mlp)")
    model.add_argument("--hidden", type=int_list, default=None, metavar="W1,W2,...",
                       help="widths of the hidden layers (default 256,256)")
    model.add_argument("--activation", type=choice("activation", ["relu", "tanh"]), default=None,
                       help="hidden activation: relu (default) or tanh (the DRTP reference code's)")
    model.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                       help="batch norm after each hidden linear layer (default: on)")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                       help="biases in the linear layers (default: on; koz4k's DNI example has none)")
    model.add_argument("--output-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                       help="batch norm on the logits too (default: off; koz4k's DNI example has it)")
    parser.add_argument("--dataset", type=choice("dataset", list(DATASETS)), default="mnist-small",
                        help=f"one of: {', '.join(DATASETS)} (default %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=1,
                        help="epochs in all, resumed ones included (default %(default)s); greedy: see "
                             "--epochs-per-module")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="training batch size (default %(default)s)")
    parser.add_argument("--optimizer", type=choice("optimizer", list(OPTIMIZERS)), default="adam",
                        help=f"one of: {', '.join(OPTIMIZERS)} (default %(default)s; -sf: schedule-free)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    parser.add_argument("--momentum", type=non_negative_float, default=None,
                        help="sgd: momentum (default 0; Forward-Forward's reference recipe uses 0.9); nag: Nesterov "
                             "momentum (default 0.9, the DRTP reference code's)")
    parser.add_argument("--lr-schedule", type=choice("lr schedule", ["constant", "cooldown", "steps"]), default="constant",
                        help="per-epoch learning rate: constant (default), cooldown (Forward-Forward's reference "
                             "schedule as loeweX's src/utils.py computes it, 0-based epoch e: 1 while e <= E // 2, "
                             "then 2 (1 + E - e) / E; E = 5: 1, 1, 1, 1.2, 0.8) or steps (x0.1 after 60%% and again "
                             "after 90%% of the epochs: PEPITA's reference schedule); in-process runs")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                        help="weight decay of every optimizer (default %(default)s): adamw decays the weights "
                             "directly (decoupled), the others add weight_decay * w to the gradient")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seeds the weights, the data order and every random choice of a method "
                             "(default %(default)s)")
    parser.add_argument("--backend", type=choice("backend", [b for b in BACKENDS if b != "array_api_strict"]), default=None,
                        help="numpy or cupy (default: $TINYDGL_BACKEND or numpy)")
    parser.add_argument("--data-dir", default=None, help="where dataset files are (default: $TINYDGL_DATA, the cache)")
    parser.add_argument("--normalize", type=choice("normalization", ["dataset", "none"]), default="dataset",
                        help="dataset (default): (x/255 - mean) / std with the dataset's per-channel statistics; "
                             "none: raw pixels in [0, 1], as the DRTP and Forward-Forward reference codes feed them")
    parser.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                        help="use only the first N training images (stratified; default: all)")
    parser.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                        help="use only the first N test images (stratified; default: all)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                        help="random crop (4-pixel zero padding) and, except for digits, horizontal flip "
                             "(default: off)")
    parser.add_argument("--bn-recalibrate", type=non_negative_int, default=DEFAULT_BN_RECALIBRATE, metavar="N",
                        help="before every test, re-estimate batch-norm statistics at the weights being tested: N "
                             "batches of a fresh pass over the training data in training mode, learning nothing, "
                             "as the LLS authors' code does (default %(default)s; 0: test with the statistics the "
                             "epoch left). Why: running statistics averaged over an epoch lag fast-changing "
                             "blocks, and schedule-free optimizers test other weights than they trained. Cost: N "
                             "forward passes per epoch, about a third of N training steps; models without batch "
                             "norm (cnn) skip it"),
    group = parser.add_argument_group("method options (each applies to the trainers that have it)")
    group.add_argument("--label-smoothing", type=fraction, default=None, help="label smoothing of every cross-entropy loss")
    group.add_argument("--aux", default=None,
                       help="DGL/greedy/async DGL auxiliary head: a classifier, mlp-sr, mlp (default), cnn, linear; or "
                            "Nøkland & Eidnes' local losses: pred, sim, predsim (fg --fg-loss local: linear by default)")
    group.add_argument("--pepita-f-scale", type=positive_float, default=None,
                       help="pepita: scale of the fixed error projection F, U[-sqrt(6/D), sqrt(6/D)] times it (default "
                            f"{PEPITA_F_SCALE}, the official code's)")
    group.add_argument("--predsim-beta", type=fraction, default=None,
                       help=f"--aux predsim: weight beta of the similarity loss, loss = (1 - beta) * pred + beta * sim "
                            f"(default {PREDSIM_BETA}, the reference code's)")
    group.add_argument("--modules", type=positive_int, default=None, help="DGL/greedy: cut the hidden blocks into K modules")
    group.add_argument("--boundaries", type=int_list, default=None, help="DGL/greedy: block indices where modules start, e.g. 2,4")
    group.add_argument("--epochs-per-module", type=positive_int, default=None, help="greedy: epochs spent on each module")
    group.add_argument("--waveform", default=None, help="LLS basis: sin (default), square, cosine, random")
    group.add_argument("--temperature", type=positive_float, default=None, help="LLS temperature T (default 0.5)")
    group.add_argument("--basis-size", type=positive_int, default=None, metavar="R",
                       help="lls-mxm: a basis of R waves and an R x classes matrix M (the official "
                            "LLS-MxM-reduced; R = 20 for SmallConv in the paper)")
    group.add_argument("--synthesizer", default=None,
                       help="DNI synthetic-gradient model: linear (default), mlp, mlp1 (koz4k's: one hidden ReLU "
                            "layer, no batch norm), conv, auto (the paper's: mlp or conv)")
    group.add_argument("--interfaces", type=int_list, default=None, help="DNI: blocks after which a synthesizer sits, e.g. 0,1")
    group.add_argument("--synth-hidden", type=positive_int, default=None, help="DNI: width of MLP synthesizers (1024; mlp1: 256)")
    group.add_argument("--synth-placement", type=choice("synthesizer placement", ["post-activation", "pre-activation"]),
                       default=None, help="DNI: where a synthesizer reads its block: post-activation (default, the block's "
                                          "output) or pre-activation (before the block's last activation, as koz4k's "
                                          "examples/mnist-mlp, on the batch-norm output); the activation then belongs "
                                          "to the group above")
    group.add_argument("--synth-units", type=choice("synthetic-gradient units", ["per-example", "raw"]), default=None,
                       help="DNI: what a synthesizer predicts: per-example (default: B x the gradient of the batch-mean "
                            "loss) or raw (the gradient of the batch-mean loss itself, as koz4k's dni-pytorch)")
    group.add_argument("--synth-zero-init", type=choice("synthesizer zero-init", ["weight+bias", "weight"]), default=None,
                       help="DNI: what is zero-initialised in a synthesizer's last layer: weight+bias (default) or "
                            "weight (koz4k's; the bias keeps its random init)")
    group.add_argument("--synth-channels", type=positive_int, default=None, help="DNI: channels of conv synthesizers (128)")
    group.add_argument("--update-prob", type=float, default=None, help="DNI: probability that a layer updates at a step")
    group.add_argument("--sg-scale", type=positive_float, default=None, help="DNI: scale applied to synthetic gradients")
    group.add_argument("--bp-lambda", type=float, default=None, help="DNI: BP(lambda) mixing of true and synthetic targets")
    group.add_argument("--buffer-size", type=positive_int, default=None, help="async DGL: batches held per replay buffer (M)")
    group.add_argument("--schedule", default=None, help="async DGL: random (default) or round-robin")
    group.add_argument("--slow-module", type=int, default=None, help="async DGL: index of the slowed module, counting from 0")
    group.add_argument("--slowdown", type=positive_float, default=None, help="async DGL: slowdown factor of --slow-module")
    group.add_argument("--reuse-cap", type=positive_int, default=None, help="async DGL: how often a stored batch may be replayed")
    group.add_argument("--buffer-codec", default=None, help="async DGL: vq to store activations as vector-quantised codes")
    group.add_argument("--module-epoch", type=choice("module epoch", ["first", "own"]), default=None,
                       help="async DGL, in-process: first (default: every module stops when module 1's epoch ends) or "
                            "own (each module makes one epoch of updates at its own pace, the finished ones forwarding "
                            "in evaluation mode, as eugenium/DGL's buffer experiment)")
    group.add_argument("--no-warmup", dest="warmup", action="store_false", default=None, help="async DGL: skip the warm-up")
    group.add_argument("--loss", type=choice("loss", ["ce", "bce"]), default=None,
                       help="bp, fa, dfa, sdfa, drtp, shallow: the output loss, ce (softmax cross-entropy, default) or "
                            "bce (sigmoid + binary cross-entropy, the DRTP reference code's)")
    group.add_argument("--feedback-init", type=choice("feedback init", ["kaiming", "lls-dnn"]), default=None,
                       help="fa, dfa, sdfa, drtp: how the fixed random feedback matrices are drawn: kaiming "
                            "(default; U[-sqrt(6/fan_in), sqrt(6/fan_in)], as the DRTP reference code) or lls-dnn "
                            "(1e-4 * U[0, 1), as the official LLS-DNN code's DFA)")
    group.add_argument("--feedback-scale", type=choice("feedback scale", ["mean", "sum"]), default=None,
                       help="dfa, sdfa, drtp: mean (default: hidden signals divided like the loss's gradient, by N, "
                            "or N x classes for dfa with bce, so one --lr serves every method of a comparison) or sum "
                            "(per-sample e @ B, summed over the batch by the weight gradient, as the DRTP reference "
                            "code: what its SGD/NAG rate of 1e-4 needs; the same under Adam)")
    group.add_argument("--ff-hidden", type=positive_int_list, default=None, metavar="W1,W2,...",
                       help="ff: widths of the Forward-Forward network's layers, 2 or more (default 1000,1000,1000, "
                            "the reference's; ff builds this network itself and reads only the input size from "
                            "--model mlp, whose --hidden does not apply)")
    group.add_argument("--ff-relu-grad", type=choice("ff ReLU gradient", ["full", "true"]), default=None,
                       help="ff: full (default, the reference's: ReLU's backward passes the gradient unchanged) or "
                            "true (the ReLU derivative); they differ only in the peer-normalisation term")
    group.add_argument("--peer-norm", type=non_negative_float, default=None,
                       help="ff: weight of the peer-normalisation penalty (default 0.03; 0: off)")
    group.add_argument("--ff-predict", type=choice("ff prediction", ["linear", "goodness"]), default=None,
                       help="ff: what the test accuracy uses: linear (default; the downstream linear classifier on the "
                            "neutral sample) or goodness (the label whose embedding gives the most goodness); the "
                            "metrics JSON's trainer_stats has both")
    group.add_argument("--ff-classifier-lr-scale", type=positive_float, default=None,
                       help="ff: the linear classifier's learning rate is --lr times this (default 10, the reference's "
                            "1e-2 vs 1e-3)")
    group.add_argument("--ff-classifier-wd-scale", type=non_negative_float, default=None,
                       help="ff: the linear classifier's weight decay is --weight-decay times this (default 10, the "
                            "reference's 3e-3 vs 3e-4)")
    group.add_argument("--fg-mode", type=choice("fg mode", ["weight", "activity"]), default=None,
                       help="fg: what the random direction moves: weight (default; every parameter, weight "
                            "perturbation) or activity (each block's output, then a backward through that block "
                            "only; Ren et al. 2023)")
    group.add_argument("--fg-loss", type=choice("fg loss", ["global", "local"]), default=None,
                       help="fg: global (default; the network's loss) or local (DGL's modules, each with an "
                            "--aux head, linear by default, and its own loss)")
    group.add_argument("--fg-guess", type=choice("fg guess", ["random", "local"]), default=None,
                       help="fg: the directions: random (default) or local (each hidden block's guess is the gradient "
                            "of an --aux head's loss, and the global gradient is projected on it; Fournier et al. "
                            "2023; with --fg-mode activity --fg-loss global)")
    group.add_argument("--fg-directions", type=positive_int, default=None, metavar="K",
                       help="fg: random directions averaged per step (default 1); the estimate's variance falls as 1/K")
    parser.add_argument("--metrics-json", default=None, help="write the final metrics and per-epoch history here")
    parser.add_argument("--plot", default=None, help="write a PNG of the learning curves here (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (shown on a terminal with tqdm), nor the line every 10 s shown otherwise")


class CommandParser(argparse.ArgumentParser):
    """argparse, with usage errors a person can act on: a subcommand's error shows one short usage line (its
    full usage lists some 60 options; `--help` explains them), and an unknown option gets "did you mean"."""

    def format_usage(self):
        usage = super().format_usage()
        if usage.count("\n") <= 3:
            return usage
        return f"usage: {self.prog} [options]  ({self.prog} --help lists them)\n"

    def refuse_unknown(self, extras):
        """Exit 2 naming the arguments nothing took, with the closest option for each misspelt one."""
        known = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        unknown = [arg.split("=", 1)[0] for arg in extras if arg.startswith("-")]
        hints = []
        for name in unknown:
            # --limit_train: the option names use hyphens
            close = [name.replace("_", "-")] if name.replace("_", "-") in known else \
                difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{close[0]} (for {name})" if len(unknown) > 1 else close[0])
        hint = f". Did you mean {', '.join(hints)}?" if hints else f". {self.prog} --help lists the options."
        self.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: {' '.join(extras)}{hint}")


def parse_command_line(parser, argv):
    """parse_args, except that an unknown argument is reported by the subcommand that was given it (its short
    usage and a suggestion), rather than by the top-level parser, which knows none of its options."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        leaf = parser
        while True:  # down through the subcommands given: tinydgl train, tinydgl assignments build, ...
            action = next((a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)), None)
            chosen = getattr(args, action.dest, None) if action else None
            if chosen not in getattr(action, "choices", {}):
                break
            leaf = action.choices[chosen]
        if not isinstance(leaf, CommandParser):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        leaf.refuse_unknown(extras)
    return args


def add_parallel_arguments(group):
    """--parallel, --transport, --workers and each engine's options; the choices and help come from the registry."""
    from .runtime import registry

    kinds = "; ".join(f"{p}: {registry.PARALLELISMS.get(p, ('', p))[1]} ({', '.join(registry.trainers_for(p))}; "
                      f"over {' or '.join(registry.transports(p))})" for p in registry.parallelisms())
    group.add_argument("--parallel", type=choice("parallelism", registry.parallelisms()), default=None,
                       help=f"train on workers: {kinds} (default: in-process)")
    group.add_argument("--transport", type=choice("transport", registry.transports()), default=None,
                       help="; ".join(f"{t}: {what}" for t, what in registry.TRANSPORTS.items()
                                      if t in registry.transports()) + " (default shm; mpi needs the mpi extra, and "
                       "--workers, if given, must be J)")
    group.add_argument("--workers", type=positive_int, default=None, metavar="J",
                       help="how many workers --parallel runs on (default: in-process)")
    group.add_argument("--n-fetch", type=positive_int, default=None,
                       help="downpour: a worker fetches the server's weights every N of its steps (default 1)")
    group.add_argument("--n-push", type=positive_int, default=None,
                       help="downpour: a worker pushes its summed gradients every N of its steps (default 1)")
    group.add_argument("--devices", type=int_list, default=None,
                       help="module, with --backend cupy: GPU ids, worker j on the (j mod n)-th (default: all)")
    group.add_argument("--engine", choices=tuple(OLD_ENGINES), default=None,
                       help=f"deprecated: say --transport ({', '.join(f'{o}: {n}' for o, n in OLD_ENGINES.items())})")


def build_parser():
    parser = CommandParser(prog="tinydgl",
                           description="Deep learning without end-to-end backprop, written out in NumPy/CuPy.")
    parser.add_argument("--version", action="version", version=f"tinydgl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one model with one method")
    names = [*TRAINERS, *DATA_PARALLEL]
    train.add_argument("--trainer", type=choice("trainer", names), default="bp",
                       help=f"one of: {', '.join(TRAINERS)} (default %(default)s; {', '.join(DATA_PARALLEL)}: "
                            f"deprecated, say --parallel {' or '.join(OLD_TRAINERS.values())})")
    train.add_argument("--recipe", type=choice("recipe", list(RECIPES)), default=None,
                       help=f"set every option of an authors' setting: {', '.join(RECIPES)} (tinydgl recipes lists "
                            f"them); options given beside it override it. Without a recipe, ff's defaults are the "
                            f"loewex-ff network and data with Adam 2e-4 (what learns in a few epochs): "
                            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in TRAINER_DEFAULTS["ff"].items()))
    parser.train_parser = train  # `apply_recipe` sets the recipe's values as this parser's defaults
    add_training_arguments(train)
    train.add_argument("--checkpoint-dir", default=None,
                       help="save a checkpoint after every epoch here (and every N steps with --checkpoint-every); "
                            "the last two are kept. SIGTERM or Ctrl-C stop the run after its current step with a "
                            "checkpoint (exit 143 / 130; a second Ctrl-C stops at once)")
    train.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                       help="also checkpoint every N training steps, mid-epoch; a run killed at any moment resumes "
                            "from the last one and ends bit-identical to an uninterrupted run. In-process runs "
                            "only: with --workers, checkpoints stay at epoch boundaries, the last point where "
                            "the workers' modules form one consistent model (a stopped parallel run resumes "
                            "from its last finished epoch)")
    train.add_argument("--resume", nargs="?", const="latest", default=None, choices=("latest", "previous"),
                       help="continue from the checkpoint in --checkpoint-dir: the latest (default) or the one "
                            "before it (previous), e.g. when the latest is damaged. The checkpoint must come from "
                            "the same trainer, model, dataset, optimizer and parameter-shaping options")
    add_parallel_arguments(train.add_argument_group("parallel runs"))
    compare = sub.add_parser("compare", help="train several methods on the same model, data and seed; print one table")
    compare.add_argument("--trainers", type=trainer_list, default=["bp", "lls"],
                         help=f"comma-separated, from: {', '.join(TRAINERS)} (default: bp,lls)")
    add_training_arguments(compare)
    compare.add_argument("--alignment", action="store_true",
                         help="measure gradient alignment: every K steps, per block, the cosine between the gradient "
                              "each method hands its optimizer and the true backprop gradient at the same weights and "
                              "batch (costs one extra backprop step each time); in the metrics JSON under each run's "
                              "'alignment', and with --plot a second figure, PLOT-alignment.png")
    compare.add_argument("--alignment-every", type=positive_int, default=10, metavar="K",
                         help="with --alignment: measure every K-th training step (default %(default)s)")
    add_assignments_parser(sub)
    sub.add_parser("recipes", help="list the reference recipes (--recipe NAME): trainers, options, source")
    return parser


def apply_recipe(parser, argv, args):
    """Parse argv again with the recipe's values (--recipe, or the trainer's default recipe) as defaults, so
    that every option given on the command line overrides them. Method options go only to a trainer that
    has them. Returns the new args (args itself when there is no recipe)."""
    if getattr(args, "command", None) != "train":
        return args
    name = args.recipe
    if name is None:
        if args.trainer not in TRAINER_DEFAULTS:
            return args
        parser.train_parser.set_defaults(**TRAINER_DEFAULTS[args.trainer])
        return parser.parse_args(argv)
    recipe = RECIPES[name]
    train = parser.train_parser
    if args.recipe and "--trainer" not in argv and not any(a.startswith("--trainer=") for a in argv):
        train.set_defaults(trainer=recipe.trainers[0])
        args = parser.parse_args(argv)
    trainer = DATA_PARALLEL.get(args.trainer, args.trainer)
    if trainer not in recipe.trainers:
        raise CommandError(f"--recipe {name} is for --trainer {', '.join(recipe.trainers)}, not {args.trainer}.")
    accepted = keyword_options(TRAINERS[trainer])
    train.set_defaults(**recipe_defaults(name, {d for d, k in METHOD_OPTIONS.items() if k in accepted}))
    args = parser.parse_args(argv)
    args.recipe = name
    return args


def cmd_recipes(args):
    for name, recipe in RECIPES.items():
        print("\n".join(describe(recipe)))
    print("Run one: tinydgl train --recipe NAME [--trainer T] [--dataset D] [--epochs E] [options that override it]")
    return 0


def load_data(args):
    """The dataset and its train/test loaders, as the options ask."""
    from .data import DATASETS, DataLoader, load_dataset

    if args.data_dir and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise CommandError(f"--data-dir {args.data_dir} is a file; give the folder that holds the {args.dataset} "
                           f"files (or leave --data-dir out to use $TINYDGL_DATA or the cache).")
    bundled = DATASETS[args.dataset].read is None
    if args.data_dir and not os.path.exists(args.data_dir):
        # Refused rather than created: the other places searched ($TINYDGL_DATA, the cache) would silently
        # supply the data instead, and a typo in the path would go unnoticed.
        instead = (f"{args.dataset} is bundled with tinydgl and reads no folder: leave --data-dir out" if bundled else
                   f"give the folder that holds the {args.dataset} files (make it first to download into it), or "
                   f"leave --data-dir out to use $TINYDGL_DATA or the cache")
        raise CommandError(f"--data-dir {args.data_dir} does not exist; {instead}; nothing was trained.")
    if args.data_dir and bundled:
        print(f"note: {args.dataset} is bundled with tinydgl; --data-dir {args.data_dir} is not read.")
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test,
                           progress=not args.no_progress)
    if args.data_dir and not bundled and not _inside(dataset.source, args.data_dir):
        print(f"note: --data-dir {args.data_dir} has no {args.dataset} files; they were found in {dataset.source}.")
    mean, std = input_statistics(args, dataset)
    train_loader = DataLoader(dataset.x_train, dataset.y_train, args.batch_size, shuffle=True, seed=args.seed,
                              augment=args.augment, hflip=args.dataset not in DIGIT_DATASETS, mean=mean, std=std)
    # Evaluate in batches no larger than training ones, so evaluation never sets the peak memory.
    test_loader = DataLoader(dataset.x_test, dataset.y_test, min(args.batch_size, 500), shuffle=False, mean=mean, std=std)
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
    shape = {k: v for k, v in (("hidden", getattr(args, "hidden", None)), ("activation", getattr(args, "activation", None)),
                               ("batchnorm", getattr(args, "batchnorm", None)), ("bias", getattr(args, "bias", None)),
                               ("output_batchnorm", getattr(args, "output_batchnorm", None))) if v is not None}
    if shape and trainer_name == "ff":
        raise CommandError(f"--{', --'.join(shape)} shape(s) the mlp, which ff does not train (it builds its own "
                           f"network): give its widths with --ff-hidden.")
    if shape and args.model != "mlp":
        names, one = "--" + ", --".join(shape), len(shape) == 1
        raise CommandError(f"{names} appl{'ies' if one else 'y'} to --model mlp only: add --model mlp, or leave "
                           f"{'it' if one else 'them'} out for --model {args.model}.")
    try:
        model = build_model(args.model, in_channels=channels, image_size=size, num_classes=dataset.num_classes,
                            seed=args.seed, **shape)
    except ValueError as err:
        raise CommandError(f"model {args.model!r} does not fit {args.dataset} images ({channels}x{size}x{size}): {err}") from err
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    options = {"weight_decay": args.weight_decay} if args.weight_decay else {}
    if getattr(args, "momentum", None) is not None:
        if args.optimizer not in ("sgd", "nag") and args.momentum:
            raise CommandError(f"--momentum applies to --optimizer sgd (adam and the schedule-free optimizers have "
                               f"their own averaging; nag is Nesterov's momentum), not {args.optimizer}.")
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
SHAPING_OPTIONS = ("aux", "modules", "boundaries", "synthesizer", "interfaces", "synth_hidden", "synth_channels",
                   "buffer_codec", "waveform", "basis_size", "hidden", "activation", "batchnorm", "ff_hidden", "bias",
                   "output_batchnorm")


def run_identity(args):
    """What a checkpoint of this run records about it, and what `--resume` must match."""
    return {"trainer": args.trainer, "model": args.model, "dataset": args.dataset, "optimizer": args.optimizer,
            "options": {k: getattr(args, k) for k in SHAPING_OPTIONS if getattr(args, k, None) is not None},
            "batch_size": args.batch_size, "seed": args.seed, "limit_train": args.limit_train}


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


def greedy_plan(trainer, epochs):
    """greedy trains its modules one after another, `epochs_per_module` each (the last takes any epochs left):
    a line saying which module trains in which epochs, and, when --epochs leaves some modules untrained, what
    that means and how to train them all. None for the other trainers."""
    from .trainers.dgl import GreedyTrainer

    if not isinstance(trainer, GreedyTrainer):
        return None
    k, per = len(trainer.modules), trainer.epochs_per_module
    spans = [(j * per, epochs if j == k - 1 else min(epochs, (j + 1) * per)) for j in range(k)]
    trained = [(j, a, b) for j, (a, b) in enumerate(spans) if b > a]
    plan = "; ".join(f"module {j + 1}: epoch{f's {a + 1}-{b}' if b - a > 1 else f' {b}'}" for j, a, b in trained)
    left = ", the last one also the epochs left" if epochs > k * per else ""
    line = (f"greedy trains its {k} modules one after another, {per} epoch(s) each (--epochs-per-module {per})"
            f"{left}: {plan}.")
    if len(trained) == k:
        return line
    first_idle = len(trained) + 1
    idle = f"module {k} keeps its" if first_idle == k else f"modules {first_idle}-{k} keep their"
    other = f", or --epochs-per-module {epochs // k} with --epochs {epochs}" if epochs >= k else ""
    return (f"{line} Note: with --epochs {epochs}, {idle} random initial weights, and the test uses module "
            f"{len(trained)}'s auxiliary head. To train {'both' if k == 2 else f'all {k}'} modules, use --epochs "
            f"{k * per}{other}.")


def recalibration_note(args, trainer):
    """', BN recalibration on 50 batches' for the run's first line (nothing for models without batch norm)."""
    from .train.evaluation import has_batchnorm

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
        "config": {"batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr,
                   "lr_schedule": getattr(args, "lr_schedule", "constant"), "momentum": getattr(args, "momentum", None),
                   "weight_decay": args.weight_decay, "seed": args.seed, "augment": args.augment,
                   "normalize": getattr(args, "normalize", "dataset"), "recipe": getattr(args, "recipe", None),
                   "bn_recalibrate": args.bn_recalibrate, "limit_train": args.limit_train,
                   "limit_test": args.limit_test},
        "environment": {"tinydgl": __version__, "backend": get_backend().name,
                        "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count()},
        "history": history,
        # per-method counters, e.g. async DGL's steps, empty polls, fresh/replayed/skipped batches per module
        "trainer_stats": trainer.stats() if hasattr(trainer, "stats") else None,
    }


def cmd_train(args):
    from .train import fit, plot_history
    from .train.checkpoint import check_unlocked
    from .train.memory import check_batch_memory
    from .train.outputs import Outputs

    if args.resume and not args.checkpoint_dir:
        raise CommandError("--resume needs --checkpoint-dir (the directory the first run saved to).")
    notes = resolve_parallel(args)
    if args.workers and getattr(args, "module_epoch", None) == "own":
        source = f" (set by --recipe {args.recipe})" if getattr(args, "recipe", None) else ""
        raise CommandError(f"--module-epoch own{source} applies to in-process runs; the parallel engines end an epoch "
                           f"with the data's: leave --workers out, or add --module-epoch first.")
    if args.workers and args.lr_schedule != "constant":
        raise CommandError(f"--lr-schedule {args.lr_schedule} applies to in-process runs; the parallel engines train "
                           f"at a constant rate (leave --workers out, or the schedule).")
    check_parallel_options(args)
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
    if args.checkpoint_every and not args.checkpoint_dir:
        raise CommandError("--checkpoint-every needs --checkpoint-dir (where to write the checkpoints).")
    trainer, lr = make_trainer(args, DATA_PARALLEL.get(args.trainer, args.trainer), dataset)
    trainer.run_info = run_identity(args)
    if args.resume:
        done = epochs_done(args, trainer)
        if done >= args.epochs:
            # Exit 0: what was asked for (a run of --epochs epochs) exists, so a script that re-runs the same
            # command after a finished run (a re-queued job) succeeds; a refusal would be an error to retry.
            print(f"tinydgl: nothing to do: the checkpoint in {args.checkpoint_dir} has already done {done} epoch(s), "
                  f"and --epochs {args.epochs} counts the epochs of the whole run, resumed ones included. To train "
                  f"more, raise it (e.g. --epochs {done + 1}); nothing was trained or written.")
            return 0
    if not args.workers:  # a batch too large for memory: said now, not as a MemoryError mid-epoch
        check_batch_memory(trainer, train_loader, args.batch_size)
    print(f"tinydgl {__version__}: {args.trainer} on {args.model} ({trainer.model.num_parameters():,} parameters), "
          f"{dataset.name}: {len(dataset.y_train):,} train / {len(dataset.y_test):,} test images, "
          f"{args.optimizer} lr {lr:g}, batch {args.batch_size}, seed {args.seed}{recalibration_note(args, trainer)}")
    print(f"data read from {dataset.source}")
    plan = greedy_plan(trainer, args.epochs)
    if plan:
        print(plan)
    started = time.perf_counter()
    if args.workers:
        if args.checkpoint_every:
            print("note: --checkpoint-every applies to in-process runs; with --workers, checkpoints are written at "
                  "epoch boundaries, the last point where the workers' modules form one consistent model.")
        from .train.stopping import raise_on_sigterm

        with raise_on_sigterm():
            history = fit_on_workers(args, trainer, train_loader, test_loader)
    else:
        history = fit(trainer, train_loader, test_loader, args.epochs, checkpoint_dir=args.checkpoint_dir,
                      resume=args.resume, progress=not args.no_progress, bn_recalibrate=args.bn_recalibrate,
                      checkpoint_every=args.checkpoint_every, stop_on_signals=True, lr_schedule=args.lr_schedule)
    summary = run_summary(args, args.trainer, lr, history, trainer.model.num_parameters(), trainer)
    print(f"{accuracy_line(summary)} after {summary['epochs']} epoch(s); "
          f"{summary['train_seconds']:.1f}s training, {time.perf_counter() - started:.1f}s in all")
    outputs = Outputs()  # a disk that filled up while training: the results go elsewhere, said
    if args.metrics_json:
        outputs.write_json("metrics", args.metrics_json, summary)
    if args.plot:
        outputs.write_file("learning curves", args.plot, lambda path: plot_history(
            {args.trainer: history}, path, title=f"{args.model} on {args.dataset}"))
        if args.workers:
            from .runtime.metrics import plot_timeline

            timeline = os.path.splitext(args.plot)[0] + "-timeline.png"
            outputs.write_file("worker timeline", timeline, lambda path: plot_timeline(
                [w for h in history for w in h.get("workers", [])], path,
                title=f"{args.trainer} on {args.model}, {args.workers} workers"))
    outputs.finish()
    return 0


def epochs_done(args, trainer):
    """How many epochs the checkpoint --resume names has finished; CheckpointError if it is missing, damaged
    or not this run's (the same checks as the resume itself, made before anything else happens)."""
    from .train import load_checkpoint

    _, meta = load_checkpoint(args.checkpoint_dir, args.resume, trainer=trainer)
    return meta["epoch"]


def fit_on_workers(args, trainer, train_loader, test_loader):
    """Train with the engine the registry keys by (--parallel, --transport)."""
    from .runtime import WorkerFailed, registry

    engine = registry.find(args.parallel, args.transport)
    if args.transport == "mpi":
        return fit_on_mpi(args, trainer, train_loader, test_loader, engine.fit_function())
    units = len(trainer.pipeline_units()) if args.parallel == "module" else None
    if units and args.workers > units:
        kind = getattr(trainer, "pipeline_unit_name", "module(s)")
        raise CommandError(f"--workers {args.workers}: --trainer {args.trainer} on {args.model} has {units} "
                           f"{kind}, and each worker runs at least one: use --workers {units} or fewer.")
    options = {o: getattr(args, o) for o in engine.options if getattr(args, o, None) is not None}
    try:
        return engine.fit_function()(trainer, train_loader, test_loader, args.epochs, workers=args.workers,
                                     checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                                     bn_recalibrate=args.bn_recalibrate, **options)
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
        from .extras import install_command
        raise CommandError(f"--transport mpi needs mpi4py and an MPI library: {install_command('mpi')} "
                           f"(mpi4py and the mpich wheel), then launch with {MPI_LAUNCH} ({err}).") from err
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    if size == 1 and not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        raise CommandError(f"--transport mpi runs one MPI rank per worker, but this is a single process started "
                           f"without mpiexec. Launch it as: {MPI_LAUNCH} (J = the number of workers).")
    if args.workers is not None and args.workers != size:
        raise CommandError(f"--workers {args.workers} but mpiexec started {size} rank(s): with --transport mpi the "
                           f"workers are the ranks; leave --workers out or launch mpiexec -n {args.workers}.")
    args.workers = size
    if get_backend().name == "cupy":
        from .runtime.mpi_engine import choose_rank_gpu

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

    from .train import CheckpointError, TrainingDiverged
    from .train.stopping import Terminated

    comm = MPI.COMM_WORLD
    try:
        return fit_parallel(trainer, train_loader, test_loader, args.epochs, comm=comm,
                            checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                            bn_recalibrate=args.bn_recalibrate)
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
        print(f"tinydgl: error on MPI rank {comm.Get_rank()} of {comm.Get_size()}: {detail}{where}", file=sys.stderr,
              flush=True)
        code = 143 if isinstance(err, Terminated) else 1  # mpiexec exits with it where it can
        comm.Abort(code)
        raise SystemExit(code)  # Abort does not always end this process at once (e.g. another rank aborted first)


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


def cmd_compare(args):
    from .train import fit, plot_history
    from .train.memory import check_batch_memory
    from .train.outputs import Outputs

    check_compare_options(args)
    select_backend(args)
    check_output_paths(args)
    dataset, train_loader, test_loader = load_data(args)
    print(f"tinydgl compare on {args.model}, {dataset.name}: {len(dataset.y_train):,} train / {len(dataset.y_test):,} test "
          f"images, {args.epochs} epoch(s), batch {args.batch_size}, {args.optimizer}, seed {args.seed}, "
          f"BN recalibration on {args.bn_recalibrate} batches (models with batch norm)")
    print(f"data read from {dataset.source}")
    from .train.compute import step_macs

    first_batch = next(iter(train_loader.fresh_pass(0, 1)))
    for name in args.trainers:  # a batch too large for memory: said before any method trains
        check_batch_memory(make_trainer(args, name, dataset, strict=False)[0], train_loader, args.batch_size)
    runs, rows = [], []
    for name in args.trainers:
        trainer, lr = make_trainer(args, name, dataset, strict=False)
        print(f"--- {name} ---")
        plan = greedy_plan(trainer, args.epochs)
        if plan:
            print(plan)
        macs = step_macs(trainer, *first_batch)  # before training, on a copy: counting changes nothing
        probe = alignment_probe(args, trainer)
        with PeakMemory(get_backend().name) as memory:
            history = fit(trainer, train_loader, test_loader, args.epochs, progress=not args.no_progress,
                          bn_recalibrate=args.bn_recalibrate, alignment=probe, lr_schedule=args.lr_schedule)
        summary = run_summary(args, name, lr, history, trainer.model.num_parameters(), trainer)
        summary["peak_memory_bytes"] = memory.peak_bytes
        summary["macs_per_sample"] = macs
        if args.alignment:
            summary["alignment"] = probe.summary() if probe else None
        runs.append(summary)
        rows.append((name, summary["test_accuracy"], f"{summary['best_test_accuracy']:.4f} ({summary['best_epoch']})",
                     summary["train_seconds"] / len(history), summary["samples_per_second"], memory.peak_bytes / 2**20,
                     macs["total"] / 1e6, macs["signal"] / 1e6))
    header = (f"{'trainer':<12} {'final acc':>9} {'best (epoch)':>13} {'s/epoch':>9} {'samples/s':>10} "
              f"{'peak MiB':>9} {'MMAC/sample':>12} {'of it signal':>13}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, acc, best, sec, sps, mib, mmacs, signal in rows:
        print(f"{name:<12} {acc:>9.4f} {best:>13} {sec:>9.2f} {sps:>10.0f} {mib:>9.1f} {mmacs:>12.2f} {signal:>13.2f}")
    print("MMAC/sample: multiply-accumulates of one training step per sample, counted from layer shapes (forward, "
          "learning signal, weight gradients; tinydgl/train/compute.py); 'of it signal': what the method spends to "
          "get its gradients beyond the forward pass and the weight gradients.")
    if args.alignment:
        print_alignment(runs)
    outputs = Outputs()  # a disk that filled up while training: the results go elsewhere, said
    if args.metrics_json:
        outputs.write_json("metrics", args.metrics_json,
                           {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "runs": runs})
    if args.plot:
        outputs.write_file("learning curves", args.plot, lambda path: plot_history(
            {r["trainer"]: r["history"] for r in runs}, path, title=f"{args.model} on {args.dataset}"))
        measured = {r["trainer"]: r["alignment"] for r in runs if r.get("alignment")}
        if measured:
            from .train.alignment import plot_alignment

            path = os.path.splitext(args.plot)[0] + "-alignment" + os.path.splitext(args.plot)[1]
            outputs.write_file("alignment per block", path, lambda path: plot_alignment(
                measured, path, title=f"gradient alignment with backprop, {args.model} on {args.dataset}"))
    outputs.finish()
    return 0


def alignment_probe(args, trainer):
    """compare --alignment: a probe for this trainer, or None (not asked for, or undefined for it: said)."""
    if not args.alignment:
        return None
    from .train.alignment import AlignmentProbe

    probe = AlignmentProbe(args.alignment_every)
    try:
        probe.check(trainer)
    except ValueError as err:
        print(f"note: {err}")
        return None
    return probe


def print_alignment(runs):
    """Per method and block, the mean alignment over the last three records (blank: no gradient there)."""
    blocks = max((len(r["alignment"]["blocks"]) for r in runs if r.get("alignment")), default=0)
    if not blocks:
        return
    header = f"{'alignment':<10} " + " ".join(f"{'block ' + str(b):>8}" for b in range(blocks))
    print("\n" + header + "  (cosine with the backprop gradient, mean of the last 3 records; the times above "
          "include the probe)\n" + "-" * len(header))
    for r in runs:
        if not r.get("alignment"):
            print(f"{r['trainer']:<10} {'(not measured)':>17}")
            continue
        cells = []
        for values in r["alignment"]["blocks"]:
            last = [v for v in values[-3:] if v is not None]
            cells.append(f"{sum(last) / len(last):>8.3f}" if last else f"{'':>8}")
        print(f"{r['trainer']:<10} " + " ".join(cells))


def cmd_assignments(args):
    from .course import AssignmentError, run_command

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
    from .data import DataFileError, DatasetNotFoundError, DownloadError
    from .train import CheckpointError, TrainingDiverged
    from .train.memory import NotEnoughMemory, out_of_memory_message
    from .train.outputs import OutputError
    from .train.stopping import RunStopped, Terminated

    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # each line as it is printed, also into a pipe or a file (block-buffered otherwise: silent for minutes)
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):  # a stream without it (a test's capture, a notebook)
        pass
    parser = build_parser()
    args = parse_command_line(parser, argv)
    try:
        args = apply_recipe(parser, argv, args)
        return {"train": cmd_train, "compare": cmd_compare, "assignments": cmd_assignments,
                "recipes": cmd_recipes}[args.command](args)
    except (CommandError, DatasetNotFoundError, DataFileError, DownloadError, CheckpointError, TrainingDiverged,
            ImportError, NotEnoughMemory, OutputError) as err:
        # A diverged run exits 1 too: its weights stopped learning, so its numbers mean nothing (and no metrics or
        # plot are written that would look like a finished run).
        print(f"tinydgl: error: {err}{default_lr_hint(args) if isinstance(err, TrainingDiverged) else ''}",
              file=sys.stderr)
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
        how = (f" The last finished epoch's checkpoint in {saved} is intact; to resume:\n  {resume_command(argv)}"
               if saved and os.path.exists(os.path.join(saved, "latest.json")) else "")
        workers = "; every worker process was stopped" if getattr(args, "workers", None) else ""
        print(f"tinydgl: interrupted by {name}{workers}.{how}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
