"""What the `tinydgl` command and the training loop tell a person while things go right: --help for every
option (its default and its choices), progress lines where no progress bar shows, the loss curve kept in the
history, and plots with whole-number epochs (a one-epoch run drawn per step). The bad inputs are in
tests/test_bad_inputs.py."""

import argparse
import math

import numpy as np
import pytest

from tinydgl.cli.checks import DATA_PARALLEL
from tinydgl.cli.parser import build_parser
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.train import FitConfig, TrainingDiverged, batches, fit, load_checkpoint
from tinydgl.trainers import build_trainer


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in ("train", "compare")}


def _options(parser):
    """(flag, action, help with %(default)s filled in) for every option but -h."""
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        text = (action.help or "") % {**vars(action), "prog": parser.prog}
        yield action.option_strings[-1], action, text


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_option_has_help_with_its_default_and_choices(command):
    """Before the fix, --epochs, --batch-size, --optimizer, --weight-decay and --seed had no help at all."""
    for flag, action, text in _options(_subcommands()[command]):
        assert text.strip(), f"{flag} has no help"
        default = action.default
        if default not in (None, False) and not isinstance(action, argparse._StoreConstAction):
            shown = ",".join(default) if isinstance(default, list) else str(default)
            assert "default" in text and (shown in text or isinstance(action, argparse.BooleanOptionalAction)), (
                f"{flag}: the help does not show its default {shown!r}: {text!r}"
            )
        names = list(action.choices or []) or getattr(action.type, "names", [])
        missing = [n for n in names if n not in text and f"{{{','.join(names)}}}" not in text]
        assert not missing or action.choices, f"{flag}: the help leaves out {missing}: {text!r}"


def test_parallel_help_names_every_trainer_that_runs_on_workers():
    """Generated from the registry (runtime/registry.py: what --parallel accepts, per parallelism); before, the
    --workers help left out dni, cdni and downpour."""
    from tinydgl.runtime import registry

    text = next(t for flag, _, t in _options(_subcommands()["train"]) if flag == "--parallel")
    for parallel in registry.parallelisms():
        assert f"{parallel}:" in text, parallel
        for name in registry.trainers_for(parallel):
            assert f"{name}," in text or f"{name};" in text, name
    trainer_help = next(t for flag, _, t in _options(_subcommands()["train"]) if flag == "--trainer")
    assert all(f"{old}" in trainer_help for old in DATA_PARALLEL) and "deprecated" in trainer_help


# --- the training loop -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _run(digits, n_train=256, batch=32, epochs=1, **options):
    """8 batches an epoch of a small mlp trained with backprop; returns (trainer, history, logged lines)."""
    model = build_model("mlp", 1, 28, 10, seed=0, hidden=(32,))
    trainer = build_trainer("bp", model, lambda params: Adam(params, lr=2e-3))
    train = DataLoader(
        digits.x_train[:n_train], digits.y_train[:n_train], batch, seed=0, mean=digits.mean, std=digits.std
    )
    test = DataLoader(digits.x_test[:64], digits.y_test[:64], 64, shuffle=False, mean=digits.mean, std=digits.std)
    lines = []
    history = fit(trainer, train, test, epochs, log=lines.append, **options)
    return trainer, history, lines


