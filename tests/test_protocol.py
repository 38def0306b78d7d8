"""The authors' training and evaluation protocol (docs/protocol.md): schedule-free optimizers,
batch-norm recalibration before every test, best and final accuracy, and output paths checked up front."""

import copy
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from tinydgl.cli import main
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.nn import BatchNorm1d, Parameter
from tinydgl.optim import ScheduleFreeAdamW, ScheduleFreeSGD, build_optimizer
from tinydgl.train import fit, load_checkpoint
from tinydgl.train.checkpoint import save_checkpoint
from tinydgl.train.evaluation import has_batchnorm, recalibrate_batchnorm
from tinydgl.trainers import build_trainer

GRADS = [[[0.5, -1.0], [0.3, 0.2]], [[0.2, 0.3], None], [[-0.4, 0.1], [0.1, -0.5]]]  # None: no gradient that step


# --- schedule-free optimizers, against the spec's equations written out independently --------------------
def _by_hand_adamw(lr, b1, b2, eps, wd, warmup):
    """docs/protocol.md, section 2, step by step, for two parameters; returns the y's, z's and the x's."""
    y = [np.array([1.0, -2.0]), np.array([0.5, 0.25])]
    z = [None, None]
    v = [np.zeros(2), np.zeros(2)]
    lr_max, weight_sum = -1.0, 0.0
    for k, grads in enumerate(GRADS):
        sched = (k + 1) / warmup if k < warmup else 1.0
        lr_t = lr * sched * math.sqrt(1 - b2 ** (k + 1))
        lr_max = max(lr_max, lr_t)
        weight = lr_max**2  # r = 0, weight_lr_power = 2
        weight_sum += weight
        c = weight / weight_sum
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = np.array(g)
            if z[i] is None:
                z[i] = y[i].copy()
            v[i] = b2 * v[i] + (1 - b2) * g**2
            gh = g / (np.sqrt(v[i]) + eps) + wd * y[i]
            y[i] = (1 - c) * y[i] + c * z[i]
            y[i] = y[i] + lr_t * (b1 * (1 - c) - 1) * gh
            z[i] = z[i] - lr_t * gh
    x = [(yi - (1 - b1) * zi) / b1 for yi, zi in zip(y, z)]
    return y, z, x


def _run(opt_cls, **kw):
    params = [Parameter(np.array([1.0, -2.0])), Parameter(np.array([0.5, 0.25]))]
    opt = opt_cls(params, **kw)
    for grads in GRADS:
        for p, g in zip(params, grads):
            p.grad = None if g is None else np.array(g)
        opt.step()
    return params, opt


def test_schedule_free_adamw_follows_the_spec_step_by_step():
    kw = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, warmup_steps=2)
    params, opt = _run(ScheduleFreeAdamW, **kw)
    y, z, x = _by_hand_adamw(0.05, 0.9, 0.99, 1e-8, 0.1, 2)
    for p, yi, zi, state in zip(params, y, z, opt.state):
        np.testing.assert_allclose(p.data, yi, rtol=1e-14)
        np.testing.assert_allclose(state["z"], zi, rtol=1e-14)
    opt.eval()
    for p, xi in zip(params, x):
        np.testing.assert_allclose(p.data, xi, rtol=1e-13)
    opt.train()  # and back to y (up to rounding: x -> y is not bit-exact, as in the official code)
    for p, yi in zip(params, y):
        np.testing.assert_allclose(p.data, yi, rtol=1e-13)
    assert opt.steps == 3 and opt.train_mode


def test_schedule_free_sgd_follows_the_spec():
    lr, mu, wd = 0.1, 0.8, 0.01
    params, opt = _run(ScheduleFreeSGD, lr=lr, momentum=mu, weight_decay=wd)
    y = [np.array([1.0, -2.0]), np.array([0.5, 0.25])]
    z = [None, None]
    weight_sum = 0.0
    for grads in GRADS:
        weight_sum += lr**2
        c = lr**2 / weight_sum  # constant lr: c = 1 / (k + 1)
        for i, g in enumerate(grads):
            if g is None:
                continue
            z[i] = y[i].copy() if z[i] is None else z[i]
            g = np.array(g) + wd * y[i]
            y[i] = (1 - c) * y[i] + c * z[i] + lr * (mu * (1 - c) - 1) * g
            z[i] = z[i] - lr * g
    for p, yi in zip(params, y):
        np.testing.assert_allclose(p.data, yi, rtol=1e-14)
    opt.eval()
    for p, yi, zi in zip(params, y, z):
        np.testing.assert_allclose(p.data, (yi - (1 - mu) * zi) / mu, rtol=1e-13)


