"""One epoch of in-process training, batch by batch: what `loop.run_epochs` calls for `tinydgl.train.fit`.

Every batch is one `train_step`. Around it: resuming in the middle of an epoch, stop signals, mid-epoch
checkpoints, the divergence guard, progress, and the epoch's totals (mean loss, loss curve, samples each
module learned from). A trainer's loss may be a device scalar (a 0-d CuPy array): the losses are read to the
host together, once every LOSS_READ_EVERY steps and before each checkpoint (one host sync), in step order,
so the numbers are those of a read after every step. Host losses (NumPy) are read at once.
"""

import math
import numbers
import sys
import time

import numpy as np

from ..backend import array_namespace, to_numpy
from ..optim import scheduled_lr
from .checkpoint import last_checkpoint_note, load_checkpoint, save_checkpoint, where
from .stopping import RunStopped

# Where no progress bar shows (output piped, or tqdm not installed), a line every this many seconds.
PROGRESS_EVERY_SECONDS = 10.0
# The history keeps up to this many points of each epoch's training loss (means over equal runs of steps),
# enough to draw a one-epoch run's curve and small in every checkpoint's JSON.
LOSS_CURVE_POINTS = 50
# A loss this many times its first value in the run (or than 1, if that was smaller) has diverged: the numbers
# may still be finite (batch norm keeps an mlp's activations in range at --lr 1e9, its loss reaching 1e19),
# but no run that learns gets there.
DIVERGED_FACTOR = 1000.0
# Losses that live on a device are read every this many steps (one host sync for all of them); a divergence
# is then found up to this many steps late, and still reported at the step where it happened.
LOSS_READ_EVERY = 16
# What ProgressLines reads the time from; tests replace it with a fake clock.
clock = time.monotonic
HOST_NUMBERS = (numbers.Real, np.generic, np.ndarray)


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
    cause = (
        f"the learning rate {max(rates):g} is likely too high: try a smaller one (--lr)"
        if rates
        else "try a smaller learning rate (--lr)"
    )
    saved = last_checkpoint_note(checkpoint_dir)  # only a checkpoint that exists is offered
    saved = f" {saved[0].upper()}{saved[1:]}." if saved else ""
    return TrainingDiverged(f"Training diverged: {problem} at epoch {epoch}, step {step}; {cause}.{saved}")


def host_losses(losses):
    """The losses as Python floats; those on a device come over together, in one transfer (one host sync)."""
    values = [float(loss) if isinstance(loss, HOST_NUMBERS) else None for loss in losses]
    on_device = [i for i, value in enumerate(values) if value is None]
    if on_device:
        xp = array_namespace(losses[on_device[0]])
        read = to_numpy(xp.stack([losses[i].astype(xp.float64) for i in on_device])).tolist()
        for i, value in zip(on_device, read):
            values[i] = value
    return values


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

            return tqdm(
                iterable, total=total, initial=initial, desc=desc, leave=False, unit="batch", dynamic_ncols=True
            )
        except ImportError:
            pass
    return iterable


