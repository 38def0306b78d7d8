"""How a model is evaluated at the end of an epoch: the protocol of the LLS authors' code, shared by the
in-process loop (`fit`) and every parallel engine (`runtime.epochs.epochs_on_workers`).

After each epoch's training and before testing (docs/protocol.md, sections 1 and 2, says why):
1. the trainer puts its evaluation weights into the parameters (`to_eval_weights`: a schedule-free
   optimizer's average x; a no-op for every other optimizer);
2. if `bn_recalibrate` = N > 0, the first N batches of a fresh pass over the training loader go through the
   model in training mode, with no labels, so only batch-norm statistics change (`recalibrate_batchnorm`);
3. the model is tested in evaluation mode.
The loop calls `to_train_weights` again before the next epoch's training.
"""

from __future__ import annotations

import time

from ..nn import BatchNorm1d, BatchNorm2d


def _modules(module):
    yield module
    for child in module.children():
        yield from _modules(child)


def has_batchnorm(module) -> bool:
    """Whether any layer of `module` keeps batch-norm running statistics."""
    return any(isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in _modules(module))


def recalibrate_batchnorm(trainer, train_loader, batches, epoch) -> int:
    """Re-estimate the batch-norm running statistics of `trainer`'s model at its current weights.

    train_loader: a `DataLoader` (its `fresh_pass(epoch, batches)` gives the batches: shuffled and augmented
    like training, in an order of their own and reproducible, so a resumed run recalibrates exactly as an
    uninterrupted one). batches: how many (at most one epoch's). Returns the number of batches used (0 when
    the model has no batch norm: then there is nothing to do).
    """
    if batches <= 0 or not has_batchnorm(trainer.model):
        return 0
    if not hasattr(train_loader, "fresh_pass"):
        raise TypeError(
            f"Batch-norm recalibration reads a fresh pass over the training data: the train loader "
            f"must be a tinydgl DataLoader (with fresh_pass), got {type(train_loader).__name__}. "
            f"Pass bn_recalibrate=0 to evaluate without it."
        )
    used = 0
    for x, _ in train_loader.fresh_pass(epoch, batches):
        trainer.recalibration_forward(x)
        used += 1
    return used


def evaluate_epoch(trainer, train_loader, test_loader, epoch, bn_recalibrate=0, also_before=False) -> dict:
    """Steps 1-3 of the module docstring. Returns {"accuracy", "loss", "bn_recalibrate_batches",
    "bn_recalibrate_seconds"}, and with also_before=True "accuracy_before_recalibration" (the same weights
    tested with the statistics the epoch left: what recalibration changed, at the cost of one more test
    pass). Leaves the evaluation weights in the parameters (call `trainer.to_train_weights()` before
    training on)."""
    trainer.to_eval_weights()
    before = trainer.evaluate(test_loader)["accuracy"] if also_before else None
    t0 = time.perf_counter()
    used = recalibrate_batchnorm(trainer, train_loader, bn_recalibrate, epoch)
    seconds = time.perf_counter() - t0
    metrics = trainer.evaluate(test_loader)
    result = {**metrics, "bn_recalibrate_batches": used, "bn_recalibrate_seconds": seconds}
    if also_before:
        result["accuracy_before_recalibration"] = before
    return result
