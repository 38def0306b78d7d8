"""The epoch loop every way of training shares: in this process (`fit`), on local worker processes and on MPI
ranks (`tinydgl.runtime.epochs`). Evaluation, the history, the log line, crash-safe checkpoints with exact
resume, and stop signals, written once.

Each epoch: something trains it (`batches.BatchLoop` here, batch by batch; the parallel engines on fresh
workers) and returns an `EpochRun`; then `evaluation.evaluate_epoch` runs the authors' end-of-epoch protocol
(evaluation weights, optional batch-norm recalibration, test), the history gets its entry, the log its line,
and the checkpoint saves what was evaluated.
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
            raise ValueError(f"checkpoint_every must be a positive number of steps, with a checkpoint_dir; got "
                             f"{self.checkpoint_every} and checkpoint_dir={self.checkpoint_dir!r}.")
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
    its fields):
    train_loader / test_loader: iterables of (x, y) batches; train_loader must have `set_epoch(e, start_batch)`
    so each epoch's order depends only on (seed, epoch), which is what makes a resumed run exact.
    checkpoint_dir: save after every epoch (atomically; the last two checkpoints are kept).
    checkpoint_every: also save every N training steps (counted from the run's start), mid-epoch.
    resume: True or "latest" continues from the last save, "previous" from the one before; mid-epoch
    checkpoints resume at the batch after the saved one, and the run ends bit-identical to one never stopped
    (the trainer's `resume_state` carries generators, counters and buffers). The checkpoint must belong to
    a run like this one (same trainer, model and parameter shapes; `checkpoint.check_fits`).
    stop_on_signals: SIGTERM or a first Ctrl-C stop the run after its current step: it saves a checkpoint
    (when checkpoint_dir is set) and raises `stopping.RunStopped`; a second Ctrl-C interrupts at once.
    bn_recalibrate: before every evaluation, re-estimate batch-norm statistics on this many batches of a
    fresh pass over train_loader (the LLS authors' protocol, `evaluation.py`; 0: evaluate with the
    statistics the epoch left; the `tinydgl` command's default is 50). evaluate_before_recalibration: also
    test before recalibrating (history key test_accuracy_before_recalibration), to see what it changed.
    alignment: an `alignment.AlignmentProbe`; its due steps go through it, which measures how close the
    gradients the trainer hands its optimizers are to backprop's (it keeps the records).
    lr_schedule: a name of `tinydgl.optim.LR_SCHEDULES` ("constant", "cooldown"): every optimizer's rate in
    each epoch is its base rate times the schedule's factor for that epoch.
    Schedule-free optimizers evaluate, recalibrate and checkpoint at epoch ends at their average x and train
    at y (mid-epoch checkpoints hold y, the point training continues from); when fit returns, the
    parameters hold x (the model to use).
    progress: a tqdm bar where stderr is a terminal and tqdm is installed; elsewhere a line through `log`
    every `batches.PROGRESS_EVERY_SECONDS`. False: neither. on_epoch_end: called with each history entry.
    Raises TrainingDiverged when the loss becomes NaN or infinite, or `batches.DIVERGED_FACTOR` times its
    first value, or NumPy reports an overflow or an invalid value in a training step: any of these means
    the run has stopped learning.
    Returns a list with one dict per epoch: epoch, train_loss, test_accuracy, test_loss, seconds (training
    only), samples_per_second (samples every module learned from, per training second),
    bn_recalibrate_batches, bn_recalibrate_seconds, loss_curve (up to `batches.LOSS_CURVE_POINTS` means of
    the batch losses, each over loss_curve_every steps in order).
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
            metrics = evaluate_epoch(trainer, train_loader, test_loader, epoch, config.bn_recalibrate,
                                     also_before=config.evaluate_before_recalibration)
            entry = history_entry(epoch, run, metrics)
            history.append(entry)
            config.log(epoch_line(entry, config.epochs, config.label, run.note))
            if config.checkpoint_dir:
                save_checkpoint(config.checkpoint_dir, trainer, epoch + 1, history,
                                extra={"engine": config.label} if config.label else None)
            if config.on_epoch_end is not None:
                config.on_epoch_end(entry)
            if stop is not None and stop.requested and epoch + 1 < config.epochs:
                raise RunStopped(stop.requested, where({"epoch": epoch + 1, "step": 0}), config.checkpoint_dir)
    return history


def history_entry(epoch, run, metrics):
    """The history's dict for one epoch (0-based `epoch`): the run's numbers, the evaluation's, and every
    key of run.extra."""
    entry = {"epoch": epoch + 1, "train_loss": run.train_loss, "test_accuracy": metrics["accuracy"],
             "test_loss": metrics["loss"], "seconds": run.seconds, "samples_per_second": run.samples_per_second,
             "bn_recalibrate_batches": metrics["bn_recalibrate_batches"],
             "bn_recalibrate_seconds": metrics["bn_recalibrate_seconds"]}
    if "accuracy_before_recalibration" in metrics:
        entry["test_accuracy_before_recalibration"] = metrics["accuracy_before_recalibration"]
    entry.update({k: v for k, v in run.extra.items() if k not in entry})
    return entry


def epoch_line(entry, epochs, label="", note=""):
    """The log line of one history entry: loss, accuracy, time, speed, the engine and batch-norm
    recalibration in brackets, and `note` on a second line."""
    said = [label] if label else []
    if entry["bn_recalibrate_batches"]:
        said.append(f"BN recalibrated on {entry['bn_recalibrate_batches']} batches, "
                    f"{entry['bn_recalibrate_seconds']:.1f}s")
    return (f"epoch {entry['epoch']:3d}/{epochs}  train loss {entry['train_loss']:.4f}  test acc "
            f"{entry['test_accuracy']:.4f}  {entry['seconds']:6.1f}s  {entry['samples_per_second']:7.0f} samples/s"
            + (f"  ({', '.join(said)})" if said else "") + (f"\n              {note}" if note else ""))
