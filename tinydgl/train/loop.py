"""The training loop every trainer shares: epochs, evaluation, history, progress, divergence guard, and
crash-safe checkpoints with exact resume.

Each epoch: the trainer's training weights go into the parameters (`to_train_weights`), every batch is one
`train_step`, then `evaluation.evaluate_epoch` runs the authors' end-of-epoch protocol (evaluation weights,
optional batch-norm recalibration, test) and the checkpoint saves what was evaluated.
"""
import math
import sys
import time

from ..nn import Dropout
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluation import evaluate_epoch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _dropout_layers(module):
    if isinstance(module, Dropout):
        yield module
    for child in module.children():
        yield from _dropout_layers(child)


def _rng_states(trainer):
    """JSON-able states of every host random generator the model draws from during training."""
    return [layer.rng.bit_generator.state for layer in _dropout_layers(trainer.model)]


def _set_rng_states(trainer, states):
    for layer, state in zip(_dropout_layers(trainer.model), states):
        layer.rng.bit_generator.state = state


def _progress(iterable, total, desc, enabled):
    """A tqdm bar when tqdm is installed and stderr is a terminal; otherwise the plain iterable."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
        except ImportError:
            pass
    return iterable


def fit(trainer, train_loader, test_loader, epochs, checkpoint_dir=None, resume=False, progress=True, log=print,
        on_epoch_end=None, bn_recalibrate=0, evaluate_before_recalibration=False):
    """Train for `epochs` epochs (in total, counting any resumed ones) and return the history.

    train_loader / test_loader: iterables of (x, y) batches; train_loader must have `set_epoch(e)` so each
    epoch's order depends only on (seed, epoch), which is what makes a resumed run exact.
    checkpoint_dir: save after every epoch (atomically); with resume=True, continue from the last save.
    bn_recalibrate: before every evaluation, re-estimate batch-norm statistics on this many batches of a
    fresh pass over train_loader (the LLS authors' protocol, `evaluation.py`; 0: evaluate with the
    statistics the epoch left; the `tinydgl` command's default is 50). evaluate_before_recalibration: also
    test before recalibrating (history key test_accuracy_before_recalibration), to see what it changed.
    Schedule-free optimizers evaluate, recalibrate and checkpoint at their average x and train at y; when
    fit returns, the parameters hold x (the model to use).
    Returns a list with one dict per epoch: epoch, train_loss, test_accuracy, test_loss, seconds (training
    only), samples_per_second (samples every module learned from, per training second),
    bn_recalibrate_batches, bn_recalibrate_seconds.
    """
    if bn_recalibrate < 0:
        raise ValueError(f"bn_recalibrate must be >= 0 (batches), got {bn_recalibrate}.")
    history, start = [], 0
    if resume:
        state, meta = load_checkpoint(checkpoint_dir)
        trainer.load_state_dict(state)
        _set_rng_states(trainer, meta["extra"].get("rng_states", []))
        history, start = meta["history"], meta["epoch"]
        log(f"resumed from {checkpoint_dir} after epoch {start}")
    for epoch in range(start, epochs):
        train_loader.set_epoch(epoch)
        trainer.start_epoch(epoch)
        trainer.to_train_weights()
        trainer.model.train()
        fresh_before = trainer.fresh_samples_per_module()
        loss_sum, samples, steps = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = _progress(train_loader, len(train_loader), f"epoch {epoch + 1}/{epochs}", progress)
        for x, y in bar:
            loss = trainer.train_step(x, y)
            steps += 1
            if not math.isfinite(loss):
                where = f"; the last good checkpoint is in {checkpoint_dir}" if checkpoint_dir and epoch > 0 else ""
                raise TrainingDiverged(
                    f"The loss became {loss} at epoch {epoch + 1}, step {steps}{where}. "
                    "Try a smaller learning rate (--lr)."
                )
            n = int(y.shape[0])
            loss_sum += loss * n
            samples += n
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.3f}", samples_s=f"{samples / (time.perf_counter() - t0):.0f}")
        seconds = time.perf_counter() - t0
        if samples == 0:
            raise ValueError("The training data produced no batches.")
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
            save_checkpoint(checkpoint_dir, trainer, epoch + 1, history, extra={"rng_states": _rng_states(trainer)})
        if on_epoch_end is not None:
            on_epoch_end(entry)
    return history
