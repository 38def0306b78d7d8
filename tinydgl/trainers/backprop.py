"""Backpropagation: the reference every other method is compared with.

Where does each block's gradient come from? **From the block above it**: the loss gradient enters the
last block and each block's input gradient becomes the output gradient of the block below. This is the
source of all three locks: no block can update before the whole forward pass, the loss, and the backward
pass of every block above it have run.

loss: "ce" (softmax cross-entropy, the default) or "bce" (sigmoid + binary cross-entropy against one-hot
targets, mean over N * classes: the DRTP reference code's loss, for its BP baseline).
"""

from .. import functional as F
from .base import Trainer


LOSSES = ("ce", "bce")


class OutputLoss:
    """The loss at the network's output, shared by backprop and the feedback-alignment trainers:
    `output_loss(logits, y)` -> (loss, dlogits), softmax cross-entropy (with label smoothing) or sigmoid + binary
    cross-entropy. The alignment probe compares a method with backprop on this same loss."""

    def _init_loss(self, loss, label_smoothing):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}.")
        if loss == "bce" and label_smoothing:
            raise ValueError("label smoothing applies to the cross-entropy loss (ce), not to bce.")
        self.loss, self.label_smoothing = loss, label_smoothing

    def output_loss(self, logits, y):
        if self.loss == "bce":
            return F.sigmoid_binary_cross_entropy(logits, y)
        return F.softmax_cross_entropy(logits, y, self.label_smoothing)


class BackpropTrainer(OutputLoss, Trainer):
    name = "bp"
    parallel: tuple = ("sync", "downpour")  # data-parallel: each worker a whole model copy (runtime/registry.py)

    def __init__(self, model, make_optimizer, label_smoothing=0.0, loss="ce"):
        super().__init__(model)
        self._init_loss(loss, label_smoothing)
        self.optimizer = make_optimizer(model.parameters())

    def optimizers(self):
        return [self.optimizer]

    def train_step(self, x, y):
        # BEGIN SOLUTION a2-bp-train-step
        # hint: forward through every block, self.output_loss at the top, backward from the top block down (block
        # hint: 0 needs no input gradient), then step the optimizer
        blocks = self.model.layers
        h = x
        for block in blocks:
            h = block.forward(h)
        loss, grad = self.output_loss(h, y)
        for i in reversed(range(len(blocks))):
            # The gradient of block i's output is what block i+1 sent back. The first block's input is the
            # data, which needs no gradient.
            grad = blocks[i].backward(grad, need_input_grad=i > 0)
        self.optimizer.step()
        # END SOLUTION
        return loss
