"""Gradient alignment: how close is the gradient a method hands its optimizer to backprop's?

At block l: the cosine between the parameter gradient the method hands `optimizer.step()` and the true backprop
gradient, same batch, same weights (block's gradients concatenated). Backprop reads 1; unrelated signals read
about 0; blocks that got no gradient that step, and async DGL's later modules, read NaN; Forward-Forward is
refused. What it measures and why: docs/design/measurements.md; lesson 11 shows it on FA and DFA.

    probe = AlignmentProbe(every=10)
    fit(trainer, train, test, epochs, alignment=probe)   # every 10th step goes through the probe
    probe.summary()  # {"every": 10, "steps": [1, 11, ...], "blocks": [[cos of block 0 at each step], ...]}
"""

import copy
import math

import numpy as np

from ..backend import to_numpy


def true_gradients(trainer, x, y):
    """Backprop's gradient of the network's loss (the trainer's `output_loss` if it has one, else softmax
    cross-entropy with the trainer's label smoothing)
    for every model parameter, at the current weights, on batch (x, y), computed on a copy of the model so
    the trainer's own state (weights, batch-norm statistics, caches, generators) is untouched.
    Returns {parameter name: host array}."""
    from ..trainers.backprop import BackpropTrainer

    reference = copy.deepcopy(trainer.model)
    reference.train()
    _plain_backprop(reference)
    # backprop's own step on the copy, with an optimizer that leaves the weights alone: every p.grad is filled
    backprop = BackpropTrainer(reference, _KeepWeights, getattr(trainer, "label_smoothing", 0.0))
    if hasattr(trainer, "output_loss"):  # the feedback-alignment family may train on sigmoid + BCE
        backprop.output_loss = trainer.output_loss
    backprop.train_step(x, y)
    return {name: to_numpy(p.grad) for name, p in reference.named_parameters()}


class _KeepWeights:
    """An optimizer whose step does nothing, for a train_step that is only to compute the gradients."""

    def __init__(self, params):
        self.params = list(params)

    def step(self):
        pass


def _plain_backprop(module):
    """Take out feedback matrices (feedback alignment's), so input gradients go through the weights."""
    if getattr(module, "feedback", None) is not None:
        module.feedback = None
    for child in module.children():
        _plain_backprop(child)


def handed_gradients(trainer, x, y):
    """Run trainer.train_step(x, y) and catch the gradient of every model parameter as it reaches an
    optimizer's step (the first time, if it steps more than once). Returns (loss, {parameter name: host
    array}); parameters whose gradient was not renewed during the step are left out."""
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    before = {id(p): p.grad for p in trainer.model.parameters()}
    caught = {}

    def catching(optimizer, real_step):
        def step():
            for p in optimizer.params:
                key = id(p)
                if key in names and key not in caught and p.grad is not None and p.grad is not before[key]:
                    caught[key] = to_numpy(p.grad).copy()
            return real_step()

        return step

    optimizers = trainer.optimizers()
    own = [vars(o).get("step") for o in optimizers]  # an instance's own `step`, if it had one
    for optimizer in optimizers:
        optimizer.step = catching(optimizer, optimizer.step)
    try:
        loss = trainer.train_step(x, y)
    finally:
        for optimizer, previous in zip(optimizers, own):
            if previous is None:
                del optimizer.step
            else:
                optimizer.step = previous
    return loss, {names[k]: g for k, g in caught.items()}


def block_cosines(model, handed, true):
    """Per block of `model`: cosine between the concatenated handed and true gradients of its parameters;
    NaN if any of its parameters got no handed gradient, or either vector is zero; None for a block
    without parameters."""
    cosines = []
    for i, block in enumerate(model.layers):
        names = [f"{i}.{name}" for name, _ in block.named_parameters()]
        if not names:
            cosines.append(None)
            continue
        if any(n not in handed for n in names):
            cosines.append(math.nan)
            continue
        # BEGIN SOLUTION a4-alignment-cosine
        # hint: flatten and concatenate the block's handed gradients (names in order) into one float64 vector a,
        # hint: its true gradients into b; append the cosine a.b / (|a| |b|) as a Python float, NaN if either is 0
        a = np.concatenate([np.ravel(handed[n]) for n in names]).astype(np.float64)
        b = np.concatenate([np.ravel(true[n]) for n in names]).astype(np.float64)
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norm) if norm > 0 else math.nan)
        # END SOLUTION
    return cosines


def blocks_learning_from_the_batch(trainer):
    """The blocks whose gradient in a train_step comes from the batch it was given: None (all of them) for
    every trainer but async DGL, where only the first module's blocks do."""
    from ..trainers.async_dgl import AsyncDGLTrainer

    if not isinstance(trainer, AsyncDGLTrainer):
        return None
    first = set(trainer.groups[0])
    if len(trainer.groups) == 1:  # one module: it also holds the classifier block
        first.add(len(trainer.model.layers) - 1)
    return first


class AlignmentProbe:
    """Measures alignment on every `every`-th training step (the 1st, the every+1-th, ...) of a `fit`."""

    def __init__(self, every=10):
        if int(every) < 1:
            raise ValueError(f"alignment every must be a positive number of steps, got {every}.")
        self.every, self.steps, self.records = int(every), 0, []

    def check(self, trainer):
        """Refuse trainers for which alignment on the given batch is undefined."""
        from ..trainers.forward_forward import FFTrainer

        if isinstance(trainer, FFTrainer):
            raise ValueError(
                "alignment is undefined for ff: its layers learn a goodness objective on positive and "
                "negative data, and its network ends in a hidden layer, not in logits whose "
                "cross-entropy backprop could be compared with."
            )

    def train_step(self, trainer, x, y):
        """trainer.train_step(x, y), measured if this step is due. Returns the step's loss."""
        self.steps += 1
        if (self.steps - 1) % self.every:
            return trainer.train_step(x, y)
        true = true_gradients(trainer, x, y)
        loss, handed = handed_gradients(trainer, x, y)
        cosines = block_cosines(trainer.model, handed, true)
        fed = blocks_learning_from_the_batch(trainer)
        cosines = [c if fed is None or b in fed or c is None else math.nan for b, c in enumerate(cosines)]
        self.records.append({"step": self.steps, "cosine": cosines})
        return loss

    def summary(self):
        """{"every": K, "steps": [step numbers], "blocks": [[cosine at each recorded step] per block]}
        (JSON-ready: NaN is written as null)."""
        blocks = len(self.records[0]["cosine"]) if self.records else 0

        def clean(v):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        return {
            "every": self.every,
            "steps": [r["step"] for r in self.records],
            "blocks": [[clean(r["cosine"][b]) for r in self.records] for b in range(blocks)],
        }


def plot_alignment(runs, path, title=None):
    """One panel per method: alignment of each block over training. runs: {method: probe.summary()}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        summary = runs[name]
        for b, values in enumerate(summary["blocks"]):
            if all(v is None for v in values):
                continue  # no gradient ever reached this block (shallow's hidden blocks)
            ax.plot(
                summary["steps"],
                [np.nan if v is None else v for v in values],
                marker=".",
                color=f"C{b}",
                label=f"block {b}",
            )
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("cosine with backprop's")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
