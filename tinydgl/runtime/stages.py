"""What one worker of the module-parallel engines runs (a *stage*), and how a trainer is cut into stages.

The engines cut a trainer's units into contiguous groups, one stage per worker: a local trainer's modules
(`ModuleChain`, trainers/local.py) or DNI's groups and synthesizers (`SyntheticGradientStage`, trainers/dni.py).
A trainer that declares `parallel = ("module",)` (runtime/registry.py) builds its own stages, so no trainer is
named here. A stage's methods, and a trainer's `pipeline_*` methods: docs/design/runtime.md, "Stages".
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..backend import asarray


def talks_back(trainer):
    """Whether the trainer's stages send messages back down (DNI: each synthesizer's target)."""
    return bool(getattr(trainer, "talks_back", False))


def unit_output_shapes(trainer):
    """Shape (without the batch axis) of each unit's output, from a dry run in evaluation mode."""
    from ..trainers.local import block_output_shapes

    return block_output_shapes(trainer.model, trainer.pipeline_units())


def _zero_batch(trainer, batch_size):
    model = trainer.model
    x = asarray(np.zeros((batch_size, *model.input_shape)), dtype=model.parameters()[0].data.dtype)
    y = asarray(np.arange(batch_size) % max(int(getattr(model, "num_classes", 2)), 1))
    return x, y


def unit_costs(trainer, batch_size, repeats=2):
    """Seconds of one training step of each unit on a zero batch (the trainer's `pipeline_unit_step(j)`:
    forward, local head or synthesizer, backward, update, on a deep copy so the trainer's own weights,
    statistics and optimizer state do not move): each unit's share of a pipeline step. (A forward pass
    alone misleads: the last unit carries the classifier and its loss, and backward costs differ from
    forward's.)"""
    x, y = _zero_batch(trainer, batch_size)
    costs = []
    for j in range(len(trainer.pipeline_units())):
        run = trainer.pipeline_unit_step(j)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, out = run(x, y)
            best = min(best, time.perf_counter() - t0)
        costs.append(best)
        x = out
    return costs
