"""`fit` for the parallel engines: epochs of worker runs, an evaluation after each, checkpoints, resume.

Every parallel engine (module-parallel, dp-sync, Downpour) trains one epoch with fresh workers and hands the
learned weights back to the parent's trainer at the end of it. So the parent holds the whole model at every
epoch boundary, which is where `fit_parallel` evaluates it and saves a checkpoint (the same atomic format as
`tinydgl.train.fit`, so `--resume` works the same way: a run stopped mid-epoch, by Ctrl-C, a crash or a
killed worker, resumes from the last finished epoch).

The end of an epoch follows the same protocol as in-process training (`tinydgl.train.evaluation`): the
parent switches its trainer to the evaluation weights (schedule-free optimizers: x), recalibrates batch norm
if asked (`bn_recalibrate` batches of a fresh pass over the training loader, in the parent, which holds
the whole model), tests, and saves that model; before the next epoch it switches back to the training
weights (y), which is what the next epoch's workers receive.

Why no mid-epoch checkpoints here: inside an epoch the workers' modules are at different batches (and,
with replay, at points no serial run passes through), so the epoch boundary is the last point where one
consistent model exists. `--checkpoint-every` applies to in-process runs; a parallel run stopped by
SIGTERM or Ctrl-C resumes from its last finished epoch.
"""
from __future__ import annotations

import time

from ..train.checkpoint import CheckpointError, hold_folder, load_checkpoint, save_checkpoint, where
from ..train.evaluation import evaluate_epoch
from .metrics import work_summary


def load_epoch_checkpoint(checkpoint_dir, resume, trainer):
    """The checkpoint a parallel run resumes from (resume: True/"latest" or "previous"): it must belong to
    this run and sit at an epoch boundary. Returns (state, meta); raises CheckpointError."""
    state, meta = load_checkpoint(checkpoint_dir, "latest" if resume is True else resume, trainer=trainer)
    if meta["step"]:
        raise CheckpointError(f"{checkpoint_dir} holds a mid-epoch checkpoint ({where(meta)}), written by an "
                              f"in-process run; the parallel engines resume at epoch boundaries only. Resume it "
                              f"in-process (without --workers), or with --resume previous if that one is at an "
                              f"epoch boundary.")
    return state, meta


def fit_parallel(run_epoch, trainer, test_loader, epochs, label, checkpoint_dir=None, resume=False, log=print,
                 train_loader=None, bn_recalibrate=0):
    """Train `epochs` epochs (in total, counting resumed ones) with `run_epoch`; returns the history.

    run_epoch(epoch, run_started) -> the engine's metrics of that one epoch, a dict with "seconds",
    "samples_per_second", "train_loss" (a one-element list, or empty), "last_loss" and "workers";
    run_started is the `time.time()` of the fit's start, so the workers' timelines of every epoch share one
    clock. label: how the log line names the engine ("2 workers"). Each history entry: epoch, train_loss,
    test_accuracy, test_loss, seconds, samples_per_second, and every other key of the engine's metrics
    (per-worker metrics, ring statistics, staleness, ...). train_loader, bn_recalibrate: batch-norm
    recalibration before each evaluation (module docstring); train_loader is only read for it.
    """
    if bn_recalibrate < 0:
        raise ValueError(f"bn_recalibrate must be >= 0 (batches), got {bn_recalibrate}.")
    if bn_recalibrate and train_loader is None:
        raise ValueError("bn_recalibrate needs the train_loader to draw its batches from.")
    with hold_folder(checkpoint_dir, trainer, log):  # one run per checkpoint folder, released however fit ends
        history, start = [], 0
        if resume:
            state, meta = load_epoch_checkpoint(checkpoint_dir, resume, trainer)
            trainer.load_state_dict(state)
            history, start = meta["history"], meta["epoch"]
            log(f"resumed from {checkpoint_dir} after epoch {start}")
        run_started = time.time()
        for epoch in range(start, epochs):
            trainer.to_train_weights()  # the workers receive (and the engines return) the training weights
            run = run_epoch(epoch, run_started)
            metrics = evaluate_epoch(trainer, train_loader, test_loader, epoch, bn_recalibrate)
            entry = {"epoch": epoch + 1, "train_loss": run["train_loss"][0] if run.get("train_loss") else run["last_loss"],
                     "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"], "seconds": run["seconds"],
                     "samples_per_second": run["samples_per_second"],
                     "bn_recalibrate_batches": metrics["bn_recalibrate_batches"],
                     "bn_recalibrate_seconds": metrics["bn_recalibrate_seconds"]}
            entry.update({k: v for k, v in run.items() if k not in entry and k not in ("train_loss", "last_loss")})
            history.append(entry)
            recalibrated = (f", BN recalibrated on {entry['bn_recalibrate_batches']} batches"
                            if entry["bn_recalibrate_batches"] else "")
            # samples/s counts what every module learned from; when workers skipped or replayed batches, say so
            work = work_summary(run["workers"]) if run.get("workers") else ""
            log(f"epoch {epoch + 1:3d}/{epochs}  train loss {entry['train_loss']:.4f}  test acc {entry['test_accuracy']:.4f}"
                f"  {entry['seconds']:6.1f}s  {entry['samples_per_second']:7.0f} samples/s  ({label}{recalibrated})"
                + (f"\n              {work}" if work else ""))
            if checkpoint_dir:
                save_checkpoint(checkpoint_dir, trainer, epoch + 1, history, extra={"engine": label})
    return history