class EpochTotals:
    """The epoch's running totals: loss sum and samples (the mean loss), steps, training seconds before a
    resume, the samples each module had learned from at the epoch's start, and the loss curve (its points,
    and the sum and count of the next one). `partial`: the totals a mid-epoch checkpoint saved."""

    def __init__(self, batches_per_epoch, fresh_before, partial=None):
        self.curve_every = max(1, math.ceil(batches_per_epoch / LOSS_CURVE_POINTS))  # steps per point
        partial = partial or {"loss_sum": 0.0, "samples": 0, "steps": 0, "seconds": 0.0, "fresh_before": fresh_before}
        self.loss_sum, self.samples, self.steps = partial["loss_sum"], partial["samples"], partial["steps"]
        self.seconds_before, self.fresh_before = partial["seconds"], partial["fresh_before"]
        self.curve = list(partial.get("loss_curve", []))
        self.curve_open = list(partial.get("loss_curve_open", [0.0, 0]))

    def add(self, loss, n):
        """A step's loss (a Python float) over n samples."""
        self.loss_sum += loss * n
        self.samples += n
        self.curve_open = [self.curve_open[0] + loss, self.curve_open[1] + 1]
        if self.curve_open[1] == self.curve_every:
            self.curve.append(self.curve_open[0] / self.curve_open[1])
            self.curve_open = [0.0, 0]

    def saved(self, seconds):
        """What a mid-epoch checkpoint keeps of these totals, after `seconds` of training in this epoch."""
        return {
            "loss_sum": self.loss_sum,
            "samples": self.samples,
            "steps": self.steps,
            "seconds": self.seconds_before + seconds,
            "fresh_before": self.fresh_before,
            "loss_curve": self.curve,
            "loss_curve_open": self.curve_open,
        }

    def finish(self, seconds, trainer):
        """The epoch's `loop.EpochRun`: mean loss, seconds, samples/s, the curve and, for trainers whose
        modules skip or replay batches (async DGL), what every module learned from."""
        from .loop import EpochRun

        if self.samples == 0:
            raise ValueError("The training data produced no batches.")
        if self.curve_open[1]:
            self.curve.append(self.curve_open[0] / self.curve_open[1])
        extra = {"loss_curve": self.curve, "loss_curve_every": self.curve_every}
        learned, note, fresh_after = self.samples, "", trainer.fresh_samples_per_module()
        if fresh_after is not None:
            before = self.fresh_before or [0] * len(fresh_after)
            fresh = [after - start for after, start in zip(fresh_after, before)]
            learned = min(fresh)
            extra.update(fed_samples=self.samples, fresh_samples_per_module=fresh)
            if learned != self.samples:
                note = (
                    f"every module learned from {learned:,} of the {self.samples:,} samples fed (fresh per "
                    f"module: {', '.join(f'{n:,}' for n in fresh)})"
                )
        return EpochRun(self.loss_sum / self.samples, seconds, learned / seconds, extra, note)