def test_schedule_free_refuses_to_step_at_the_evaluation_weights_and_swaps_are_idempotent():
    params, opt = _run(ScheduleFreeAdamW, lr=0.01)
    opt.eval()
    x = [p.data.copy() for p in params]
    opt.eval()  # a second eval() must not move the weights again
    assert all(np.array_equal(p.data, xi) for p, xi in zip(params, x))
    for p in params:
        p.grad = np.ones(2)
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    untouched = Parameter(np.array([3.0]))  # never had a gradient: no z, x = y, nothing to move
    lone = ScheduleFreeSGD([untouched], lr=0.1)
    lone.eval()
    lone.train()
    assert untouched.data.tolist() == [3.0]


@pytest.mark.parametrize("name", ["adamw-sf", "sgd-sf"])
def test_schedule_free_state_survives_a_checkpoint_exactly(name, tmp_path):
    """Saved in eval mode (as the loop saves), loaded into a fresh optimizer, switched to train and stepped:
    exactly the numbers of the optimizer that never stopped."""
    model = build_model("mlp", 1, 8, 3, hidden=(5,), seed=0, dtype="float64")
    trainer = build_trainer("bp", model, lambda p: build_optimizer(name, p, lr=0.05))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 1, 8, 8)), rng.integers(0, 3, 6)
    for _ in range(3):
        trainer.train_step(x, y)
    trainer.to_eval_weights()
    save_checkpoint(str(tmp_path), trainer, 1, [])
    state, meta = load_checkpoint(str(tmp_path))
    assert meta["optimizers"][0]["scalars"]["train_mode"] is False
    twin = build_trainer(
        "bp",
        build_model("mlp", 1, 8, 3, hidden=(5,), seed=1, dtype="float64"),
        lambda p: build_optimizer(name, p, lr=0.05),
    )
    twin.load_state_dict(state)
    for t in (trainer, twin):
        t.to_train_weights()
        t.train_step(x, y)
        t.to_eval_weights()
    a, b = trainer.state_dict(), twin.state_dict()
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    assert a["optimizers"][0]["scalars"] == b["optimizers"][0]["scalars"]
    for key in a["optimizers"][0]["buffers"]:
        np.testing.assert_array_equal(a["optimizers"][0]["buffers"][key], b["optimizers"][0]["buffers"][key])


# --- batch-norm recalibration -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _loaders(ds, n_train=512, batch=64, augment=False):
    train = DataLoader(
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        batch,
        seed=0,
        augment=augment,
        hflip=False,
        mean=ds.mean,
        std=ds.std,
        dtype="float64",
    )
    test = DataLoader(ds.x_test[:200], ds.y_test[:200], 100, shuffle=False, mean=ds.mean, std=ds.std, dtype="float64")
    return train, test


def _trainer(name, optimizer="adam", model="mlp", **options):
    m = build_model(model, 1, 28, 10, seed=0, dtype="float64")
    return build_trainer(name, m, lambda p: build_optimizer(optimizer, p, lr=2e-3), **options)


def test_fresh_pass_is_reproducible_and_apart_from_the_training_pass(digits):
    train, _ = _loaders(digits, augment=True)
    first = [x for x, _ in train.fresh_pass(3, 2)]
    again = [x for x, _ in train.fresh_pass(3, 2)]
    assert len(first) == 2 and all(np.array_equal(a, b) for a, b in zip(first, again))
    train.set_epoch(3)
    training = [x for x, _ in train][:2]
    assert not np.array_equal(first[0], training[0])  # another order (and other crops) than epoch 3's training
    assert len(list(train.fresh_pass(0, 1000))) == len(train)  # at most one pass
    assert train.epoch == 4  # a fresh pass does not move the loader's own epoch counter


