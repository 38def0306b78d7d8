"""The training loop every trainer shares: epochs, evaluation, history, progress, divergence guard, and
crash-safe checkpoints with exact resume.

Each epoch: the trainer's training weights go into the parameters (`to_train_weights`), every batch is one
`train_step`, then `evaluation.evaluate_epoch` runs the authors' end-of-epoch protocol (evaluation weights,
optional batch-norm recalibration, test) and the checkpoint saves what was evaluated.
"""
import contextlib
import math
import sys
import time

import numpy as np

from ..optim import scheduled_lr
from .checkpoint import hold_folder, last_checkpoint_note, load_checkpoint, save_checkpoint, where
from .evaluation import evaluate_epoch
from .stopping import RunStopped, StopSignals


# Where no progress bar shows (output piped, or tqdm not installed), a line every this many seconds.
PROGRESS_EVERY_SECONDS = 10.0
# The history keeps up to this many points of each epoch's training loss (means over equal runs of steps),
# enough to draw a one-epoch run's curve and small in every checkpoint's JSON.
LOSS_CURVE_POINTS = 50
# A loss this many times its first value in the run (or than 1, if that was smaller) has diverged: the numbers
# may still be finite (batch norm keeps an mlp's activations in range at --lr 1e9, its loss reaching 1e19),
# but no run that learns gets there.
DIVERGED_FACTOR = 1000.0
# What ProgressLines reads the time from; tests replace it with a fake clock.
clock = time.monotonic


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or numbers overflowed during a training step."""


class FloatingPointErrors:
    """Context manager: while active, NumPy's overflow and invalid-value errors (inf, or NaN from inf - inf)
    are recorded in `first` ("overflow", "invalid value") instead of each printing a RuntimeWarning with a
    source path. tinydgl's ops are written to stay in range (a stable softmax, log1p(exp(-|z|)), ...), so in a
    training step such an error means the numbers are blowing up: Adam's second moment overflowing to inf,
    for one, stops the weights (a step of m / sqrt(inf) is 0) while the loss stays finite. Not seen: CuPy's
    GPU arithmetic, and work on other threads (NumPy's error state is per thread)."""

    def __init__(self):
        self.first = None

    def __call__(self, kind, flag):
        self.first = self.first or kind

    def __enter__(self):
        self._state = np.errstate(over="call", invalid="call", call=self)
        self._state.__enter__()
        return self

    def __exit__(self, *exc):
        return self._state.__exit__(*exc)


def diverged(problem, epoch, step, trainer, checkpoint_dir):
    """The TrainingDiverged to raise: what happened where, the likely cause, and what was saved."""
    rates = [opt.lr for opt in trainer.optimizers() if getattr(opt, "lr", None) is not None]
    cause = (f"the learning rate {max(rates):g} is likely too high: try a smaller one (--lr)" if rates else
             "try a smaller learning rate (--lr)")
    saved = last_checkpoint_note(checkpoint_dir)  # only a checkpoint that exists is offered
    saved = f" {saved[0].upper()}{saved[1:]}." if saved else ""
    return TrainingDiverged(f"Training diverged: {problem} at epoch {epoch}, step {step}; {cause}.{saved}")


class ProgressLines:
    """Where no progress bar shows (output piped to a file, or tqdm not installed): a line every `every`
    seconds, so that a long epoch is not silent until it ends. The time comes from the module's `clock`."""

    def __init__(self, desc, total, log, every=PROGRESS_EVERY_SECONDS):
        self.desc, self.total, self.log, self.every = desc, total, log, every
        self.started = self.last = clock()
        self.samples = 0

    def update(self, step, mean_loss, batch_size):
        """After each step: `step` of `total` done, the epoch's mean loss so far, the step's batch size."""
        self.samples += batch_size
        now = clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.samples / (now - self.started)
        self.log(f"  {self.desc}  step {step}/{self.total}  train loss {mean_loss:.4f}  {rate:.0f} samples/s")


def _progress(iterable, total, desc, enabled, initial=0):
    """A tqdm bar when tqdm is installed and stderr is a terminal; otherwise the plain iterable."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, initial=initial, desc=desc, leave=False, unit="batch",
                        dynamic_ncols=True)
        except ImportError:
            pass
    return iterable


def fit(trainer, train_loader, test_loader, epochs, checkpoint_dir=None, resume=False, progress=True, log=print,
        on_epoch_end=None, bn_recalibrate=0, evaluate_before_recalibration=False, checkpoint_every=None,
        stop_on_signals=False, alignment=None, lr_schedule="constant"):
    """Train for `epochs` epochs (in total, counting any resumed ones) and return the history.

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
    every PROGRESS_EVERY_SECONDS (`ProgressLines`). False: neither.
    Raises TrainingDiverged when the loss becomes NaN or infinite, or DIVERGED_FACTOR times its first value,
    or NumPy reports an overflow or an invalid value in a training step (`FloatingPointErrors`): any of these
    means the run has stopped learning.
    Returns a list with one dict per epoch: epoch, train_loss, test_accuracy, test_loss, seconds (training
    only), samples_per_second (samples every module learned from, per training second),
    bn_recalibrate_batches, bn_recalibrate_seconds, loss_curve (up to LOSS_CURVE_POINTS means of the batch
    losses, each over loss_curve_every steps in order).
    """
    if bn_recalibrate < 0:
        raise ValueError(f"bn_recalibrate must be >= 0 (batches), got {bn_recalibrate}.")
    if checkpoint_every is not None and (int(checkpoint_every) < 1 or not checkpoint_dir):
        raise ValueError(f"checkpoint_every must be a positive number of steps, with a checkpoint_dir; got "
                         f"{checkpoint_every} and checkpoint_dir={checkpoint_dir!r}.")
    if alignment is not None:
        alignment.check(trainer)
    history, start, start_step, partial, pending = [], 0, 0, None, None
    first_loss = None
    # One run per checkpoint folder, from reading the checkpoint to the last save (released however fit ends).
    with hold_folder(checkpoint_dir, trainer, log), StopSignals() if stop_on_signals else contextlib.nullcontext() as stop:
        if resume:
            state, meta = load_checkpoint(checkpoint_dir, "latest" if resume is True else resume, trainer=trainer)
            trainer.load_state_dict(state)
            history, start, start_step, partial = meta["history"], meta["epoch"], meta["step"], meta.get("progress")
            pending = (state["resume"], meta.get("trainer_state") or {})
            log(f"resumed from {checkpoint_dir} {where(meta)}")
        batches_per_epoch = len(train_loader)
        for epoch in range(start, epochs):
            first = start_step if epoch == start else 0
            train_loader.set_epoch(epoch, first)
            # The trainer's state as saved, in the order of an uninterrupted run: a checkpoint at an epoch boundary
            # was taken before this epoch's start_epoch, one mid-epoch after it (start_epoch may reset positions).
            if pending is not None and not first:
                trainer.load_resume_state(*pending)
                pending = None
            trainer.start_epoch(epoch)
            if hasattr(trainer, "set_epoch_length"):  # e.g. async DGL's per-module epochs
                trainer.set_epoch_length(batches_per_epoch)
            if pending is not None:
                trainer.load_resume_state(*pending)
                pending = None
            scheduled_lr(trainer.optimizers(), lr_schedule, epoch + 1, epochs)
            trainer.to_train_weights()
            trainer.model.train()
            if first and partial:
                loss_sum, samples, steps = partial["loss_sum"], partial["samples"], partial["steps"]
                seconds_before, fresh_before = partial["seconds"], partial["fresh_before"]
                curve, curve_open = list(partial.get("loss_curve", [])), list(partial.get("loss_curve_open", [0.0, 0]))
            else:
                loss_sum, samples, steps, seconds_before = 0.0, 0, 0, 0.0
                fresh_before = trainer.fresh_samples_per_module()
                curve, curve_open = [], [0.0, 0]  # the loss curve's points, and the sum and count of the next one
            curve_every = max(1, math.ceil(batches_per_epoch / LOSS_CURVE_POINTS))  # steps per point
            t0 = time.perf_counter()
            desc = f"epoch {epoch + 1}/{epochs}"
            bar = _progress(train_loader, batches_per_epoch, desc, progress, initial=first)
            shown = hasattr(bar, "set_postfix")  # a tqdm bar
            lines = ProgressLines(desc, batches_per_epoch, log) if progress and not shown else None
            for x, y in bar:
                with FloatingPointErrors() as numbers:
                    loss = trainer.train_step(x, y) if alignment is None else alignment.train_step(trainer, x, y)
                steps += 1
                if not math.isfinite(loss):
                    raise diverged(f"the loss became {loss}", epoch + 1, steps, trainer, checkpoint_dir)
                if numbers.first:
                    what = "numbers overflowed to inf" if numbers.first == "overflow" else "NaN appeared"
                    raise diverged(f"{what} in a training step (the loss was {loss:.3g})", epoch + 1, steps, trainer,
                                   checkpoint_dir)
                first_loss = loss if first_loss is None else first_loss
                if loss > DIVERGED_FACTOR * max(first_loss, 1.0):
                    raise diverged(f"the loss grew to {loss:.3g} (from {first_loss:.3g} at the run's first step)",
                                   epoch + 1, steps, trainer, checkpoint_dir)
                n = int(y.shape[0])
                loss_sum += loss * n
                samples += n
                curve_open = [curve_open[0] + loss, curve_open[1] + 1]
                if curve_open[1] == curve_every:
                    curve.append(curve_open[0] / curve_open[1])
                    curve_open = [0.0, 0]
                if shown:
                    bar.set_postfix(loss=f"{loss:.3f}", samples_s=f"{samples / (time.perf_counter() - t0):.0f}")
                if lines is not None:
                    lines.update(steps, loss_sum / samples, n)
                stopping = stop is not None and stop.requested
                every = checkpoint_every and (epoch * batches_per_epoch + steps) % checkpoint_every == 0
                if checkpoint_dir and (stopping or every) and steps < batches_per_epoch:
                    t_save = time.perf_counter()
                    progress_so_far = {"loss_sum": loss_sum, "samples": samples, "steps": steps,
                                       "seconds": seconds_before + t_save - t0, "fresh_before": fresh_before,
                                       "loss_curve": curve, "loss_curve_open": curve_open}
                    save_checkpoint(checkpoint_dir, trainer, epoch, history, step=steps, progress=progress_so_far)
                    t0 += time.perf_counter() - t_save  # saving is not training time
                if stopping and steps < batches_per_epoch:
                    if hasattr(bar, "close"):
                        bar.close()
                    raise RunStopped(stop.requested, where({"epoch": epoch, "step": steps}), checkpoint_dir)
            end_epoch = getattr(trainer, "end_epoch", None)
            if end_epoch is not None:  # e.g. async DGL's per-module epochs finish on batches of another pass
                end_epoch(lambda: train_loader.fresh_pass(epoch, batches_per_epoch, stream=3))
            seconds = seconds_before + time.perf_counter() - t0
            if samples == 0:
                raise ValueError("The training data produced no batches.")
            if curve_open[1]:
                curve.append(curve_open[0] / curve_open[1])
            learned, fresh = samples, None
            fresh_after = trainer.fresh_samples_per_module()
            if fresh_after is not None:
                # modules that skip or replay batches (async DGL): count what every module learned from
                before = fresh_before or [0] * len(fresh_after)
                fresh = [after - start for after, start in zip(fresh_after, before)]
                learned = min(fresh)
            metrics = evaluate_epoch(trainer, train_loader, test_loader, epoch, bn_recalibrate,
                                     also_before=evaluate_before_recalibration)
            entry = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / samples,
                "test_accuracy": metrics["accuracy"],
                "test_loss": metrics["loss"],
                "seconds": seconds,
                "samples_per_second": learned / seconds,
                "bn_recalibrate_batches": metrics["bn_recalibrate_batches"],
                "bn_recalibrate_seconds": metrics["bn_recalibrate_seconds"],
                # the training loss over the epoch: each point the mean batch loss of `loss_curve_every` steps
                "loss_curve": curve,
                "loss_curve_every": curve_every,
            }
            if evaluate_before_recalibration:
                entry["test_accuracy_before_recalibration"] = metrics["accuracy_before_recalibration"]
            if fresh is not None:
                entry["fed_samples"], entry["fresh_samples_per_module"] = samples, fresh
            history.append(entry)
            recalibrated = (f"  (BN recalibrated on {entry['bn_recalibrate_batches']} batches, "
                            f"{entry['bn_recalibrate_seconds']:.1f}s)" if entry["bn_recalibrate_batches"] else "")
            log(
                f"epoch {epoch + 1:3d}/{epochs}  train loss {entry['train_loss']:.4f}  test acc {entry['test_accuracy']:.4f}"
                f"  {seconds:6.1f}s  {entry['samples_per_second']:7.0f} samples/s{recalibrated}"
                + (f"\n              every module learned from {learned:,} of the {samples:,} samples fed (fresh per "
                   f"module: {', '.join(f'{n:,}' for n in fresh)})" if fresh is not None and learned != samples else "")
            )
            if checkpoint_dir:
                save_checkpoint(checkpoint_dir, trainer, epoch + 1, history)
            if on_epoch_end is not None:
                on_epoch_end(entry)
            if stop is not None and stop.requested and epoch + 1 < epochs:
                raise RunStopped(stop.requested, where({"epoch": epoch + 1, "step": 0}), checkpoint_dir)
    return history
