"""The interface every training method implements.

A trainer owns a model (a `Sequential` of blocks) and the optimizers that update it. Each method answers
one question — *where does each block's gradient come from?* — inside `train_step`; everything else
(data, epochs, evaluation, checkpoints, progress) is the shared loop in `tinydgl.train`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .. import functional as F
from ..backend import Array, to_numpy
from ..nn import Dropout, Module, Sequential
from ..optim import Optimizer


class Trainer:
    """Base class. Subclasses set `name` and implement `train_step`; most also override `optimizers`."""

    name = "trainer"
    # Which parallel engines can run it ("module", "sync", "downpour": runtime/registry.py); none by default.
    parallel: tuple[str, ...] = ()
    parallel_note = ""  # why not, where a reader would expect it to run in parallel
    # What run this is (model, dataset, parameter-shaping options), recorded in checkpoints and compared on
    # resume (`tinydgl.train.checkpoint.check_fits`); the `tinydgl` command fills it in.
    run_info: dict[str, Any] = {}

    def __init__(self, model: Sequential) -> None:
        self.model = model

    def train_step(self, x: Array, y: Array) -> Array:
        """One update on a mini-batch x: (N, C, H, W), y: (N,) ints. Returns the loss reported for it, a float64
        scalar on the batch's device (`F.float64_scalar`: read on the host only when the loop logs it)."""
        raise NotImplementedError

    def optimizers(self) -> list[Optimizer]:
        """Every optimizer this trainer steps, in a fixed order (saved in checkpoints)."""
        return []

    def auxiliary_modules(self) -> dict[str, Module]:
        """Trained modules outside the model (auxiliary heads, synthesizers), by stable name."""
        return {}

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (0-based); e.g. greedy training picks its stage."""

    # --- where the weights are: training point or evaluation point ---------------------------------------
    def to_train_weights(self) -> None:
        """Before training: every optimizer puts its training weights into the parameters (schedule-free
        optimizers train at y; the others have one set of weights and do nothing)."""
        for optimizer in self.optimizers():
            optimizer.train()

    def to_eval_weights(self) -> None:
        """Before evaluating, recalibrating batch norm or saving the model: the weights to evaluate (x, the
        average, for schedule-free optimizers; a no-op for the others)."""
        for optimizer in self.optimizers():
            optimizer.eval()

    def recalibration_forward(self, x: Array) -> None:
        """One forward pass that only refreshes batch-norm running statistics: training mode (batch
        statistics, running averages updated), no labels, so nothing learns (docs/protocol.md, section 1)."""
        self.model.train()
        self.model.forward(x)
        self.model.forget()  # training mode kept every layer's cache; no backward will use it

    def fresh_samples_per_module(self) -> list[int] | None:
        """Samples each module has learned from for the first time, since construction (a list, one int per
        module), for trainers whose modules may skip or replay batches; None when every module learns from
        every batch the loop feeds, once (then the loop's own count is the work done)."""
        return None

    def predict(self, x: Array) -> Array:
        """Logits (N, classes) of the whole model in evaluation mode (inference is a plain forward pass)."""
        self.model.eval()
        try:
            return self.model.forward(x)
        finally:
            self.model.train()

    def evaluate(self, batches: Iterable[tuple[Array, Array]]) -> dict[str, float]:
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
        return {"accuracy": correct / total, "loss": float(loss_sum / total)}  # the one read of the losses

    # --- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"model": {name: array}, "aux": {module name: {name: array}}, "optimizers": [state, ...]}."""
        return {
            "model": self.model.state_dict(),
            "aux": {name: m.state_dict() for name, m in self.auxiliary_modules().items()},
            "optimizers": [o.state_dict() for o in self.optimizers()],
        }

    def resume_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Everything besides weights and optimizer buffers that the next `train_step` depends on, so that a
        run resumed from a checkpoint (mid-epoch included) continues bit-identically: (arrays, values), a
        dict of arrays for the .npz and a JSON-able dict. Here: the host generators of dropout layers, in the
        model and the auxiliary modules. Trainers with more state (counters, schedules, replay buffers)
        extend both."""
        return {}, {"dropout_rng": [layer.rng.bit_generator.state for layer in self._dropout_layers()]}

    def load_resume_state(self, arrays: dict[str, Any], values: dict[str, Any]) -> None:
        """Restore what `resume_state` returned (after `load_state_dict` and `start_epoch`)."""
        for layer, state in zip(self._dropout_layers(), values.get("dropout_rng", [])):
            layer.rng.bit_generator.state = state

    def _dropout_layers(self) -> Iterator[Dropout]:
        def walk(module: Module) -> Iterator[Dropout]:
            if isinstance(module, Dropout):
                yield module
            for child in module.children():
                yield from walk(child)

        yield from walk(self.model)
        for name in sorted(self.auxiliary_modules()):
            yield from walk(self.auxiliary_modules()[name])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, module in self.auxiliary_modules().items():
            module.load_state_dict(state["aux"].get(name, {}))
        optimizers = self.optimizers()
        if len(optimizers) != len(state["optimizers"]):
            raise ValueError(
                f"checkpoint has {len(state['optimizers'])} optimizer states, this trainer has {len(optimizers)}."
            )
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