class FakeClock:
    """A clock that moves `tick` seconds each time it is read: no sleeping, the same lines on every machine."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


def test_a_progress_line_every_ten_seconds_where_no_bar_shows(digits, monkeypatch):
    """Under pytest stderr is no terminal, so there is no tqdm bar: the loop prints lines instead. The clock
    moves 4 s per read (once at the epoch's start, once per step): lines after steps 3 and 6 (12 s, 24 s)."""
    monkeypatch.setattr(batches, "clock", FakeClock(4.0))
    _, history, lines = _run(digits, progress=True)
    progress = [line for line in lines if "step " in line]
    assert [line.split("step ")[1].split()[0] for line in progress] == ["3/8", "6/8"]
    assert progress[0].startswith("  epoch 1/1  step 3/8  train loss ")
    assert progress[0].endswith(f"  {3 * 32 / 12:.0f} samples/s")  # 96 samples in 12 s


def test_no_progress_lines_when_progress_is_off(digits, monkeypatch):
    monkeypatch.setattr(batches, "clock", FakeClock(100.0))
    _, _, lines = _run(digits, progress=False)
    assert not [line for line in lines if "step " in line]


def test_the_history_keeps_the_loss_of_every_step(digits):
    _, history, _ = _run(digits, progress=False)
    curve = history[0]["loss_curve"]
    assert history[0]["loss_curve_every"] == 1 and len(curve) == 8
    assert np.mean(curve) == pytest.approx(history[0]["train_loss"])  # equal batches: the same mean
    assert curve[-1] < curve[0]


def test_a_config_object_trains_as_the_keywords_do(digits):
    """fit(..., config=FitConfig(...)) is fit(..., **keywords); keywords given beside a config replace its fields
    (here epochs=1 and log)."""
    _, by_keywords, _ = _run(digits, progress=False)
    _, by_config, lines = _run(digits, config=FitConfig(5, progress=False, log=print))
    numbers = ("train_loss", "test_accuracy", "test_loss", "loss_curve")
    assert [[e[k] for k in numbers] for e in by_config] == [[e[k] for k in numbers] for e in by_keywords]
    assert len(by_config) == 1 and lines[-1].startswith("epoch   1/1  train loss ")


def test_a_long_epoch_keeps_at_most_loss_curve_points(digits, monkeypatch):
    monkeypatch.setattr(batches, "LOSS_CURVE_POINTS", 3)  # 8 steps: points of 3, 3 and 2 steps
    _, history, _ = _run(digits, progress=False)
    assert history[0]["loss_curve_every"] == 3 and len(history[0]["loss_curve"]) == 3


def test_the_loss_curve_survives_a_mid_epoch_resume(digits, tmp_path):
    """A checkpoint at step 6 of 8 carries the points so far; resuming from it gives the same curve."""
    _, straight, _ = _run(digits, progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=6)
    _, meta = load_checkpoint(str(tmp_path), "previous")
    assert (meta["epoch"], meta["step"]) == (0, 6)
    _, resumed, _ = _run(digits, progress=False, checkpoint_dir=str(tmp_path), resume="previous")
    assert resumed[0]["loss_curve"] == straight[0]["loss_curve"]


def test_an_overflow_in_a_step_is_divergence_not_a_numpy_warning(digits, recwarn):
    """Adam at a huge rate: its second moment overflows to inf and the weights freeze while the loss stays
    finite. A stand-in step does the same overflow with a finite loss."""
    model = build_model("mlp", 1, 28, 10, seed=0, hidden=(32,))
    trainer = build_trainer("bp", model, lambda params: Adam(params, lr=5.0))
    real = trainer.train_step

    def step(x, y):
        loss = real(x, y)
        np.float32(1e30) * np.float32(1e30)  # what g * g does for a gradient of 1e30
        return loss

    trainer.train_step = step
    train = DataLoader(digits.x_train[:64], digits.y_train[:64], 32, seed=0, mean=digits.mean, std=digits.std)
    with pytest.raises(
        TrainingDiverged,
        match=r"^Training diverged: numbers overflowed to inf in a training step "
        r"\(the loss was [0-9.]+\) at epoch 1, step 1; the learning rate 5 is",
    ):
        fit(trainer, train, train, 1, progress=False, log=lambda *_: None)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# --- plots -------------------------------------------------------------------------------------------------------
def _entry(epoch, curve=None):
    entry = {"epoch": epoch, "train_loss": 1.0 / epoch, "test_accuracy": 0.5 + 0.1 * epoch}
    if curve is not None:
        entry.update(loss_curve=curve, loss_curve_every=2)
    return entry


def test_one_epoch_is_drawn_per_step_with_a_whole_number_epoch_tick():
    """Before the fix: one dot per panel, the epoch axis ticked 0.96, 0.98, ..., 1.04."""
    pytest.importorskip("matplotlib")
    from tinydgl.train.plot import learning_curves

    fig = learning_curves({"bp": [_entry(1, [2.3, 1.2, 0.8])], "dgl": [_entry(1, [2.4, 1.5, 1.0])]})
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_xlabel() == "step (epoch 1)"
    assert [list(line.get_xdata()) for line in ax_loss.get_lines()] == [[2, 4, 6], [2, 4, 6]]
    assert list(ax_loss.get_lines()[0].get_ydata()) == [2.3, 1.2, 0.8]
    assert list(ax_acc.get_xticks()) == [1]


def test_several_epochs_get_whole_number_ticks_and_a_run_without_a_curve_stays_per_epoch():
    pytest.importorskip("matplotlib")
    from tinydgl.train.plot import learning_curves

    fig = learning_curves({"bp": [_entry(e, [1.0]) for e in (1, 2, 3)]})
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    fig = learning_curves({"dp-sync": [_entry(1)]})  # the parallel engines record no curve
    assert fig.axes[0].get_xlabel() == "epoch" and list(fig.axes[0].get_xticks()) == [1]
    assert math.isclose(fig.axes[0].get_lines()[0].get_ydata()[0], 1.0)
