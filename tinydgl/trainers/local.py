"""Local learning: the network is cut into modules and each module learns from a loss of its own.

Where does each block's gradient come from? **From its module's own head**: an auxiliary classifier (DGL),
a fixed projection (LLS), or, for the module that ends with the network's classifier, the task loss
itself. A module's input is a constant and its output is passed on as a constant, so no gradient ever
crosses a module boundary: a module can update as soon as its input arrives (no update or backward
locking), which is what lets modules run in parallel.

`LocalModule.step` is that one rule, written once; DGL, greedy, async DGL and LLS differ only in how they
cut the network, which heads they attach, and when each module runs.
"""

import copy
import math

import numpy as np

from .. import functional as F
from .. import kernels
from ..backend import asarray
from ..nn import Sequential
from .base import Trainer


class LocalModule:
    """A piece of the network (`body`, consecutive blocks), its local head and its own optimizer.

    head=None means the body ends with the network's classifier: its output already is the logits.
    """

    def __init__(self, body, head, make_optimizer, label_smoothing=0.0):
        self.body, self.head = body, head
        self.label_smoothing = label_smoothing
        self.optimizer = make_optimizer(self.parameters())

    def parameters(self):
        return self.body.parameters() + (self.head.parameters() if self.head is not None else [])

    def forward(self, x):
        """The module's output for input x, without learning."""
        return self.body.forward(x)

    def local_loss(self, out, y):
        """Cross-entropy of the local head's logits; returns (loss, gradient with respect to `out`).
        A head with a loss of its own (`heads.LocalLossHead`: pred, sim, predsim) computes both itself."""
        if hasattr(self.head, "local_loss"):
            return self.head.local_loss(out, y, self.label_smoothing)
        if self.head is None:
            return F.softmax_cross_entropy(out, y, self.label_smoothing)
        # the head's layers, or on a GPU the same loss fused into one kernel (tinydgl.kernels)
        return kernels.local_loss(self.head, out, y, self.label_smoothing)

    def step(self, x, y):
        """One local update on a constant input x: returns (loss, output passed on as a constant)."""
        # BEGIN SOLUTION a3-local-step
        # hint: forward the body; local_loss gives the loss and its gradient; backward through the body only (no
        # hint: gradient for the input), then step this module's optimizer
        out = self.body.forward(x)
        loss, dout = self.local_loss(out, y)
        # need_input_grad=False: the gradient stops here. Nothing flows into the module below, and the first
        # parametrised layer does not even compute its input gradient.
        self.body.backward(dout, need_input_grad=False)
        self.optimizer.step()
        # END SOLUTION
        return loss, out


def block_output_shapes(model, stages=None):
    """Shape (without the batch axis) of the output of each stage, from a dry run in evaluation mode.

    stages: anything with `forward`, applied in turn (default: the model's blocks; the module-parallel
    engine passes a trainer's LocalModules). Evaluation mode, so batch norm uses (and does not update) its
    running statistics.
    """
    was_training = model.training
    model.eval()
    x = asarray(np.zeros((2, *model.input_shape)), dtype=model.parameters()[0].data.dtype)
    shapes = []
    for stage in model.layers if stages is None else stages:
        x = stage.forward(x)
        shapes.append(tuple(x.shape[1:]))
    model.train(was_training)
    return shapes


def split_blocks(num_hidden, modules=None, boundaries=None):
    """Group hidden blocks 0..num_hidden-1 into consecutive modules; returns a list of index lists.

    modules=K: K groups as equal in size as possible (earlier groups get the extra block).
    boundaries=[b1, b2, ...]: a new module starts at each listed block index.
    Neither: one module per block.
    """
    # BEGIN SOLUTION a3-split-blocks
    # hint: find the edges [0, ..., num_hidden] of the groups; reject impossible requests with a ValueError
    if boundaries:
        cuts = sorted(set(int(b) for b in boundaries))
        if cuts[0] <= 0 or cuts[-1] >= num_hidden:
            raise ValueError(f"module boundaries must lie in 1..{num_hidden - 1} (block indices), got {boundaries}.")
        edges = [0, *cuts, num_hidden]
    else:
        k = num_hidden if modules is None else int(modules)
        if not 1 <= k <= num_hidden:
            raise ValueError(
                f"--modules must be between 1 and {num_hidden} (the model's hidden blocks), got {modules}."
            )
        sizes = [num_hidden // k + (1 if i < num_hidden % k else 0) for i in range(k)]
        edges = [0, *np.cumsum(sizes).tolist()]
    # END SOLUTION
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:])]


class LocalTrainer(Trainer):
    """Trains a list of `LocalModule`s, each on its own loss; subclasses build the modules.

    train_step runs the modules in order on each batch (Algorithm 1 of DGL): module j learns from the
    constant output of module j-1. The reported loss is the last module's (the network's own loss).
    """

    parallel: tuple = ("module",)  # its modules run in parallel workers (runtime/registry.py)

    def __init__(self, model):
        super().__init__(model)
        self.modules: list[LocalModule] = []

    def optimizers(self):
        return [m.optimizer for m in self.modules]

    def auxiliary_modules(self):
        return {f"head{j}": m.head for j, m in enumerate(self.modules) if m.head is not None}

    def train_step(self, x, y):
        loss = math.nan
        for module in self.modules:
            loss, x = module.step(x, y)
        return loss

    # --- on the module-parallel engines (runtime/stages.py): a worker steps a run of modules ---------
    def pipeline_units(self):
        return self.modules

    def pipeline_links(self):
        """(policy, replay_slots, reuse_cap): every module sees every batch once, in order."""
        return "fifo", None, None

    def pipeline_stage(self, group, batches_per_epoch, start_epoch):
        return ModuleChain([self.modules[j] for j in group])

    def load_pipeline_stage(self, group, state):
        for j, learned in zip(group, state):
            mine = self.modules[j]
            mine.body.load_state_dict(learned["body"])
            if mine.head is not None:
                mine.head.load_state_dict(learned["head"])
            mine.optimizer.load_state_dict(learned["optimizer"])

    def pipeline_unit_step(self, j):
        scratch = copy.deepcopy(self.modules[j])
        return scratch.step


class ModuleChain:
    """The stage of a local trainer on one worker: its modules, each stepped in order (as in synchronous
    DGL); nothing comes back from the stage above (the stage interface: runtime/stages.py)."""

    waits_for_above = False

    def __init__(self, modules):
        self.modules = list(modules)

    def step(self, x, y, origin=None):
        loss = math.nan
        for module in self.modules:
            loss, x = module.step(x, y)  # the local rule: each module learns from its own head
        return loss, x

    def message_below(self):
        return None

    def expects_from_above(self):
        return False

    def state(self):
        return [
            {
                "body": m.body.state_dict(),
                "head": m.head.state_dict() if m.head is not None else None,
                "optimizer": m.optimizer.state_dict(),
            }
            for m in self.modules
        ]


def modules_from_groups(model, groups, make_head, make_optimizer, label_smoothing=0.0):
    """LocalModules for hidden-block groups; the last group gets the classifier block and no head."""
    blocks = model.layers
    shapes = block_output_shapes(model)
    modules = []
    for j, group in enumerate(groups):
        last = j == len(groups) - 1
        body = Sequential(*[blocks[i] for i in group], *([blocks[-1]] if last else []))
        head = None if last else make_head(j, shapes[group[-1]], blocks[group[-1]])
        modules.append(LocalModule(body, head, make_optimizer, label_smoothing))
    return modules