def test_recalibration_learns_nothing_and_reestimates_the_running_statistics(digits):
    """LLS (heads learn too): after recalibrating on 3 batches every parameter, head and optimizer state is
    bit-identical, and each BN layer's running mean is the momentum-0.1 average of exactly those batches'
    means, computed here by hand from the first BN layer's input."""
    train, test = _loaders(digits)
    trainer = _trainer("lls-m")
    fit(trainer, train, test, 1, progress=False, log=lambda *_: None)
    before = copy.deepcopy(trainer.state_dict())
    bn = next(layer for layer in trainer.model.layers[0].layers if isinstance(layer, BatchNorm1d))
    linear = trainer.model.layers[0].layers[1]  # mlp block 0: Flatten, Linear, BatchNorm1d, ReLU
    expected_mean = np.array(bn.buffers["running_mean"])
    for x, _ in train.fresh_pass(0, 3):
        h = x.reshape(len(x), -1) @ linear.weight.data + linear.bias.data
        expected_mean = 0.9 * expected_mean + 0.1 * h.mean(axis=0)
    assert recalibrate_batchnorm(trainer, train, 3, 0) == 3
    after = trainer.state_dict()
    np.testing.assert_allclose(bn.buffers["running_mean"], expected_mean, rtol=1e-12)
    changed = [k for k in before["model"] if not np.array_equal(before["model"][k], after["model"][k])]
    assert changed and all(k.endswith(("running_mean", "running_var")) for k in changed), changed
    for name in before["aux"]:
        assert all(np.array_equal(before["aux"][name][k], after["aux"][name][k]) for k in before["aux"][name])
    for a, b in zip(before["optimizers"], after["optimizers"]):
        assert a["steps"] == b["steps"] and all(np.array_equal(a["buffers"][k], b["buffers"][k]) for k in a["buffers"])
    assert all(getattr(layer, "_cache", None) is None for layer in trainer.model.layers[0].layers)


def test_recalibration_skips_models_without_batch_norm_and_greedy_keeps_frozen_statistics(digits):
    train, test = _loaders(digits)
    cnn = _trainer("bp", model="cnn")
    assert not has_batchnorm(cnn.model) and recalibrate_batchnorm(cnn, train, 5, 0) == 0
    greedy = _trainer("greedy", modules=2, epochs_per_module=1)
    fit(greedy, train, test, 2, progress=False, log=lambda *_: None)  # stage 1: module 0 is frozen
    frozen = copy.deepcopy(greedy.modules[0].body.state_dict())
    current = copy.deepcopy(greedy.modules[1].body.state_dict())
    recalibrate_batchnorm(greedy, train, 2, 1)
    assert all(np.array_equal(v, greedy.modules[0].body.state_dict()[k]) for k, v in frozen.items())
    assert any(not np.array_equal(v, greedy.modules[1].body.state_dict()[k]) for k, v in current.items())


def test_fit_with_recalibration_and_schedule_free_resumes_bit_exactly(digits, tmp_path):
    """Three epochs straight against one epoch, a checkpoint, and two more: the same bits, because the
    checkpoint holds what was evaluated (x, recalibrated statistics) and the loop swaps back to y."""
    train, test = _loaders(digits, augment=True)
    straight = _trainer("dgl", "adamw-sf")
    history = fit(straight, train, test, 3, progress=False, log=lambda *_: None, bn_recalibrate=3)
    assert [h["bn_recalibrate_batches"] for h in history] == [3, 3, 3]
    _, resumed_test = _loaders(digits, augment=True)
    first = _trainer("dgl", "adamw-sf")
    fit(
        first,
        train,
        resumed_test,
        1,
        checkpoint_dir=str(tmp_path),
        progress=False,
        log=lambda *_: None,
        bn_recalibrate=3,
    )
    resumed = _trainer("dgl", "adamw-sf")
    again = fit(
        resumed,
        train,
        resumed_test,
        3,
        checkpoint_dir=str(tmp_path),
        resume=True,
        progress=False,
        log=lambda *_: None,
        bn_recalibrate=3,
    )
    a, b = straight.state_dict(), resumed.state_dict()
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for oa, ob in zip(a["optimizers"], b["optimizers"]):
        assert oa["scalars"] == ob["scalars"] and oa["scalars"]["train_mode"] is False  # fit ends at x
        for key in oa["buffers"]:
            np.testing.assert_array_equal(oa["buffers"][key], ob["buffers"][key])
    assert [h["test_accuracy"] for h in history] == [h["test_accuracy"] for h in again]


def test_module_parallel_engine_follows_the_same_protocol(digits):
    """fifo dgl in 2 workers with schedule-free AdamW and recalibration gives the in-process weights and
    accuracies: the parent swaps x/y around each epoch and recalibrates the whole model it holds."""
    from tinydgl.runtime import fit_module_parallel

    train, test = _loaders(digits, n_train=256)
    reference = _trainer("dgl", "adamw-sf", modules=2)
    expected = fit(reference, train, test, 2, progress=False, log=lambda *_: None, bn_recalibrate=2)
    trainer = _trainer("dgl", "adamw-sf", modules=2)
    got = fit_module_parallel(trainer, train, test, 2, workers=2, log=lambda *_: None, bn_recalibrate=2, timeout=120)
    a, b = reference.state_dict(), trainer.state_dict()
    for key in a["model"]:
        np.testing.assert_allclose(b["model"][key], a["model"][key], rtol=0, atol=1e-10, err_msg=key)
    assert [h["test_accuracy"] for h in got] == pytest.approx([h["test_accuracy"] for h in expected])
    assert [h["bn_recalibrate_batches"] for h in got] == [2, 2]


