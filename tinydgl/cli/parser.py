"""The `tinydgl` command line: the parser of every subcommand and its options, short usage errors with a
"did you mean", and the reference recipes applied as defaults that the command line overrides.

The options of `train` and `compare` are added family by family (model, run, data, then one function per
method family), in the order `--help` lists them.
"""

import argparse
import difflib

from .. import __version__
from ..course import add_assignments_parser
from ..backend import BACKENDS
from ..models import MODELS
from ..optim import OPTIMIZERS
from ..recipes import RECIPES, TRAINER_DEFAULTS, recipe_defaults
from ..trainers import TRAINERS
from ..trainers.heads import PREDSIM_BETA
from ..trainers.pepita import F_SCALE as PEPITA_F_SCALE
from .checks import (
    DATA_PARALLEL,
    METHOD_OPTIONS,
    OLD_ENGINES,
    OLD_TRAINERS,
    CommandError,
    choice,
    fraction,
    int_list,
    keyword_options,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
    trainer_list,
)

# adamw-sf: the LLS paper's rate (every table, batch 128). sgd-sf: the rate that trained tinydgl's models
# without diverging (the official class default, 1.0, is tuned for ImageNet-scale schedules).
DEFAULT_LR = {"adam": 2e-3, "adamw": 2e-3, "sgd": 0.05, "nag": 0.05, "adamw-sf": 5e-3, "sgd-sf": 0.5}
# The LLS authors re-estimate batch-norm statistics on 50 training batches before every test
# (docs/protocol.md, section 1); `tinydgl` does the same by default, `fit()` only when asked.
DEFAULT_BN_RECALIBRATE = 50


def add_training_arguments(parser):
    """The options shared by `train` and `compare`."""
    add_model_arguments(parser)
    add_run_arguments(parser)
    add_data_arguments(parser)
    group = parser.add_argument_group("method options (each applies to the trainers that have it)")
    for add_family in (
        add_local_loss_options,
        add_synthetic_gradient_options,
        add_async_dgl_options,
        add_feedback_options,
        add_forward_forward_options,
        add_forward_gradient_options,
    ):
        add_family(group)
    parser.add_argument("--metrics-json", default=None, help="write the final metrics and per-epoch history here")
    parser.add_argument("--plot", default=None, help="write a PNG of the learning curves here (needs matplotlib)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (shown on a terminal with tqdm), nor the line every 10 s shown otherwise",
    )


def add_model_arguments(parser):
    """--model, and the options that shape the mlp."""
    parser.add_argument(
        "--model",
        type=choice("model", list(MODELS)),
        default="cnn",
        help=f"one of: {', '.join(MODELS)} (default %(default)s)",
    )
    model = parser.add_argument_group("model options (--model mlp)")
    model.add_argument(
        "--hidden",
        type=int_list,
        default=None,
        metavar="W1,W2,...",
        help="widths of the hidden layers (default 256,256)",
    )
    model.add_argument(
        "--activation",
        type=choice("activation", ["relu", "tanh"]),
        default=None,
        help="hidden activation: relu (default) or tanh (the DRTP reference code's)",
    )
    model.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch norm after each hidden linear layer (default: on)",
    )
    model.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="biases in the linear layers (default: on; koz4k's DNI example has none)",
    )
    model.add_argument(
        "--output-batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch norm on the logits too (default: off; koz4k's DNI example has it)",
    )


def add_run_arguments(parser):
    """The dataset, the length of the run, the optimizer and the seed."""
    from ..data import DATASETS

    parser.add_argument(
        "--dataset",
        type=choice("dataset", list(DATASETS)),
        default="mnist-small",
        help=f"one of: {', '.join(DATASETS)} (default %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=1,
        help="epochs in all, resumed ones included (default %(default)s); greedy: see --epochs-per-module",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=128, help="training batch size (default %(default)s)"
    )
    parser.add_argument(
        "--optimizer",
        type=choice("optimizer", list(OPTIMIZERS)),
        default="adam",
        help=f"one of: {', '.join(OPTIMIZERS)} (default %(default)s; -sf: schedule-free)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")",
    )
    parser.add_argument(
        "--momentum",
        type=non_negative_float,
        default=None,
        help="sgd: momentum (default 0; Forward-Forward's reference recipe uses 0.9); nag: Nesterov "
        "momentum (default 0.9, the DRTP reference code's)",
    )
    parser.add_argument(
        "--lr-schedule",
        type=choice("lr schedule", ["constant", "cooldown", "steps"]),
        default="constant",
        help="per-epoch learning rate: constant (default), cooldown (Forward-Forward's reference "
        "schedule as loeweX's src/utils.py computes it, 0-based epoch e: 1 while e <= E // 2, "
        "then 2 (1 + E - e) / E; E = 5: 1, 1, 1, 1.2, 0.8) or steps (x0.1 after 60%% and again "
        "after 90%% of the epochs: PEPITA's reference schedule); in-process runs",
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=0.0,
        help="weight decay of every optimizer (default %(default)s): adamw decays the weights "
        "directly (decoupled), the others add weight_decay * w to the gradient",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the weights, the data order and every random choice of a method (default %(default)s)",
    )


