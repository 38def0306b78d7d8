"""The epoch loop every way of training shares: in this process (`fit`), on local worker processes and on MPI
ranks (`tinydgl.runtime.epochs`). Evaluation, the history, the log line, crash-safe checkpoints with exact
resume, and stop signals, written once. Each epoch returns an `EpochRun` (from `batches.BatchLoop` here, from
the workers in parallel runs), then is evaluated, logged and saved: docs/design/training-loop.md.
"""

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .batches import BatchLoop, TrainingDiverged
from .checkpoint import hold_folder, save_checkpoint, where
from .evaluation import evaluate_epoch
from .stopping import RunStopped, StopSignals

__all__ = ["EpochRun", "FitConfig", "TrainingDiverged", "fit", "run_epochs"]


@dataclass
class FitConfig:
    """How a run trains: the keywords of `fit` (its docstring says what each does), shared with the parallel
    engines. label: the engine, named in the log line and the checkpoint ("2 workers"); "" in this process."""

    epochs: int
    checkpoint_dir: str | None = None
    resume: bool | str = False
    progress: bool = True
    log: Callable[[str], Any] = print
    on_epoch_end: Callable[[dict], Any] | None = None
    bn_recalibrate: int = 0
    evaluate_before_recalibration: bool = False
    checkpoint_every: int | None = None
    stop_on_signals: bool = False
    alignment: Any = None
    lr_schedule: str = "constant"
    label: str = ""

    def check(self, trainer, train_loader):
        """Raise ValueError for settings that cannot work together, before anything runs."""
        if self.bn_recalibrate < 0:
            raise ValueError(f"bn_recalibrate must be >= 0 (batches), got {self.bn_recalibrate}.")
        if self.bn_recalibrate and train_loader is None:
            raise ValueError("bn_recalibrate needs the train_loader to draw its batches from.")
        if self.checkpoint_every is not None and (int(self.checkpoint_every) < 1 or not self.checkpoint_dir):
            raise ValueError(
                f"checkpoint_every must be a positive number of steps, with a checkpoint_dir; got "
                f"{self.checkpoint_every} and checkpoint_dir={self.checkpoint_dir!r}."
            )
        if self.alignment is not None:
            self.alignment.check(trainer)


@dataclass
class EpochRun:
    """What training one epoch reports: the mean training loss, the training seconds, the samples every
    module learned from per second; `extra`: more history keys (the loss curve, per-worker metrics, ...);
    `note`: a second log line, or ""."""

    train_loss: float
    seconds: float
    samples_per_second: float
    extra: dict = field(default_factory=dict)
    note: str = ""


def fit(trainer, train_loader, test_loader, epochs=None, config=None, **options):
    """Train for `epochs` epochs (in total, counting any resumed ones) and return the history.

    The options are `FitConfig`'s fields, as keywords (or a whole `config`; keywords given beside it replace
    its fields); what each does: docs/design/training-loop.md. train_loader must have
    `set_epoch(e, start_batch)`, so that a resumed run is exact.
    Raises TrainingDiverged when the loss becomes NaN, infinite or `batches.DIVERGED_FACTOR` times its first
    value, or NumPy reports an overflow or an invalid value in a training step.
    Returns a list with one dict per epoch: epoch, train_loss, test_accuracy, test_loss, seconds (training
    only), samples_per_second, bn_recalibrate_batches, bn_recalibrate_seconds, loss_curve.
    """
    if epochs is not None:
        options["epochs"] = epochs
    config = FitConfig(**options) if config is None else dataclasses.replace(config, **options)
    return run_epochs(trainer, train_loader, test_loader, config, BatchLoop(trainer, train_loader, config))


def run_epochs(trainer, train_loader, test_loader, config, epochs):
    """The epoch loop: resume, train each epoch with `epochs`, evaluate, log, checkpoint; returns the history.

    epochs: what trains one epoch, with `load(checkpoint_dir, resume)` -> (state, meta) of the checkpoint to
    resume from, and `train(epoch, history, stop)` -> EpochRun (stop: the StopSignals, or None).
    `batches.BatchLoop` trains in this process, `runtime.epochs.WorkerEpochs` on the parallel engines.
    train_loader is read only by `epochs` and by batch-norm recalibration.
    """
    config.check(trainer, train_loader)
    signals = StopSignals() if config.stop_on_signals else contextlib.nullcontext()
    # One run per checkpoint folder, from reading the checkpoint to the last save (released however it ends).
    with hold_folder(config.checkpoint_dir, trainer, config.log), signals as stop:
        history, start = [], 0
        if config.resume:
            state, meta = epochs.load(config.checkpoint_dir, config.resume)
            trainer.load_state_dict(state)
            history, start = meta["history"], meta["epoch"]
            config.log(f"resumed from {config.checkpoint_dir} {where(meta)}")
        for epoch in range(start, config.epochs):
            run = epochs.train(epoch, history, stop)
            metrics = evaluate_epoch(
                trainer,
                train_loader,
                test_loader,
                epoch,
                config.bn_recalibrate,
                also_before=config.evaluate_before_recalibration,
            )
            entry = history_entry(epoch, run, metrics)
            history.append(entry)
            config.log(epoch_line(entry, config.epochs, config.label, run.note))
            if config.checkpoint_dir:
                save_checkpoint(
                    config.checkpoint_dir,
                    trainer,
                    epoch + 1,
                    history,
                    extra={"engine": config.label} if config.label else None,
                )
            if config.on_epoch_end is not None:
                config.on_epoch_end(entry)
            if stop is not None and stop.requested and epoch + 1 < config.epochs:
                raise RunStopped(stop.requested, where({"epoch": epoch + 1, "step": 0}), config.checkpoint_dir)
    return history


def history_entry(epoch, run, metrics):
    """The history's dict for one epoch (0-based `epoch`): the run's numbers, the evaluation's, and every
    key of run.extra."""
    entry = {
        "epoch": epoch + 1,
        "train_loss": run.train_loss,
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        "seconds": run.seconds,
        "samples_per_second": run.samples_per_second,
        "bn_recalibrate_batches": metrics["bn_recalibrate_batches"],
        "bn_recalibrate_seconds": metrics["bn_recalibrate_seconds"],
    }
    if "accuracy_before_recalibration" in metrics:
        entry["test_accuracy_before_recalibration"] = metrics["accuracy_before_recalibration"]
    entry.update({k: v for k, v in run.extra.items() if k not in entry})
    return entry


def epoch_line(entry, epochs, label="", note=""):
    """The log line of one history entry: loss, accuracy, time, speed, the engine and batch-norm
    recalibration in brackets, and `note` on a second line."""
    said = [label] if label else []
    if entry["bn_recalibrate_batches"]:
        said.append(
            f"BN recalibrated on {entry['bn_recalibrate_batches']} batches, {entry['bn_recalibrate_seconds']:.1f}s"
        )
    return (
        f"epoch {entry['epoch']:3d}/{epochs}  train loss {entry['train_loss']:.4f}  test acc "
        f"{entry['test_accuracy']:.4f}  {entry['seconds']:6.1f}s  {entry['samples_per_second']:7.0f} samples/s"
        + (f"  ({', '.join(said)})" if said else "")
        + (f"\n              {note}" if note else "")
    )