def test_schedule_free_learns_real_digits(digits):
    """One epoch of 4,000 real digits with schedule-free AdamW at the paper's rate: far above chance."""
    ds = digits
    train = DataLoader(ds.x_train, ds.y_train, 128, seed=0, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    model = build_model("cnn", 1, 28, 10, seed=0)
    trainer = build_trainer("bp", model, lambda p: build_optimizer("adamw-sf", p, lr=5e-3))
    history = fit(trainer, train, test, 1, progress=False, log=lambda *_: None)
    assert history[0]["test_accuracy"] > 0.9, history


# --- the command: best and final, outputs checked before training ----------------------------------------
def test_metrics_report_final_and_best_with_its_epoch(tmp_path, capsys):
    metrics = tmp_path / "m.json"
    code = main(
        [
            "train",
            "--no-progress",
            "--model",
            "mlp",
            "--limit-train",
            "256",
            "--limit-test",
            "100",
            "--epochs",
            "3",
            "--optimizer",
            "adamw-sf",
            "--bn-recalibrate",
            "2",
            "--metrics-json",
            str(metrics),
        ]
    )
    assert code == 0
    data = json.loads(metrics.read_text())
    accuracies = [h["test_accuracy"] for h in data["history"]]
    assert data["test_accuracy"] == data["final_test_accuracy"] == accuracies[-1]
    assert data["best_test_accuracy"] == max(accuracies)
    assert accuracies[data["best_epoch"] - 1] == max(accuracies)
    assert data["config"]["bn_recalibrate"] == 2 and data["config"]["optimizer"] == "adamw-sf"
    out = capsys.readouterr().out
    assert "BN recalibration on 2 batches" in out and "BN recalibrated on 2 batches" in out
    assert f"test accuracy {accuracies[-1]:.4f}" in out


@pytest.mark.parametrize(
    "option, path, message",
    [
        ("--metrics-json", "/proc/tinydgl/m.json", "cannot write there"),
        ("--plot", "/proc/tinydgl/curves.png", "cannot write there"),
        ("--checkpoint-dir", "/proc/tinydgl/ckpt", "cannot write there"),
        ("--metrics-json", "{tmp}", "is a folder"),
    ],
)
def test_unwritable_outputs_fail_before_training(option, path, message, tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinydgl",
            "train",
            "--no-progress",
            "--epochs",
            "50",
            option,
            path.format(tmp=tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and message in result.stderr and "nothing was trained" in result.stderr
    assert "Traceback" not in result.stderr and "epoch" not in result.stdout
    assert time.perf_counter() - started < 60  # 50 epochs would take minutes: it stopped before training


def test_an_existing_checkpoint_is_not_overwritten_without_resume(tmp_path, capsys):
    base = [
        "train",
        "--no-progress",
        "--model",
        "mlp",
        "--limit-train",
        "128",
        "--limit-test",
        "50",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    assert main(base) == 0
    saved = (tmp_path / "latest.json").read_text()
    assert main(base) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (tmp_path / "latest.json").read_text() == saved
    assert main([*base, "--epochs", "2", "--resume"]) == 0


def test_bn_recalibrate_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--bn-recalibrate", "-1"])
    assert exit_info.value.code == 2 and "must be 0 or more" in capsys.readouterr().err


def test_the_epoch_line_says_what_every_module_learned_from_when_modules_skip(digits):
    """In-process async DGL with a slowed last module: samples/s counts the samples every module learned
    from, and the epoch line says so next to what was fed."""
    train, test = _loaders(digits, n_train=512)
    trainer = _trainer("async-dgl", slow_module=1, slowdown=4.0, buffer_size=1, seed=0)
    lines = []
    history = fit(trainer, train, test, 1, progress=False, log=lines.append)
    entry = history[0]
    assert entry["fed_samples"] == 512 and min(entry["fresh_samples_per_module"]) < 512
    assert entry["samples_per_second"] * entry["seconds"] == pytest.approx(min(entry["fresh_samples_per_module"]))
    assert f"every module learned from {min(entry['fresh_samples_per_module']):,} of the 512 samples fed" in lines[0]
