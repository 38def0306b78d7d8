"""The training loop, the backprop trainer and the `tinydgl train` command, on the bundled real MNIST subset."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinydgl.cli import main
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.train import TrainingDiverged, fit, load_checkpoint
from tinydgl.trainers import BackpropTrainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _loaders(ds, n_train, n_test=500, batch=64, seed=0):
    train = DataLoader(ds.x_train[:n_train], ds.y_train[:n_train], batch, seed=seed, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test[:n_test], ds.y_test[:n_test], 250, shuffle=False, mean=ds.mean, std=ds.std)
    return train, test


def _bp(model_name="cnn", seed=0, lr=2e-3):
    model = build_model(model_name, 1, 28, 10, seed=seed)
    return BackpropTrainer(model, lambda params: Adam(params, lr=lr))


def test_backprop_learns_real_digits(digits):
    """One epoch on 4,000 real digits: chance is 0.10; a sign error or a broken conv gradient stays far below."""
    train, test = _loaders(digits, 4000, 1000, batch=128)
    history = fit(_bp(), train, test, epochs=1, progress=False, log=lambda *_: None)
    assert history[0]["test_accuracy"] > 0.90, history
    assert history[0]["train_loss"] < 1.2


def test_training_is_deterministic(digits):
    states = []
    for _ in range(2):
        trainer = _bp("mlp")
        train, test = _loaders(digits, 256, 100)
        fit(trainer, train, test, epochs=2, progress=False, log=lambda *_: None)
        states.append(trainer.model.state_dict())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])


def test_divergence_guard_names_epoch_and_step_and_keeps_last_checkpoint(digits, tmp_path):
    trainer = _bp("mlp")
    real_step = trainer.train_step
    calls = {"n": 0}

    def poisoned(x, y):
        calls["n"] += 1
        return float("nan") if calls["n"] == 4 + 3 else real_step(x, y)  # epoch 2 has 4 batches before it

    trainer.train_step = poisoned
    train, test = _loaders(digits, 256, 100)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3.*last good checkpoint"):
        fit(trainer, train, test, epochs=3, checkpoint_dir=str(tmp_path), progress=False, log=lambda *_: None)
    _, meta = load_checkpoint(str(tmp_path))
    assert meta["epoch"] == 1


def _run_cli(*args, env=None):
    cmd = [sys.executable, "-m", "tinydgl", "train", "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


SMALL = ["--model", "mlp", "--limit-train", "768", "--limit-test", "200", "--batch-size", "64", "--epochs", "4"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    """Kill a run with SIGKILL after its first checkpoint; the resumed run must end with identical weights."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run_cli(*SMALL, "--checkpoint-dir", str(straight)).returncode == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "tinydgl", "train", "--no-progress", *SMALL, "--checkpoint-dir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        latest = killed / "latest.json"
        if latest.exists() and json.loads(latest.read_text())["epoch"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    epoch_at_kill = json.loads((killed / "latest.json").read_text())["epoch"]
    assert epoch_at_kill < 4

    resumed = _run_cli(*SMALL, "--checkpoint-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {killed} after epoch {epoch_at_kill}" in resumed.stdout
    a, meta_a = load_checkpoint(str(straight))
    b, meta_b = load_checkpoint(str(killed))
    assert meta_a["epoch"] == meta_b["epoch"] == 4
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    assert [h["train_loss"] for h in meta_a["history"]] == [h["train_loss"] for h in meta_b["history"]]


def test_cli_writes_metrics_json_and_plot(tmp_path):
    metrics, plot = tmp_path / "m.json", tmp_path / "curves.png"
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
            "2",
            "--metrics-json",
            str(metrics),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    data = json.loads(metrics.read_text())
    for key in (
        "trainer",
        "model",
        "dataset",
        "epochs",
        "test_accuracy",
        "train_seconds",
        "samples_per_second",
        "history",
    ):
        assert key in data
    assert data["trainer"] == "bp" and data["epochs"] == 2 and len(data["history"]) == 2
    assert 0.0 <= data["test_accuracy"] <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "resnet"], 2, "choose one of: mlp, cnn, smallconv"),
        (["--dataset", "imagenet"], 2, "mnist-small"),
        (["--trainer", "magic"], 2, "unknown trainer 'magic'"),
        (["--batch-size", "0"], 2, "positive integer"),
        (["--resume"], 1, "--resume needs --checkpoint-dir"),
        (["--dataset", "cifar10", "--model", "dni_cnn", "--limit-train", "10"], 1, "cifar-10-binary.tar.gz"),
    ],
)
def test_cli_errors_are_clear(args, code, message, tmp_path):
    env = {"TINYDGL_OFFLINE": "1", "TINYDGL_DATA": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "empty").mkdir()  # a --data-dir that does not exist is refused before the data is looked for
    result = _run_cli(*args, "--data-dir", str(tmp_path / "empty"), env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint_is_reported(tmp_path):
    result = _run_cli(
        "--model",
        "mlp",
        "--limit-train",
        "64",
        "--limit-test",
        "10",
        "--resume",
        "--checkpoint-dir",
        str(tmp_path / "none"),
    )
    assert result.returncode == 1 and "No checkpoint to resume from" in result.stderr


def test_model_that_does_not_fit_the_images_is_reported():
    """dni_cnn's three 3x3 pools need at least 27x27 pixels: 8x8 images get a clear error, not a traceback."""
    from types import SimpleNamespace

    from tinydgl.cli.checks import CommandError
    from tinydgl.cli.train import make_trainer

    args = SimpleNamespace(model="dni_cnn", dataset="tiny", seed=0, lr=None, optimizer="adam", weight_decay=0.0)
    tiny = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(CommandError, match="does not fit tiny images"):
        make_trainer(args, "bp", tiny)
