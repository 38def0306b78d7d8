"""One run per checkpoint folder (tinydgl/train/checkpoint.py, `CheckpointLock`): a second run is refused up
front and told who holds the folder; the folder is given back however a run ends; the record of a run
killed with SIGKILL is taken over with a note.

The first run is a real second process (a small script that takes the lock as `fit` does and waits for a
line on stdin), so the tests never wait on a clock: they read its "locked" line, then act.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from error_catalogue import catalogued, check
from tinydgl.cli import main
from tinydgl.train import fit
from tinydgl.train.checkpoint import LOCK_NAME, CheckpointLock, CheckpointLocked, check_unlocked, load_checkpoint

pytest.importorskip("fcntl")  # no flock on Windows: runs there go on unlocked, with a note

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "mlp", "--hidden", "16", "--limit-train", "64", "--limit-test", "32", "--no-progress"]

HOLDER = textwrap.dedent("""
    import sys
    sys.argv = ["tinydgl", "train", "--trainer", "bp", "--checkpoint-dir", sys.argv[1]]
    from tinydgl.train.checkpoint import CheckpointLock
    with CheckpointLock(sys.argv[-1], run="bp on mlp (mnist-small)"):
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def hold(folder):
    """Start a process that holds `folder`; returns it once it holds it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def release(holder):
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    assert holder.wait(timeout=60) == 0


def train(capsys, *args):
    code = main(["train", *SMALL, *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path, capsys, request):
    folder = tmp_path / "ckpt"
    holder = hold(folder)
    try:
        record = (folder / LOCK_NAME).read_text()
        code, out, err = train(capsys, "--trainer", "lls", "--checkpoint-dir", str(folder))
        check(catalogued(request), code, out, err, folder)
        assert f"tinydgl: error: {folder} is in use by another run: pid {holder.pid} on host " in err
        assert "tinydgl train --trainer bp --checkpoint-dir" in err and "(bp on mlp (mnist-small))" in err
        assert "nothing was trained" in err and "epoch" not in out
        assert sorted(os.listdir(folder)) == [LOCK_NAME]  # no checkpoint written
        assert (folder / LOCK_NAME).read_text() == record  # the first run's record untouched
    finally:
        release(holder)
    assert train(capsys, "--trainer", "lls", "--checkpoint-dir", str(folder))[0] == 0  # free again


def test_fit_itself_refuses_a_held_folder(tmp_path):
    """The command's early check can race with a run that starts at the same moment; fit's lock cannot."""
    folder = tmp_path / "ckpt"
    holder = hold(folder)
    try:
        with pytest.raises(CheckpointLocked, match=f"pid {holder.pid} on host"):
            fit(None, None, None, 1, checkpoint_dir=str(folder))  # refused before it touches the trainer
        with CheckpointLock(str(tmp_path / "other")):  # another folder is another lock
            pass
    finally:
        release(holder)


def test_the_folder_is_given_back_after_a_normal_run_and_after_errors(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    assert train(capsys, "--checkpoint-dir", str(folder))[0] == 0
    assert not (folder / LOCK_NAME).exists()
    check_unlocked(str(folder))
    code, _, err = train(
        capsys, "--checkpoint-dir", str(folder), "--resume", "--epochs", "2", "--lr", "1e30", "--batch-size", "16"
    )
    assert code == 1 and "Training diverged: the loss became" in err  # an error inside the run
    assert not (folder / LOCK_NAME).exists()
    notes = []
    with CheckpointLock(str(folder), log=notes.append):
        pass  # free, and nothing was left to take over
    assert notes == []


def test_the_folder_is_given_back_when_fit_is_interrupted(tmp_path):
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl.trainers import build_trainer

    data = load_dataset("mnist-small", limit_train=64, limit_test=32, progress=False)
    train_loader = DataLoader(data.x_train, data.y_train, 32, mean=data.mean, std=data.std)
    test_loader = DataLoader(data.x_test, data.y_test, 32, shuffle=False, mean=data.mean, std=data.std)
    model = build_model("mlp", in_channels=1, image_size=28, num_classes=10, hidden=[16], seed=0)
    trainer = build_trainer("bp", model, lambda p: build_optimizer("adam", p, lr=1e-3))

    def interrupt(entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            trainer,
            train_loader,
            test_loader,
            2,
            checkpoint_dir=str(tmp_path),
            progress=False,
            log=lambda *a: None,
            on_epoch_end=interrupt,
        )
    assert not (tmp_path / LOCK_NAME).exists()
    assert load_checkpoint(str(tmp_path))[1]["epoch"] == 1
    with CheckpointLock(str(tmp_path)):
        pass


def test_the_parallel_engines_hold_the_folder_while_they_train(tmp_path):
    from tinydgl.runtime.epochs import epochs_on_workers

    class Model:
        def num_parameters(self):
            return 0

    class Trainer:  # just enough for epochs_on_workers' bookkeeping and checkpoints
        name, model = "dgl", Model()

        def to_train_weights(self):
            pass

    seen = []

    def run_epoch(epoch, started):
        with pytest.raises(CheckpointLocked):
            check_unlocked(str(tmp_path))
        seen.append(epoch)
        raise RuntimeError("a worker failed")

    with pytest.raises(RuntimeError, match="a worker failed"):
        epochs_on_workers(run_epoch, Trainer(), None, 1, "2 workers", checkpoint_dir=str(tmp_path))
    assert seen == [0]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path, capsys, request):
    folder = tmp_path / "ckpt"
    holder = hold(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    left = json.loads((folder / LOCK_NAME).read_text())
    assert left["pid"] == holder.pid
    code, out, err = train(capsys, "--checkpoint-dir", str(folder))
    check(catalogued(request), code, out, err, folder)
    assert (
        f"note: {folder / LOCK_NAME} was left by pid {holder.pid} on host {left['host']}" in out
        and "which is no longer running (it was killed or crashed); this run takes the folder over." in out
    )
    assert load_checkpoint(str(folder))[1]["epoch"] == 1
    assert not (folder / LOCK_NAME).exists()


def test_a_record_of_a_killed_run_does_not_block_the_early_check(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": "elsewhere"}))
    check_unlocked(str(folder))  # nobody holds the flock: no error
    notes = []
    with CheckpointLock(str(folder), log=notes.append) as lock:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.owner["pid"] == os.getpid()
    assert len(notes) == 1 and "pid 999999999 on host elsewhere" in notes[0] and "which no longer holds it" in notes[0]
    assert list(folder.iterdir()) == []
