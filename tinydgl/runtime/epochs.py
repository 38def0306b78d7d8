"""The parallel engines' epochs, for the one epoch loop (`tinydgl.train.loop.run_epochs`).

Every parallel engine (module-parallel, dp-sync, Downpour) trains one epoch on fresh workers and hands the
learned weights back to the parent's trainer at its end. So the parent holds the whole model at every epoch
boundary: the loop evaluates it there (the protocol of `tinydgl.train.evaluation`: evaluation weights,
batch-norm recalibration in the parent, test) and saves a checkpoint in `tinydgl.train.fit`'s format, so a
run stopped by Ctrl-C, a crash or a killed worker resumes from its last finished epoch. Inside an epoch the
workers' modules are at different batches (with replay, at points no serial run passes through), so there
are no mid-epoch checkpoints here (`--checkpoint-every` is for in-process runs).
"""

from __future__ import annotations

import time

from ..train.checkpoint import CheckpointError, load_checkpoint, where
from ..train.loop import EpochRun, FitConfig, run_epochs
from .metrics import work_summary


def load_epoch_checkpoint(checkpoint_dir, resume, trainer):
    """The checkpoint a parallel run resumes from (resume: True/"latest" or "previous"): it must belong to
    this run and sit at an epoch boundary. Returns (state, meta); raises CheckpointError."""
    state, meta = load_checkpoint(checkpoint_dir, "latest" if resume is True else resume, trainer=trainer)
    if meta["step"]:
        raise CheckpointError(
            f"{checkpoint_dir} holds a mid-epoch checkpoint ({where(meta)}), written by an "
            f"in-process run; the parallel engines resume at epoch boundaries only. Resume it "
            f"in-process (without --workers), or with --resume previous if that one is at an "
            f"epoch boundary."
        )
    return state, meta


class WorkerEpochs:
    """Epochs on an engine's workers, for `run_epochs`. run_epoch(epoch, run_started) -> the engine's metrics
    of that one epoch, a dict with "seconds", "samples_per_second", "train_loss" (a one-element list, or
    empty), "last_loss" and "workers"; run_started is the `time.time()` of the run's first epoch, so the
    workers' timelines of every epoch share one clock. Every other key goes into the history entry
    (per-worker metrics, ring statistics, staleness, ...)."""

    def __init__(self, run_epoch, trainer):
        self.run_epoch, self.trainer, self.run_started = run_epoch, trainer, None

    def load(self, checkpoint_dir, resume):
        return load_epoch_checkpoint(checkpoint_dir, resume, self.trainer)

    def train(self, epoch, history, stop):
        if self.run_started is None:
            self.run_started = time.time()
        self.trainer.to_train_weights()  # the workers receive (and the engines return) the training weights
        run = self.run_epoch(epoch, self.run_started)
        train_loss = run["train_loss"][0] if run.get("train_loss") else run["last_loss"]
        extra = {k: v for k, v in run.items() if k not in ("train_loss", "last_loss")}
        # samples/s counts what every module learned from; when workers skipped or replayed batches, say so
        note = work_summary(run["workers"]) if run.get("workers") else ""
        return EpochRun(train_loss, run["seconds"], run["samples_per_second"], extra, note)


def epochs_on_workers(
    run_epoch,
    trainer,
    test_loader,
    epochs,
    label,
    checkpoint_dir=None,
    resume=False,
    log=print,
    train_loader=None,
    bn_recalibrate=0,
):
    """Train `epochs` epochs (in total, counting resumed ones) with `run_epoch` (`WorkerEpochs`); returns the
    history. label: how the log line names the engine ("2 workers"). train_loader, bn_recalibrate: batch-norm
    recalibration before each evaluation (module docstring); train_loader is only read for it."""
    config = FitConfig(
        epochs,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        log=log,
        progress=False,
        bn_recalibrate=bn_recalibrate,
        label=label,
    )
    return run_epochs(trainer, train_loader, test_loader, config, WorkerEpochs(run_epoch, trainer))