def add_data_arguments(parser):
    """Where the run computes, where the data comes from and how it is prepared."""
    parser.add_argument(
        "--backend",
        type=choice("backend", [b for b in BACKENDS if b != "array_api_strict"]),
        default=None,
        help="numpy or cupy (default: $TINYDGL_BACKEND or numpy)",
    )
    parser.add_argument("--data-dir", default=None, help="where dataset files are (default: $TINYDGL_DATA, the cache)")
    parser.add_argument(
        "--normalize",
        type=choice("normalization", ["dataset", "none"]),
        default="dataset",
        help="dataset (default): (x/255 - mean) / std with the dataset's per-channel statistics; "
        "none: raw pixels in [0, 1], as the DRTP and Forward-Forward reference codes feed them",
    )
    parser.add_argument(
        "--limit-train",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N training images (stratified; default: all)",
    )
    parser.add_argument(
        "--limit-test",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N test images (stratified; default: all)",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="random crop (4-pixel zero padding) and, except for digits, horizontal flip (default: off)",
    )
    parser.add_argument(
        "--bn-recalibrate",
        type=non_negative_int,
        default=DEFAULT_BN_RECALIBRATE,
        metavar="N",
        help="before every test, re-estimate batch-norm statistics at the weights being tested: N "
        "batches of a fresh pass over the training data in training mode, learning nothing, "
        "as the LLS authors' code does (default %(default)s; 0: test with the statistics the "
        "epoch left). Why: running statistics averaged over an epoch lag fast-changing "
        "blocks, and schedule-free optimizers test other weights than they trained. Cost: N "
        "forward passes per epoch, about a third of N training steps; models without batch "
        "norm (cnn) skip it",
    )


def add_local_loss_options(group):
    """Local losses: DGL, greedy, async DGL (auxiliary heads), the LLS family, PEPITA."""
    group.add_argument(
        "--label-smoothing", type=fraction, default=None, help="label smoothing of every cross-entropy loss"
    )
    group.add_argument(
        "--aux",
        default=None,
        help="DGL/greedy/async DGL auxiliary head: a classifier, mlp-sr, mlp (default), cnn, linear; or "
        "Nøkland & Eidnes' local losses: pred, sim, predsim (fg --fg-loss local: linear by default)",
    )
    group.add_argument(
        "--pepita-f-scale",
        type=positive_float,
        default=None,
        help="pepita: scale of the fixed error projection F, U[-sqrt(6/D), sqrt(6/D)] times it (default "
        f"{PEPITA_F_SCALE}, the official code's)",
    )
    group.add_argument(
        "--predsim-beta",
        type=fraction,
        default=None,
        help=f"--aux predsim: weight beta of the similarity loss, loss = (1 - beta) * pred + beta * sim "
        f"(default {PREDSIM_BETA}, the reference code's)",
    )
    group.add_argument(
        "--modules", type=positive_int, default=None, help="DGL/greedy: cut the hidden blocks into K modules"
    )
    group.add_argument(
        "--boundaries", type=int_list, default=None, help="DGL/greedy: block indices where modules start, e.g. 2,4"
    )
    group.add_argument(
        "--epochs-per-module", type=positive_int, default=None, help="greedy: epochs spent on each module"
    )
    group.add_argument("--waveform", default=None, help="LLS basis: sin (default), square, cosine, random")
    group.add_argument("--temperature", type=positive_float, default=None, help="LLS temperature T (default 0.5)")
    group.add_argument(
        "--basis-size",
        type=positive_int,
        default=None,
        metavar="R",
        help="lls-mxm: a basis of R waves and an R x classes matrix M (the official "
        "LLS-MxM-reduced; R = 20 for SmallConv in the paper)",
    )


