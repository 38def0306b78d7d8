"""Reference recipes: each method as its authors' code trains it, by name.

    tinydgl train --recipe drtp --trainer dfa --dataset fashion-mnist --epochs 5
    tinydgl recipes                      # every recipe, its trainers, options and source

A recipe sets every `tinydgl train` option of an authors' setting (options given beside it override it), but
not the dataset or the epochs (`authors_epochs`); `note` names a stand-in model, `commit` the version of the
sources read. `TRAINER_DEFAULTS`: `--trainer ff`'s own defaults without a recipe. The rules and why:
docs/commands.md, "Recipes".
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    name: str
    trainers: tuple  # the trainers it is for; the first is the one it runs when --trainer is not given
    options: dict  # argparse destinations of `tinydgl train` -> values
    repo: str
    files: str
    commit: str = "not recorded"
    authors_epochs: str = "not recorded"
    note: str = ""
    method_options: dict = field(default_factory=dict)  # applied only to trainers that accept them

    def command_options(self):
        """The recipe as command-line options (what `tinydgl recipes` prints)."""
        words = []
        for dest, value in {**self.options, **self.method_options}.items():
            flag = "--" + dest.replace("_", "-")
            if value is True:
                words.append(flag)
            elif value is False:
                words.append("--no-" + dest.replace("_", "-"))
            elif isinstance(value, (list, tuple)):
                words += [flag, ",".join(str(v) for v in value)]
            else:
                words += [flag, str(value)]
        return words


RECIPES = {
    r.name: r
    for r in [
        Recipe(
            "lls-dnn",
            ("lls", "lls-m", "lls-mxm", "bp", "dgl", "local-losses", "fa", "dfa", "sdfa", "drtp", "shallow"),
            {
                "model": "smallconv",
                "optimizer": "adamw-sf",
                "lr": 5e-3,
                "batch_size": 128,
                "bn_recalibrate": 50,
                "normalize": "dataset",
            },
            repo="github.com/mapolinario94/LLS-DNN",
            files="main.py (training_fn, BN recalibration), utils/adamwschedulefree.py",
            authors_epochs="100 (the paper's tables, with crop + flip: --augment)",
            note="the LLS paper's SmallConv protocol: schedule-free AdamW 5e-3, batch 128, 50-batch BN recalibration",
            method_options={"temperature": 0.5, "waveform": "sin"},
        ),
        Recipe(
            "drtp",
            ("drtp", "dfa", "sdfa", "fa", "bp", "shallow"),
            {
                "model": "mlp",
                "hidden": [1000],
                "activation": "tanh",
                "batchnorm": False,
                "optimizer": "nag",
                "momentum": 0.9,
                "lr": 1e-4,
                "batch_size": 100,
                "normalize": "none",
                "bn_recalibrate": 0,
            },
            repo="github.com/ChFrenkel/DirectRandomTargetProjection",
            files="main.py (defaults), models.py (FC_1000_FC_10), module.py + function.py (feedback hook)",
            authors_epochs="100",
            note="FC_1000_FC_10, tanh, sigmoid + BCE, NAG (momentum 0.9) lr 1e-4, batch 100, raw [0, 1] pixels, "
            "kaiming-uniform feedback, hidden signals per sample (--feedback-scale sum); bp too learns from sigmoid + BCE",
            method_options={"loss": "bce", "feedback_init": "kaiming", "feedback_scale": "sum"},
        ),
        Recipe(
            "koz4k-mlp",
            ("dni", "cdni", "bp"),
            {
                "model": "mlp",
                "hidden": [256, 256],
                "batchnorm": True,
                "bias": False,
                "output_batchnorm": True,
                "optimizer": "adam",
                "lr": 1e-3,
                "batch_size": 64,
                "normalize": "dataset",
                "bn_recalibrate": 0,
            },
            repo="github.com/koz4k/dni-pytorch",
            files="examples/mnist-mlp/main.py, dni.py",
            authors_epochs="10",
            note="784-256-256-10, linear layers without biases, batch norm after every layer (the logits' too), one "
            "interface after hidden layer 2 on the batch-norm output (before the ReLU), an MLP synthesizer with "
            "one hidden ReLU layer of 256 and no batch norm, raw gradient targets, last layer's weight zeroed; "
            "Adam 1e-3, batch 64",
            method_options={
                "interfaces": [1],
                "synthesizer": "mlp1",
                "synth_hidden": 256,
                "synth_placement": "pre-activation",
                "synth_units": "raw",
                "synth_zero_init": "weight",
            },
        ),
        Recipe(
            "dgl-aux",
            ("dgl", "bp"),
            {
                "model": "smallconv",
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr": 0.1,
                "weight_decay": 5e-4,
                "batch_size": 128,
                "normalize": "dataset",
                "bn_recalibrate": 0,
            },
            repo="github.com/eugenium/DGL",
            files="auxiliary_nets_study/cifar_dgl.py, auxiliary_nets_study/models.py",
            authors_epochs="50 (lr /5 every 15)",
            note="the auxiliary-net study at depth 3, width 32 (32/64/128 convs), MLP-SR heads, SGD 0.1, momentum 0.9, "
            "weight decay 5e-4, batch 128; tinydgl's smallconv (32/64/128 convs + a 512 linear block) stands "
            "in, cut into 3 modules at its conv blocks",
            method_options={"aux": "mlp-sr", "boundaries": [1, 2]},
        ),
        Recipe(
            "dgl-buffer",
            ("async-dgl",),
            {
                "model": "smallconv",
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr": 0.1,
                "weight_decay": 5e-4,
                "batch_size": 128,
                "normalize": "dataset",
                "bn_recalibrate": 0,
            },
            repo="github.com/eugenium/DGL",
            files="buffer_experiments/cifar_buffer.py, buffer_experiments/model_greedy.py",
            commit="a9c87861a0e783bed19c927193ab082689688480",
            authors_epochs="50 (lr /5 every 15)",
            note="replay buffers of 30 batches, random schedule with a warm-up, the middle module slowed by noise 0.1 "
            "(1 / 0.9 = 1.11x), each module one epoch at its own pace (--module-epoch own), MLP heads, SGD 0.1, "
            "momentum 0.9, weight decay 5e-4, batch 128; smallconv stands in for the greedy CNN, in 3 modules",
            method_options={
                "aux": "mlp",
                "boundaries": [1, 2],
                "buffer_size": 30,
                "schedule": "random",
                "slow_module": 1,
                "slowdown": 1 / 0.9,
                "module_epoch": "own",
            },
        ),
        Recipe(
            "loewex-ff",
            ("ff",),
            {
                "model": "mlp",
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr": 1e-3,
                "weight_decay": 3e-4,
                "batch_size": 100,
                "lr_schedule": "cooldown",
                "normalize": "none",
                "bn_recalibrate": 0,
            },
            repo="github.com/loeweX/Forward-Forward",
            files="config.yaml, src/utils.py, src/ff_model.py",
            authors_epochs="100 (seed 42)",
            note="3 x 1000 ReLU (full-gradient ReLU), peer normalisation 0.03, SGD momentum 0.9, lr 1e-3 / 1e-2 "
            "(layers / linear classifier), weight decay 3e-4 / 3e-3, batch 100, linear cool-down over the "
            "second half, raw [0, 1] pixels",
            method_options={
                "ff_hidden": [1000, 1000, 1000],
                "ff_relu_grad": "full",
                "peer_norm": 0.03,
                "ff_predict": "linear",
                "ff_classifier_lr_scale": 10.0,
                "ff_classifier_wd_scale": 10.0,
            },
        ),
        Recipe(
            "pepita-fc",
            ("pepita", "shallow", "bp"),
            {
                "model": "mlp",
                "hidden": [1024],
                "batchnorm": False,
                "bias": False,
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr": 0.01,
                "batch_size": 64,
                "lr_schedule": "steps",
                "normalize": "none",
                "bn_recalibrate": 0,
            },
            repo="github.com/GiorgiaD/PEPITA",
            files="Tutorial_PEPITA_FullyConnectedNets_CIFAR-10.ipynb (NetFC1x1024DOcust)",
            authors_epochs="100 (lr x0.1 at 60 and 90)",
            note="one 1024-unit ReLU layer, no biases, F = U[-sqrt(6/D), sqrt(6/D)] x 0.05, SGD momentum 0.9 lr 0.01, "
            "batch 64, [0, 1] pixels; not followed: He-uniform init and 10% dropout (one mask for both passes). "
            "The notebook trains CIFAR-10 (52.58% after 100 epochs); on MNIST it changes only the input size",
            method_options={"pepita_f_scale": 0.05},
        ),
        Recipe(
            "nokland-predsim",
            ("dgl", "greedy", "bp"),
            {
                "model": "mlp",
                "hidden": [1024, 1024, 1024],
                "batchnorm": True,
                "optimizer": "adam",
                "lr": 5e-4,
                "batch_size": 128,
                "normalize": "dataset",
                "bn_recalibrate": 0,
            },
            repo="github.com/anokland/local-loss",
            files="train.py (defaults), run_experiments.sh (FashionMNIST mlp)",
            authors_epochs="200 on Fashion-MNIST (lr x0.25 at 100, 150, 175, 188); the README's table: 100",
            note="3 x 1024 with batch norm, one local loss per hidden layer (predsim, beta 0.99), Adam 5e-4, batch 128; "
            "not followed: dropout 0.025, leaky ReLU for sim and predsim, 2-pixel jitter and flips; "
            "--aux pred | sim for the other two losses",
            method_options={"aux": "predsim", "predsim_beta": 0.99},
        ),
        Recipe(
            "fournier-fg",
            ("fg", "bp"),
            {
                "model": "smallconv",
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr": 0.05,
                "weight_decay": 5e-4,
                "batch_size": 128,
                "normalize": "dataset",
                "bn_recalibrate": 0,
            },
            repo="github.com/streethagore/ForwardLocalGradient",
            files="args.py (defaults), model/small_net.py",
            authors_epochs="101 (lr x0.2 every 30)",
            note="the global loss's forward gradient along local guesses (an MLP head per block), activity "
            "perturbation (LocalFG-A; args.py's default space is the weights, which tinydgl's local guess does "
            "not take), SGD 0.05, momentum 0.9, weight decay 5e-4, batch 128; tinydgl's "
            "smallconv stands in for their small-net (six 3x3 convs, 64-256 channels); not followed: the step "
            "schedule and their heads' shape (pooled to 2x2, 3 layers of 1024)",
            method_options={"fg_mode": "activity", "fg_loss": "global", "fg_guess": "local", "aux": "mlp"},
        ),
    ]
}

# Defaults of trainers that do not learn at the command's general ones (docs/commands.md, "Recipes"); a recipe or
# options given on the command line override them.
TRAINER_DEFAULTS = {
    "ff": {"model": "mlp", "optimizer": "adam", "lr": 2e-4, "batch_size": 100, "normalize": "none", "bn_recalibrate": 0}
}


def recipe_defaults(name, accepts):
    """The option defaults recipe `name` sets for a trainer that accepts the method options `accepts` (a set
    of argparse destinations)."""
    recipe = RECIPES[name]
    return {**recipe.options, **{k: v for k, v in recipe.method_options.items() if k in accepts}}


def describe(recipe):
    """The lines `tinydgl recipes` prints for one recipe."""
    return [
        f"{recipe.name}: {', '.join(recipe.trainers)}",
        f"  source: {recipe.repo}, {recipe.files}; commit {recipe.commit}",
        f"  the authors train for: {recipe.authors_epochs} epochs",
        f"  options: {' '.join(recipe.command_options())}",
        f"  {recipe.note}",
    ]
