"""The interface every training method implements.

A trainer owns a model (a `Sequential` of blocks) and the optimizers that update it. Each method answers
one question — *where does each block's gradient come from?* — inside `train_step`; everything else
(data, epochs, evaluation, checkpoints, progress) is the shared loop in `tinydgl.train`.
"""
import numpy as np

from .. import functional as F
from ..backend import to_numpy


class Trainer:
    """Base class. Subclasses set `name` and implement `train_step`; most also override `optimizers`."""

    name = "trainer"

    def __init__(self, model):
        self.model = model

    def train_step(self, x, y) -> float:
        """One update on a mini-batch x: (N, C, H, W), y: (N,) ints. Returns the loss reported for it."""
        raise NotImplementedError

    def optimizers(self) -> list:
        """Every optimizer this trainer steps, in a fixed order (saved in checkpoints)."""
        return []

    def auxiliary_modules(self) -> dict:
        """Trained modules outside the model (auxiliary heads, synthesizers), by stable name."""
        return {}

    def start_epoch(self, epoch: int):
        """Called by the training loop before each epoch (0-based); e.g. greedy training picks its stage."""

    def predict(self, x):
        """Logits (N, classes) of the whole model in evaluation mode (inference is a plain forward pass)."""
        self.model.eval()
        try:
            return self.model.forward(x)
        finally:
            self.model.train()

    def evaluate(self, batches) -> dict:
        """Accuracy and mean loss over an iterable of (x, y) batches."""
        correct = total = 0
        loss_sum = 0.0
        for x, y in batches:
            logits = self.predict(x)
            loss, _ = F.softmax_cross_entropy(logits, y)
            predicted = np.argmax(to_numpy(logits), axis=1)
            correct += int(np.sum(predicted == to_numpy(y)))
            total += int(y.shape[0])
            loss_sum += loss * int(y.shape[0])
        if total == 0:
            raise ValueError("evaluate() got no batches.")
        return {"accuracy": correct / total, "loss": loss_sum / total}

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"model": {name: array}, "aux": {module name: {name: array}}, "optimizers": [state, ...]}."""
        return {
            "model": self.model.state_dict(),
            "aux": {name: m.state_dict() for name, m in self.auxiliary_modules().items()},
            "optimizers": [o.state_dict() for o in self.optimizers()],
        }

    def load_state_dict(self, state: dict):
        self.model.load_state_dict(state["model"])
        for name, module in self.auxiliary_modules().items():
            module.load_state_dict(state["aux"].get(name, {}))
        optimizers = self.optimizers()
        if len(optimizers) != len(state["optimizers"]):
            raise ValueError(f"checkpoint has {len(state['optimizers'])} optimizer states, this trainer has {len(optimizers)}.")
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