def add_synthetic_gradient_options(group):
    """DNI and cDNI: the synthesizers and where they sit."""
    group.add_argument(
        "--synthesizer",
        default=None,
        help="DNI synthetic-gradient model: linear (default), mlp, mlp1 (koz4k's: one hidden ReLU "
        "layer, no batch norm), conv, auto (the paper's: mlp or conv)",
    )
    group.add_argument(
        "--interfaces", type=int_list, default=None, help="DNI: blocks after which a synthesizer sits, e.g. 0,1"
    )
    group.add_argument(
        "--synth-hidden", type=positive_int, default=None, help="DNI: width of MLP synthesizers (1024; mlp1: 256)"
    )
    group.add_argument(
        "--synth-placement",
        type=choice("synthesizer placement", ["post-activation", "pre-activation"]),
        default=None,
        help="DNI: where a synthesizer reads its block: post-activation (default, the block's "
        "output) or pre-activation (before the block's last activation, as koz4k's "
        "examples/mnist-mlp, on the batch-norm output); the activation then belongs "
        "to the group above",
    )
    group.add_argument(
        "--synth-units",
        type=choice("synthetic-gradient units", ["per-example", "raw"]),
        default=None,
        help="DNI: what a synthesizer predicts: per-example (default: B x the gradient of the batch-mean "
        "loss) or raw (the gradient of the batch-mean loss itself, as koz4k's dni-pytorch)",
    )
    group.add_argument(
        "--synth-zero-init",
        type=choice("synthesizer zero-init", ["weight+bias", "weight"]),
        default=None,
        help="DNI: what is zero-initialised in a synthesizer's last layer: weight+bias (default) or "
        "weight (koz4k's; the bias keeps its random init)",
    )
    group.add_argument(
        "--synth-channels", type=positive_int, default=None, help="DNI: channels of conv synthesizers (128)"
    )
    group.add_argument(
        "--update-prob", type=float, default=None, help="DNI: probability that a layer updates at a step"
    )
    group.add_argument(
        "--sg-scale", type=positive_float, default=None, help="DNI: scale applied to synthetic gradients"
    )
    group.add_argument(
        "--bp-lambda", type=float, default=None, help="DNI: BP(lambda) mixing of true and synthetic targets"
    )


def add_async_dgl_options(group):
    """Async DGL: replay buffers and the schedule of its modules."""
    group.add_argument(
        "--buffer-size", type=positive_int, default=None, help="async DGL: batches held per replay buffer (M)"
    )
    group.add_argument("--schedule", default=None, help="async DGL: random (default) or round-robin")
    group.add_argument(
        "--slow-module", type=int, default=None, help="async DGL: index of the slowed module, counting from 0"
    )
    group.add_argument(
        "--slowdown", type=positive_float, default=None, help="async DGL: slowdown factor of --slow-module"
    )
    group.add_argument(
        "--reuse-cap", type=positive_int, default=None, help="async DGL: how often a stored batch may be replayed"
    )
    group.add_argument(
        "--buffer-codec", default=None, help="async DGL: vq to store activations as vector-quantised codes"
    )
    group.add_argument(
        "--module-epoch",
        type=choice("module epoch", ["first", "own"]),
        default=None,
        help="async DGL, in-process: first (default: every module stops when module 1's epoch ends) or "
        "own (each module makes one epoch of updates at its own pace, the finished ones forwarding "
        "in evaluation mode, as eugenium/DGL's buffer experiment)",
    )
    group.add_argument(
        "--no-warmup", dest="warmup", action="store_false", default=None, help="async DGL: skip the warm-up"
    )


def add_feedback_options(group):
    """Feedback alignment and its relatives (fa, dfa, sdfa, drtp), and the output loss."""
    group.add_argument(
        "--loss",
        type=choice("loss", ["ce", "bce"]),
        default=None,
        help="bp, fa, dfa, sdfa, drtp, shallow: the output loss, ce (softmax cross-entropy, default) or "
        "bce (sigmoid + binary cross-entropy, the DRTP reference code's)",
    )
    group.add_argument(
        "--feedback-init",
        type=choice("feedback init", ["kaiming", "lls-dnn"]),
        default=None,
        help="fa, dfa, sdfa, drtp: how the fixed random feedback matrices are drawn: kaiming "
        "(default; U[-sqrt(6/fan_in), sqrt(6/fan_in)], as the DRTP reference code) or lls-dnn "
        "(1e-4 * U[0, 1), as the official LLS-DNN code's DFA)",
    )
    group.add_argument(
        "--feedback-scale",
        type=choice("feedback scale", ["mean", "sum"]),
        default=None,
        help="dfa, sdfa, drtp: mean (default: hidden signals divided like the loss's gradient, by N, "
        "or N x classes for dfa with bce, so one --lr serves every method of a comparison) or sum "
        "(per-sample e @ B, summed over the batch by the weight gradient, as the DRTP reference "
        "code: what its SGD/NAG rate of 1e-4 needs; the same under Adam)",
    )


