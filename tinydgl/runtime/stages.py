"""What one worker of the module-parallel engines runs (a *stage*), and how a trainer is cut into stages.

Both module-parallel engines (`engine`: processes and shared-memory rings; `mpi_engine`: MPI ranks) cut a
trainer into contiguous groups of *units* and give each worker one group, as a stage. Two kinds of trainer
run there:

- **local trainers** (dgl, lls, lls-m, lls-mxm, drtp, async-dgl): the units are `trainer.modules`; a stage
  is a `ModuleChain`, the worker's modules stepped in order. Nothing crosses a boundary backwards.
- **synthetic-gradient trainers** (dni, cdni): the units are the trainer's groups (the blocks between two
  synthesizers); a stage is a `SyntheticGradientStage`. Its groups update from their synthesizers' guesses
  the moment they have run forward (update unlocking), and the target of the synthesizer at the stage's
  top, the gradient the next stage's lowest group sends to its input, comes back *later*, over a link in
  the backward direction. With BP(lambda) > 0 a stage waits for that gradient before it updates: the run
  is lock-step (update locked, as BP(lambda) is by nature) and equals the in-process trainer.

A stage answers, for the worker loop (`pipeline.pipeline_worker_loop`):

    step(x, y, origin) -> (loss, out)   run the stage on one batch (origin: its data batch number)
    message_below() -> array or None    what this step sends back to the stage below (after `step`)
    expects_from_above() -> bool        whether the stage above will send something back for this batch
    waits_for_above                     True: the step is finished only by `finish(message)` (BP(lambda))
    learn_from_above(message) -> loss   a message came back for the oldest batch waiting for one
    finish(message)                     (waits_for_above) complete this batch's update with the message
    state() -> picklable                what the worker learned, for `load_state` in the parent

and `units`, `unit_output_shapes`, `unit_costs`, `make_stage` and `load_state` say the same for a trainer.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np

from ..backend import asarray, get_backend


def is_synthetic(trainer):
    from ..trainers.dni import DNITrainer

    return isinstance(trainer, DNITrainer)


def check_trainer(trainer):
    """Refuse a trainer the module-parallel engines cannot run; returns (policy, replay_slots, reuse_cap) of
    the links between workers: "fifo" (every unit sees every batch once, in order) or "replay" (async-dgl)."""
    from ..trainers.async_dgl import AsyncDGLTrainer
    from ..trainers.dgl import GreedyTrainer
    from ..trainers.local import LocalTrainer

    if get_backend().name not in ("numpy", "cupy"):
        raise ValueError(f"The module-parallel engine runs on the NumPy or CuPy backend (active backend: "
                         f"{get_backend().name!r}).")
    if is_synthetic(trainer):
        if len(trainer.groups) < 2:
            raise ValueError("This DNI trainer has one group (no synthesizer): nothing to run in parallel.")
        return "fifo", None, None
    if not isinstance(trainer, LocalTrainer) or isinstance(trainer, GreedyTrainer):
        name = getattr(trainer, "name", type(trainer).__name__)
        why = {"fa": " (FA sends gradients down the whole chain, as backprop does)",
               "dfa": " (DFA needs each batch's output error sent back to every module; not yet)",
               "sdfa": " (sDFA needs each batch's output error sent back to every module; not yet)"}.get(name, "")
        raise ValueError(f"The module-parallel engine runs local trainers (dgl, lls, lls-m, lls-mxm, drtp, "
                         f"async-dgl) and synthetic gradients (dni, cdni), got {name!r}{why}. Train it in-process "
                         "instead.")
    if isinstance(trainer, AsyncDGLTrainer):
        if trainer.buffer_codec:
            raise ValueError("The module-parallel engine stores raw activations in its rings; buffer_codec="
                             f"{trainer.buffer_codec!r} is only supported in-process.")
        return "replay", (trainer.buffers[0].capacity if trainer.buffers else 1), \
            (trainer.buffers[0].reuse_cap if trainer.buffers else None)
    return "fifo", None, None


def units(trainer):
    """How many units the trainer can be cut into: its modules, or its DNI groups."""
    return len(trainer.groups) if is_synthetic(trainer) else len(trainer.modules)


def unit_output_shapes(trainer):
    """Shape (without the batch axis) of each unit's output, from a dry run in evaluation mode."""
    from ..trainers.local import block_output_shapes

    return block_output_shapes(trainer.model, trainer.groups if is_synthetic(trainer) else trainer.modules)


