"""Long runs that survive: mid-epoch checkpoints with exact resume, a clean stop on SIGTERM / Ctrl-C,
checkpoints that know their run (a different one is refused), damaged checkpoints refused by name with the
previous one kept, on the bundled real digits."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinydgl.backend import default_rng
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.nn import Dropout
from tinydgl.optim import build_optimizer
from tinydgl.train import CheckpointError, fit, load_checkpoint
from tinydgl.train.stopping import RunStopped
from tinydgl.trainers import build_trainer
from trainer_checks import assert_same_trainer_state as _assert_same_state

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _loaders(ds, n_train=320, batch=64):
    """5 batches an epoch, augmented (so the crops' generators matter too)."""
    train = DataLoader(
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        batch,
        seed=3,
        augment=True,
        hflip=False,
        mean=ds.mean,
        std=ds.std,
        dtype="float64",
    )
    test = DataLoader(ds.x_test[:100], ds.y_test[:100], 100, shuffle=False, mean=ds.mean, std=ds.std, dtype="float64")
    return train, test


# Every kind of state a step can depend on: dropout generators (bp), schedule-free y/z and scalars, DNI's
# seeded update draws and synthesizers, greedy's stage, DGL/LLS heads and fixed bases, async DGL's buffers,
# schedule, warm-up and counters (raw and VQ-coded).
CASES = {
    "bp-dropout-adamw-sf": ("bp", "adamw-sf", {}),
    "dni-update-prob": ("dni", "adam", {"update_prob": 0.6}),
    "cdni": ("cdni", "sgd-sf", {}),
    "greedy": ("greedy", "adam", {"modules": 2, "epochs_per_module": 1}),
    "dgl": ("dgl", "adamw-sf", {"modules": 2}),
    "lls-mxm": ("lls-mxm", "adam", {}),
    "async-dgl": ("async-dgl", "adam", {"modules": 2, "buffer_size": 2, "slow_module": 1, "slowdown": 2.0}),
    "async-dgl-vq": ("async-dgl", "adam", {"modules": 2, "buffer_codec": "vq", "schedule": "round-robin"}),
}


def _trainer(case):
    name, optimizer, options = CASES[case]
    model = build_model("mlp", 1, 28, 10, seed=0, dtype="float64")
    if case.startswith("bp-dropout"):
        model.layers[0].layers.append(Dropout(0.3, rng=default_rng(7)))
    return build_trainer(name, model, lambda p: build_optimizer(optimizer, p, lr=2e-3), **options)


def _stop_with_sigterm_at(trainer, call):
    """Make the trainer's `call`-th train_step (1-based, counted over the run) send SIGTERM to this process,
    as a cluster's pre-emption would; the loop should finish that step, save, and raise RunStopped."""
    real, calls = trainer.train_step, {"n": 0}

    def step(x, y):
        calls["n"] += 1
        loss = real(x, y)
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    trainer.train_step = step


@pytest.mark.parametrize("case", list(CASES))
def test_sigterm_mid_epoch_then_resume_is_bit_identical(case, digits, tmp_path):
    """3 epochs of 5 batches straight, against: SIGTERM during epoch 2's third batch (the loop finishes it,
    checkpoints mid-epoch and stops), then a new process-like start (fresh trainer) resuming to the end."""
    train, test = _loaders(digits)
    straight = _trainer(case)
    expected = fit(straight, train, test, 3, bn_recalibrate=2, **QUIET)

    stopped = _trainer(case)
    _stop_with_sigterm_at(stopped, 5 + 3)
    with pytest.raises(RunStopped) as info:
        fit(stopped, train, test, 3, checkpoint_dir=str(tmp_path), bn_recalibrate=2, stop_on_signals=True, **QUIET)
    assert info.value.exit_code == 143 and "at epoch 2, batch 3" in str(info.value)
    _, meta = load_checkpoint(str(tmp_path))
    assert (meta["epoch"], meta["step"]) == (1, 3)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop put the default handler back

    resumed = _trainer(case)
    got = fit(resumed, train, test, 3, checkpoint_dir=str(tmp_path), resume=True, bn_recalibrate=2, **QUIET)
    _assert_same_state(straight, resumed)
    for key in ("train_loss", "test_accuracy", "test_loss"):
        assert [h[key] for h in got] == [h[key] for h in expected], key
    if hasattr(straight, "stats"):
        assert resumed.stats() == straight.stats()


def test_checkpoint_every_keeps_the_last_two_and_resumes_from_either(digits, tmp_path):
    train, test = _loaders(digits)
    straight = _trainer("dgl")
    fit(straight, train, test, 2, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=3, **QUIET)
    # saves at steps 3 (epoch 1), end of epoch 1, 6 = epoch 2 batch 1, 9 = epoch 2 batch 4, end of epoch 2
    files = sorted(os.listdir(tmp_path / "a"))
    assert files == ["latest.json", "previous.json", "state-epoch0001-step00004.npz", "state-epoch0002.npz"]
    _, previous = load_checkpoint(str(tmp_path / "a"), "previous")
    assert (previous["epoch"], previous["step"]) == (1, 4)
    resumed = _trainer("dgl")
    fit(resumed, train, test, 2, checkpoint_dir=str(tmp_path / "a"), resume="previous", **QUIET)
    _assert_same_state(straight, resumed)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        fit(_trainer("dgl"), train, test, 1, checkpoint_every=3, **QUIET)


def test_a_checkpoint_of_another_run_is_refused_naming_both(digits, tmp_path):
    train, test = _loaders(digits)
    first = _trainer("dgl")
    first.run_info = {"model": "mlp", "dataset": "mnist-small", "optimizer": "adamw-sf", "options": {"modules": 2}}
    fit(first, train, test, 1, checkpoint_dir=str(tmp_path), **QUIET)
    other = _trainer("lls-mxm")
    other.run_info = {"model": "mlp", "dataset": "mnist-small", "optimizer": "adam", "options": {}}
    with pytest.raises(
        CheckpointError,
        match=r"written by dgl on mlp \(mnist-small\), adamw-sf with --modules 2; "
        r"this run is lls-mxm on mlp \(mnist-small\), adam \(trainer, optimizer and --modules differ\)",
    ):
        fit(other, train, test, 2, checkpoint_dir=str(tmp_path), resume=True, **QUIET)
    # what the description cannot tell, the shapes do: another auxiliary head, described the same way
    wider = build_trainer(
        "dgl",
        build_model("mlp", 1, 28, 10, seed=0, dtype="float64"),
        lambda p: build_optimizer("adamw-sf", p, lr=2e-3),
        modules=2,
        aux="linear",
    )
    wider.run_info = first.run_info
    with pytest.raises(CheckpointError, match=r"does not fit this model: aux/.* has shape"):
        fit(wider, train, test, 2, checkpoint_dir=str(tmp_path), resume=True, **QUIET)


@pytest.mark.parametrize("damage", ["truncate-npz", "flip-npz", "truncate-json", "edit-json"])
def test_a_damaged_checkpoint_is_refused_by_name_and_the_previous_is_kept(damage, digits, tmp_path):
    train, test = _loaders(digits)
    fit(_trainer("dgl"), train, test, 2, checkpoint_dir=str(tmp_path), **QUIET)
    latest = json.loads((tmp_path / "latest.json").read_text())
    npz, record = tmp_path / latest["arrays"], tmp_path / "latest.json"
    if damage == "truncate-npz":
        npz.write_bytes(npz.read_bytes()[:1000])
    elif damage == "flip-npz":
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
    elif damage == "truncate-json":
        record.write_text(record.read_text()[:200])
    else:
        latest["history"][0]["train_loss"] = 0.001  # a plausible edit that JSON parsing cannot catch
        record.write_text(json.dumps(latest))
    expected = {
        "truncate-npz": rf"{latest['arrays']} does not match the SHA-256 .*truncated or corrupted",
        "flip-npz": rf"{latest['arrays']} does not match the SHA-256 .*recorded {latest['sha256'][:12]}",
        "truncate-json": r"latest.json is not a complete checkpoint record",
        "edit-json": r"latest.json does not match its own SHA-256",
    }[damage]
    with pytest.raises(
        CheckpointError,
        match=expected + r".*previous checkpoint \(after epoch 1\) is intact.*"
        r"--resume previous",
    ):
        load_checkpoint(str(tmp_path))
    assert (tmp_path / "state-epoch0001.npz").exists()
    resumed = _trainer("dgl")
    history = fit(resumed, train, test, 2, checkpoint_dir=str(tmp_path), resume="previous", **QUIET)
    assert len(history) == 2


def test_the_parallel_engines_refuse_a_mid_epoch_checkpoint(digits, tmp_path):
    from tinydgl.runtime.epochs import load_epoch_checkpoint

    train, test = _loaders(digits)
    trainer = _trainer("dgl")
    _stop_with_sigterm_at(trainer, 2)
    with pytest.raises(RunStopped):
        fit(trainer, train, test, 1, checkpoint_dir=str(tmp_path), stop_on_signals=True, **QUIET)
    with pytest.raises(CheckpointError, match=r"mid-epoch checkpoint \(at epoch 1, batch 2\).*in-process"):
        load_epoch_checkpoint(str(tmp_path), True, _trainer("dgl"))


# --- the command, in processes of its own --------------------------------------------------------
LONG = [
    "--model",
    "mlp",
    "--limit-train",
    "4000",
    "--limit-test",
    "200",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--no-progress",
]


def _train(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "tinydgl", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        **kwargs,
    )


def _wait_for_checkpoint(proc, directory, mid_epoch, timeout=120):
    """Wait until `directory` has a checkpoint (a mid-epoch one if asked); fails if the run ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()}"
        try:
            meta = json.loads((directory / "latest.json").read_text())
            if not mid_epoch or meta["step"]:
                return meta
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def _final_weights(directory):
    state, meta = load_checkpoint(str(directory))
    return state["model"], meta


def test_cli_sigkill_mid_epoch_then_resume_ends_bit_identical(tmp_path):
    """async DGL (buffers, schedule, counters): killed with SIGKILL after a mid-epoch checkpoint, resumed
    from it by the same command with --resume, it ends with the weights of a run that was never stopped."""
    method = ["--trainer", "async-dgl", "--modules", "2", "--buffer-size", "2", *LONG]
    straight = _train(*method, "--checkpoint-dir", str(tmp_path / "straight"))
    killed = _train(*method, "--checkpoint-dir", str(tmp_path / "killed"), "--checkpoint-every", "40")
    meta = _wait_for_checkpoint(killed, tmp_path / "killed", mid_epoch=True)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert straight.wait(timeout=300) == 0, straight.communicate()
    resumed = _train(*method, "--checkpoint-dir", str(tmp_path / "killed"), "--checkpoint-every", "40", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in out and "at epoch" in out, out
    assert "which is no longer running (it was killed or crashed); this run takes the folder over" in out  # its lock
    (a, meta_a), (b, meta_b) = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    assert meta_a["epoch"] == meta_b["epoch"] == 3 and meta["step"] > 0
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [h["train_loss"] for h in meta_a["history"]] == [h["train_loss"] for h in meta_b["history"]]


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_cli_stops_cleanly_on_a_signal_with_a_checkpoint_and_says_how_to_resume(signame, code, tmp_path):
    proc = _train("--trainer", "bp", *LONG, "--checkpoint-dir", str(tmp_path), "--checkpoint-every", "30")
    _wait_for_checkpoint(proc, tmp_path, mid_epoch=True)
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {signame}" in err and "Traceback" not in err
    assert f"checkpoint saved in {tmp_path}" in err and "--resume" in err.splitlines()[-1]
    assert not (tmp_path / "lock.json").exists()  # the folder was given back
    command = err.splitlines()[-1].split()
    assert command[0] == "tinydgl" and command[1] == "train" and command[-1] == "--resume"
    meta = json.loads((tmp_path / "latest.json").read_text())
    assert meta["epoch"] < 3
    resumed = subprocess.run(
        [sys.executable, "-m", "tinydgl", *command[1:]], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "after 3 epoch(s)" in resumed.stdout


def test_cli_resume_with_another_trainer_is_refused_without_a_traceback(tmp_path):
    small = [
        "--model",
        "mlp",
        "--limit-train",
        "128",
        "--limit-test",
        "50",
        "--no-progress",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    first = subprocess.run(
        [sys.executable, "-m", "tinydgl", "train", "--trainer", "dgl", *small],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [sys.executable, "-m", "tinydgl", "train", "--trainer", "lls", *small, "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1
    assert "written by dgl on mlp (mnist-small), adam; this run is lls on mlp (mnist-small), adam" in again.stderr
    assert "Traceback" not in again.stderr