class BatchLoop:
    """In-process epochs for `loop.run_epochs`: `load` reads a checkpoint (mid-epoch ones too), `train` runs
    one epoch's batches. Keeps what a resume hands over and the run's first loss (the divergence guard's
    reference), so one BatchLoop serves one run."""

    def __init__(self, trainer, train_loader, config):
        self.trainer, self.loader, self.config = trainer, train_loader, config
        self.start_step, self.partial, self.resume_state = 0, None, None
        self.first_loss = None
        self.unread = []  # (loss, batch size, step, NumPy's floating-point error) of steps not yet read

    def load(self, checkpoint_dir, resume):
        """(state, meta) of the checkpoint to resume from; remembers where in the epoch it was taken."""
        state, meta = load_checkpoint(checkpoint_dir, "latest" if resume is True else resume, trainer=self.trainer)
        self.start_step, self.partial = meta["step"], meta.get("progress")
        self.resume_state = (state["resume"], meta.get("trainer_state") or {})
        return state, meta

    def start(self, epoch):
        """Set the epoch up (batch order, trainer state, learning rate, training weights); returns the
        batch it starts at (after a mid-epoch resume, the one after the saved one)."""
        trainer, first = self.trainer, self.start_step
        self.start_step = 0
        self.loader.set_epoch(epoch, first)
        # The trainer's state as saved, in the order of an uninterrupted run: a checkpoint at an epoch boundary
        # was taken before this epoch's start_epoch, one mid-epoch after it (start_epoch may reset positions).
        if self.resume_state is not None and not first:
            trainer.load_resume_state(*self.resume_state)
            self.resume_state = None
        trainer.start_epoch(epoch)
        if hasattr(trainer, "set_epoch_length"):  # e.g. async DGL's per-module epochs
            trainer.set_epoch_length(len(self.loader))
        if self.resume_state is not None:
            trainer.load_resume_state(*self.resume_state)
            self.resume_state = None
        scheduled_lr(trainer.optimizers(), self.config.lr_schedule, epoch + 1, self.config.epochs)
        trainer.to_train_weights()
        trainer.model.train()
        return first

    def train(self, epoch, history, stop):
        """One epoch from its start (or the resumed batch) to its end; returns its `loop.EpochRun`. history:
        the run's so far (mid-epoch checkpoints hold it). Raises RunStopped after saving when `stop` asks,
        TrainingDiverged (`check`)."""
        config, trainer, total = self.config, self.trainer, len(self.loader)
        first = self.start(epoch)
        totals = EpochTotals(total, trainer.fresh_samples_per_module(), self.partial if first else None)
        self.partial = None
        t0 = time.perf_counter()
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = _progress(self.loader, total, desc, config.progress, initial=first)
        self.bar = bar if hasattr(bar, "set_postfix") else None  # a tqdm bar
        self.lines = ProgressLines(desc, total, config.log) if config.progress and not self.bar else None
        step = (
            trainer.train_step
            if config.alignment is None
            else (lambda x, y: config.alignment.train_step(trainer, x, y))
        )
        for x, y in bar:
            with FloatingPointErrors() as numbers:
                loss = step(x, y)
            totals.steps += 1
            self.unread.append((loss, int(y.shape[0]), totals.steps, numbers.first))
            stopping = stop is not None and stop.requested
            every = config.checkpoint_every and (epoch * total + totals.steps) % config.checkpoint_every == 0
            save = config.checkpoint_dir and (stopping or every) and totals.steps < total
            if save or numbers.first or len(self.unread) >= (1 if isinstance(loss, HOST_NUMBERS) else LOSS_READ_EVERY):
                self.read_losses(totals, epoch, t0)
            if save:
                t_save = time.perf_counter()
                save_checkpoint(
                    config.checkpoint_dir,
                    trainer,
                    epoch,
                    history,
                    step=totals.steps,
                    progress=totals.saved(t_save - t0),
                )
                t0 += time.perf_counter() - t_save  # saving is not training time
            if stopping and totals.steps < total:
                if hasattr(bar, "close"):
                    bar.close()
                raise RunStopped(stop.requested, where({"epoch": epoch, "step": totals.steps}), config.checkpoint_dir)
        self.read_losses(totals, epoch, t0)
        end_epoch = getattr(trainer, "end_epoch", None)
        if end_epoch is not None:  # e.g. async DGL's per-module epochs finish on batches of another pass
            end_epoch(lambda: self.loader.fresh_pass(epoch, total, stream=3))
        return totals.finish(totals.seconds_before + time.perf_counter() - t0, trainer)

    def read_losses(self, totals, epoch, t0):
        """Read the unread steps' losses (one host sync for those on a device) and take them in step order:
        the divergence guard, the totals, the progress bar or lines."""
        for value, (_, n, step, problem) in zip(host_losses([u[0] for u in self.unread]), self.unread):
            self.check(value, problem, epoch, step)
            totals.add(value, n)
            if self.bar is not None:
                rate = totals.samples / (time.perf_counter() - t0)
                self.bar.set_postfix(loss=f"{value:.3f}", samples_s=f"{rate:.0f}")
            if self.lines is not None:
                self.lines.update(step, totals.loss_sum / totals.samples, n)
        self.unread = []

    def check(self, loss, problem, epoch, step):
        """The divergence guard: raises TrainingDiverged when the loss is not finite, NumPy reported an
        overflow or invalid value in the step (`problem`), or the loss grew DIVERGED_FACTOR times."""
        where_ = (epoch + 1, step, self.trainer, self.config.checkpoint_dir)
        if not math.isfinite(loss):
            raise diverged(f"the loss became {loss}", *where_)
        if problem:
            what = "numbers overflowed to inf" if problem == "overflow" else "NaN appeared"
            raise diverged(f"{what} in a training step (the loss was {loss:.3g})", *where_)
        self.first_loss = loss if self.first_loss is None else self.first_loss
        if loss > DIVERGED_FACTOR * max(self.first_loss, 1.0):
            raise diverged(f"the loss grew to {loss:.3g} (from {self.first_loss:.3g} at the run's first step)", *where_)