def add_forward_forward_options(group):
    """Forward-Forward (ff)."""
    group.add_argument(
        "--ff-hidden",
        type=positive_int_list,
        default=None,
        metavar="W1,W2,...",
        help="ff: widths of the Forward-Forward network's layers, 2 or more (default 1000,1000,1000, "
        "the reference's; ff builds this network itself and reads only the input size from "
        "--model mlp, whose --hidden does not apply)",
    )
    group.add_argument(
        "--ff-relu-grad",
        type=choice("ff ReLU gradient", ["full", "true"]),
        default=None,
        help="ff: full (default, the reference's: ReLU's backward passes the gradient unchanged) or "
        "true (the ReLU derivative); they differ only in the peer-normalisation term",
    )
    group.add_argument(
        "--peer-norm",
        type=non_negative_float,
        default=None,
        help="ff: weight of the peer-normalisation penalty (default 0.03; 0: off)",
    )
    group.add_argument(
        "--ff-predict",
        type=choice("ff prediction", ["linear", "goodness"]),
        default=None,
        help="ff: what the test accuracy uses: linear (default; the downstream linear classifier on the "
        "neutral sample) or goodness (the label whose embedding gives the most goodness); the "
        "metrics JSON's trainer_stats has both",
    )
    group.add_argument(
        "--ff-classifier-lr-scale",
        type=positive_float,
        default=None,
        help="ff: the linear classifier's learning rate is --lr times this (default 10, the reference's 1e-2 vs 1e-3)",
    )
    group.add_argument(
        "--ff-classifier-wd-scale",
        type=non_negative_float,
        default=None,
        help="ff: the linear classifier's weight decay is --weight-decay times this (default 10, the "
        "reference's 3e-3 vs 3e-4)",
    )


def add_forward_gradient_options(group):
    """Forward gradients (fg)."""
    group.add_argument(
        "--fg-mode",
        type=choice("fg mode", ["weight", "activity"]),
        default=None,
        help="fg: what the random direction moves: weight (default; every parameter, weight "
        "perturbation) or activity (each block's output, then a backward through that block "
        "only; Ren et al. 2023)",
    )
    group.add_argument(
        "--fg-loss",
        type=choice("fg loss", ["global", "local"]),
        default=None,
        help="fg: global (default; the network's loss) or local (DGL's modules, each with an "
        "--aux head, linear by default, and its own loss)",
    )
    group.add_argument(
        "--fg-guess",
        type=choice("fg guess", ["random", "local"]),
        default=None,
        help="fg: the directions: random (default) or local (each hidden block's guess is the gradient "
        "of an --aux head's loss, and the global gradient is projected on it; Fournier et al. "
        "2023; with --fg-mode activity --fg-loss global)",
    )
    group.add_argument(
        "--fg-directions",
        type=positive_int,
        default=None,
        metavar="K",
        help="fg: random directions averaged per step (default 1); the estimate's variance falls as 1/K",
    )


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
            close = (
                [name.replace("_", "-")]
                if name.replace("_", "-") in known
                else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            )
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