def _zero_batch(trainer, batch_size):
    model = trainer.model
    x = asarray(np.zeros((batch_size, *model.input_shape)), dtype=model.parameters()[0].data.dtype)
    y = asarray(np.arange(batch_size) % max(int(getattr(model, "num_classes", 2)), 1))
    return x, y


def unit_costs(trainer, batch_size, repeats=2):
    """Seconds of one training step of each unit on a zero batch (forward, local head or synthesizer,
    backward, update; for a DNI group also the training of its synthesizer on a target, as a worker holding
    the group at a boundary does it: the prediction recomputed, then regression), timed on a deep copy so the trainer's own weights, statistics and optimizer state do
    not move: each unit's share of a pipeline step. (A forward pass alone misleads: the last unit carries
    the classifier and its loss, and backward costs differ from forward's.)"""
    x, y = _zero_batch(trainer, batch_size)
    costs = []
    for j in range(units(trainer)):
        if is_synthetic(trainer):
            scratch = copy.deepcopy(trainer.stage(j, j))
            scratch.bp_lambda = 0.0  # time the group and its synthesizer, not a wait for the stage above
            scratch.update_prob = 1.0

            def run(x, scratch=scratch):
                # the group's step (forward, its synthesizer's guess, backward, update), then what a worker
                # holding it at a boundary does when the target comes back: its synthesizer learns
                loss, out = scratch.stage_step(x, y)
                if scratch._held:
                    scratch.stage_learn_from_above(out * 0)
                return loss, out
        else:
            scratch = copy.deepcopy(trainer.modules[j])

            def run(x, scratch=scratch):
                return scratch.step(x, y)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, out = run(x)
            best = min(best, time.perf_counter() - t0)
        costs.append(best)
        x = out
    return costs


def make_stage(trainer, group, batches_per_epoch, start_epoch):
    """The stage that runs units `group` (contiguous indices) of `trainer` on one worker (picklable)."""
    if is_synthetic(trainer):
        return SyntheticGradientStage(trainer.stage(group[0], group[-1]), batches_per_epoch, start_epoch)
    return ModuleChain([trainer.modules[j] for j in group])


def load_state(trainer, group, state):
    """Copy what a worker learned (`stage.state()`) into the parent's trainer."""
    if is_synthetic(trainer):
        trainer.load_stage(state)
        return
    for j, learned in zip(group, state):
        mine = trainer.modules[j]
        mine.body.load_state_dict(learned["body"])
        if mine.head is not None:
            mine.head.load_state_dict(learned["head"])
        mine.optimizer.load_state_dict(learned["optimizer"])


class ModuleChain:
    """The stage of a local trainer: its modules, each stepped in order (as in synchronous DGL); nothing comes
    back from the stage above."""

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
        return [{"body": m.body.state_dict(), "head": m.head.state_dict() if m.head is not None else None,
                 "optimizer": m.optimizer.state_dict()} for m in self.modules]


class SyntheticGradientStage:
    """The stage of a DNI/cDNI trainer: `part` is `DNITrainer.stage(first, last)`, its groups and the
    synthesizers after them. batches_per_epoch and start_epoch tell it where epochs begin (update_prob's
    draws are seeded by epoch and batch, so every stage draws the same groups for a batch)."""

    def __init__(self, part, batches_per_epoch, start_epoch):
        self.part, self.batches_per_epoch, self.start_epoch = part, int(batches_per_epoch), int(start_epoch)
        self.waits_for_above = part.bp_lambda > 0.0 and part.last_group < len(part.groups) - 1
        self._step = 0

    def step(self, x, y, origin=None):
        if self._step % self.batches_per_epoch == 0:
            self.part.start_epoch(self.start_epoch + self._step // self.batches_per_epoch)
        self._step += 1
        loss, out = self.part.stage_step(x, y)
        if self.part.bp_lambda > 0.0 and not self.waits_for_above:
            self.part.stage_finish(None)  # the top stage: the true gradient is here
        return loss, out

    def message_below(self):
        return self.part.stage_message_below()

    def expects_from_above(self):
        return self.part.stage_expects_from_above()

    def learn_from_above(self, message):
        return self.part.stage_learn_from_above(message)

    def finish(self, message):
        self.part.stage_finish(message)

    def state(self):
        part = copy.copy(self.part)
        part._held = []
        part._synthetic = part._true_gradient = part._to_below = None
        return part