def build_parser():
    """The `tinydgl` parser: train, compare, assignments and recipes."""
    parser = CommandParser(
        prog="tinydgl", description="Deep learning without end-to-end backprop, written out in NumPy/CuPy."
    )
    parser.add_argument("--version", action="version", version=f"tinydgl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.train_parser = add_train_parser(sub)  # `apply_recipe` sets the recipe's values as its defaults
    add_compare_parser(sub)
    add_assignments_parser(sub)
    sub.add_parser("recipes", help="list the reference recipes (--recipe NAME): trainers, options, source")
    return parser


def add_train_parser(sub):
    """`tinydgl train`: one model, one method."""
    train = sub.add_parser("train", help="train one model with one method")
    names = [*TRAINERS, *DATA_PARALLEL]
    train.add_argument(
        "--trainer",
        type=choice("trainer", names),
        default="bp",
        help=f"one of: {', '.join(TRAINERS)} (default %(default)s; {', '.join(DATA_PARALLEL)}: "
        f"deprecated, say --parallel {' or '.join(OLD_TRAINERS.values())})",
    )
    train.add_argument(
        "--recipe",
        type=choice("recipe", list(RECIPES)),
        default=None,
        help=f"set every option of an authors' setting: {', '.join(RECIPES)} (tinydgl recipes lists "
        f"them); options given beside it override it. Without a recipe, ff's defaults are the "
        f"loewex-ff network and data with Adam 2e-4 (what learns in a few epochs): "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in TRAINER_DEFAULTS["ff"].items()),
    )
    add_training_arguments(train)
    train.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save a checkpoint after every epoch here (and every N steps with --checkpoint-every); "
        "the last two are kept. SIGTERM or Ctrl-C stop the run after its current step with a "
        "checkpoint (exit 143 / 130; a second Ctrl-C stops at once)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="also checkpoint every N training steps, mid-epoch; a run killed at any moment resumes "
        "from the last one and ends bit-identical to an uninterrupted run. In-process runs "
        "only: with --workers, checkpoints stay at epoch boundaries, the last point where "
        "the workers' modules form one consistent model (a stopped parallel run resumes "
        "from its last finished epoch)",
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        choices=("latest", "previous"),
        help="continue from the checkpoint in --checkpoint-dir: the latest (default) or the one "
        "before it (previous), e.g. when the latest is damaged. The checkpoint must come from "
        "the same trainer, model, dataset, optimizer and parameter-shaping options",
    )
    add_parallel_arguments(train)
    return train


def add_parallel_arguments(train):
    """`train`'s options for runs on several worker processes or MPI ranks: --parallel, --transport,
    --workers and each engine's options; the choices and help come from the registry."""
    from ..runtime import registry

    group = train.add_argument_group("parallel runs")
    kinds = "; ".join(
        f"{p}: {registry.PARALLELISMS.get(p, ('', p))[1]} ({', '.join(registry.trainers_for(p))}; "
        f"over {' or '.join(registry.transports(p))})"
        for p in registry.parallelisms()
    )
    group.add_argument(
        "--parallel",
        type=choice("parallelism", registry.parallelisms()),
        default=None,
        help=f"train on workers: {kinds} (default: in-process)",
    )
    group.add_argument(
        "--transport",
        type=choice("transport", registry.transports()),
        default=None,
        help="; ".join(f"{t}: {what}" for t, what in registry.TRANSPORTS.items() if t in registry.transports())
        + " (default shm; mpi needs the mpi extra, and "
        "--workers, if given, must be J)",
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="J",
        help="how many workers --parallel runs on (default: in-process)",
    )
    group.add_argument(
        "--n-fetch",
        type=positive_int,
        default=None,
        help="downpour: a worker fetches the server's weights every N of its steps (default 1)",
    )
    group.add_argument(
        "--n-push",
        type=positive_int,
        default=None,
        help="downpour: a worker pushes its summed gradients every N of its steps (default 1)",
    )
    group.add_argument(
        "--devices",
        type=int_list,
        default=None,
        help="module, with --backend cupy: GPU ids, worker j on the (j mod n)-th (default: all)",
    )
    group.add_argument(
        "--engine",
        choices=tuple(OLD_ENGINES),
        default=None,
        help=f"deprecated: say --transport ({', '.join(f'{o}: {n}' for o, n in OLD_ENGINES.items())})",
    )


def add_compare_parser(sub):
    """`tinydgl compare`: several methods on the same model, data and seed."""
    compare = sub.add_parser("compare", help="train several methods on the same model, data and seed; print one table")
    compare.add_argument(
        "--trainers",
        type=trainer_list,
        default=["bp", "lls"],
        help=f"comma-separated, from: {', '.join(TRAINERS)} (default: bp,lls)",
    )
    add_training_arguments(compare)
    compare.add_argument(
        "--alignment",
        action="store_true",
        help="measure gradient alignment: every K steps, per block, the cosine between the gradient "
        "each method hands its optimizer and the true backprop gradient at the same weights and "
        "batch (costs one extra backprop step each time); in the metrics JSON under each run's "
        "'alignment', and with --plot a second figure, PLOT-alignment.png",
    )
    compare.add_argument(
        "--alignment-every",
        type=positive_int,
        default=10,
        metavar="K",
        help="with --alignment: measure every K-th training step (default %(default)s)",
    )


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
    train.set_defaults(**recipe_defaults(name, {k for k in METHOD_OPTIONS if k in accepted}))
    args = parser.parse_args(argv)
    args.recipe = name
    return args
