"""A full disk and too little memory: one clear message, never a traceback, and nothing computed is lost.

- checkpoints (tinydgl/train/checkpoint.py): a save the disk refuses stops the run with a message; the
  earlier checkpoint stays the latest, loadable, and no temporary file is left.
- results (tinydgl/train/outputs.py): metrics and plots the disk refuses at the end go to a folder in the
  temporary directory, whose path is printed (or, if that fails too, the metrics are printed).
- memory (tinydgl/train/memory.py): a batch too large for the free memory is refused before training, and a
  MemoryError during training is reported with the batch size and a smaller one to try.

A full disk is injected (ENOSPC from a write, as a real full disk gives it) and, where this process may mount
one (root on Linux), also made real with a small tmpfs.
"""

import errno
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from error_catalogue import catalogued, check
from tinydgl.cli import main
from tinydgl.train import checkpoint
from tinydgl.train.checkpoint import CheckpointWriteError, load_checkpoint
from tinydgl.train.outputs import OutputError, Outputs

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "mlp", "--hidden", "16", "--limit-train", "64", "--limit-test", "32", "--no-progress"]


def command(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder):
    return [p.name for p in Path(folder).rglob("*") if ".tmp" in p.name]


# --- checkpoints -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("refused", ["state-epoch0002.npz", "previous.json", "latest.json"])
def test_a_full_disk_while_checkpointing_stops_the_run_and_keeps_the_earlier_checkpoint(
    refused, tmp_path, capsys, monkeypatch, request
):
    """The disk fills up during the save after epoch 2, at each of its three files in turn."""
    folder = tmp_path / "ckpt"
    real_write = checkpoint._atomic_write

    def full_disk_at(path, write):
        if (
            os.path.basename(path) == refused
            and os.path.exists(folder / "latest.json")
            and json.loads((folder / "latest.json").read_text())["epoch"] == 1
        ):

            def partly(f):
                f.write(b"the first bytes fit")
                raise enospc()

            return real_write(path, partly)
        return real_write(path, write)

    monkeypatch.setattr(checkpoint, "_atomic_write", full_disk_at)
    code, out, err = command(capsys, "train", *SMALL, "--epochs", "3", "--checkpoint-dir", str(folder))
    check(catalogued(request), code, out, err, folder)
    assert (
        f"tinydgl: error: Could not write the checkpoint after epoch 2 to {folder}: the disk is full (No space "
        f"left on device). The checkpoint after epoch 1 is intact there and stays the latest. Training stopped: "
        f"free some space, then run the same command with --resume to continue from it."
    ) in err
    assert "epoch   3/3" not in out
    assert leftovers(folder) == []
    assert not (folder / "state-epoch0002.npz").exists()  # the refused save's arrays are not left behind
    assert load_checkpoint(str(folder))[1]["epoch"] == 1
    monkeypatch.undo()  # space was freed: the run resumes from the checkpoint after epoch 1
    code, out, err = command(capsys, "train", *SMALL, "--epochs", "3", "--checkpoint-dir", str(folder), "--resume")
    assert code == 0, err
    assert "resumed from" in out and "after epoch 1" in out and "epoch   3/3" in out


def test_a_full_disk_before_any_checkpoint_says_there_is_none(tmp_path, capsys, monkeypatch):
    def full(path, write):
        raise enospc()

    monkeypatch.setattr(checkpoint, "_atomic_write", full)
    code, _, err = command(capsys, "train", *SMALL, "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert code == 1
    assert "the disk is full (No space left on device). No earlier checkpoint is there." in err
    assert "run the same command again" in err and "--resume" not in err


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs, for a real ENOSPC; skipped where this process may not mount one."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Fill the disk up to its last byte (empty files can still be made: the command's probe passes)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            with pytest.raises(OSError) as full:
                while True:
                    f.write(b"\0" * chunk)
            assert full.value.errno == errno.ENOSPC


def test_a_real_full_disk_while_checkpointing(small_disk, tmp_path):
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl.train import fit
    from tinydgl.trainers import build_trainer

    data = load_dataset("mnist-small", limit_train=64, limit_test=32, progress=False)
    train_loader = DataLoader(data.x_train, data.y_train, 32, mean=data.mean, std=data.std)
    test_loader = DataLoader(data.x_test, data.y_test, 32, shuffle=False, mean=data.mean, std=data.std)
    model = build_model("mlp", hidden=[16], seed=0)
    trainer = build_trainer("bp", model, lambda p: build_optimizer("adam", p, lr=1e-3))
    folder = small_disk / "ckpt"

    def fill_after_the_first(entry):
        if entry["epoch"] == 1:
            fill(small_disk)

    with pytest.raises(CheckpointWriteError, match="the disk is full .* The checkpoint after epoch 1 is intact"):
        fit(
            trainer,
            train_loader,
            test_loader,
            2,
            checkpoint_dir=str(folder),
            progress=False,
            log=lambda *a: None,
            on_epoch_end=fill_after_the_first,
        )
    assert leftovers(folder) == [] and not (folder / "lock.json").exists()
    assert load_checkpoint(str(folder))[1]["epoch"] == 1


# --- results at the end of a run -------------------------------------------------------------------------
def refuse_writes_under(monkeypatch, folder):
    """Writes to files under `folder` fail with ENOSPC, as on a full disk: a file can still be created (the
    command's up-front probe passes), but its first bytes are refused."""
    import builtins

    real_open = builtins.open
    folder = os.path.realpath(folder)

    class Full:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise enospc()

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and os.path.realpath(file).startswith(folder + os.sep)
        return Full(f) if inside and any(m in mode for m in "wax") else f

    monkeypatch.setattr(builtins, "open", open_)


def test_compare_on_a_full_disk_saves_the_metrics_elsewhere(tmp_path, capsys, monkeypatch, request):
    full, elsewhere = tmp_path / "full", tmp_path / "tmp"
    elsewhere.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(elsewhere))
    refuse_writes_under(monkeypatch, full)
    code, out, err = command(capsys, "compare", "--trainers", "bp", *SMALL, "--metrics-json", str(full / "m.json"))
    check(catalogued(request), code, out, err, full)
    assert "bp " in out  # it trained and printed its table
    message = err.strip().splitlines()[-1]
    assert message.startswith(
        f"tinydgl: error: could not write the metrics to {full / 'm.json'} (the disk is full "
        f"(No space left on device)); saved to {elsewhere}"
    )
    saved = Path(message.split("saved to ")[1].split(" instead")[0])
    assert saved.name == "m.json" and json.loads(saved.read_text())["runs"][0]["trainer"] == "bp"
    assert os.listdir(full) == []  # neither m.json nor a temporary file


def test_results_that_cannot_be_saved_anywhere_are_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    refuse_writes_under(monkeypatch, tmp_path)
    outputs = Outputs(log=print)
    outputs.write_json("metrics", str(tmp_path / "out" / "m.json"), {"test_accuracy": 0.875})

    def plot(path):
        with open(path, "wb") as f:
            f.write(b"\x89PNG")

    outputs.write_file("learning curves", str(tmp_path / "out" / "m.png"), plot)
    with pytest.raises(OutputError, match="could not write the learning curves to .*m.png .*nor to the temporary"):
        outputs.finish()
    out = capsys.readouterr().out
    assert json.loads(out.split("here they are) ---\n")[1]) == {"test_accuracy": 0.875}
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "tmp") == []


def test_a_plot_on_a_full_disk_goes_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    refuse_writes_under(monkeypatch, tmp_path / "out")
    outputs = Outputs(log=lambda *a: None)

    def plot(path):
        assert path.endswith(".png")  # matplotlib reads the format from the name, the temporary one included
        with open(path, "wb") as f:
            f.write(b"\x89PNG")

    saved = outputs.write_file("learning curves", str(tmp_path / "out" / "m.png"), plot)
    assert saved.startswith(str(tmp_path / "tmp")) and Path(saved).read_bytes() == b"\x89PNG"
    with pytest.raises(OutputError, match=f"saved to {saved} instead"):
        outputs.finish()
    assert leftovers(tmp_path) == []


def test_compare_on_a_real_full_disk(small_disk, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    fill(small_disk)
    code, _, err = command(capsys, "compare", "--trainers", "bp", *SMALL, "--metrics-json", str(small_disk / "m.json"))
    assert code == 1
    assert f"could not write the metrics to {small_disk / 'm.json'} (the disk is full" in err
    assert sorted(os.listdir(small_disk)) == ["filler"]
    assert len(list(tmp_path.glob("tinydgl-results-*/m.json"))) == 1


# --- memory ----------------------------------------------------------------------------------------------
def test_running_out_of_memory_while_training_names_the_batch_size(capsys, monkeypatch, request):
    from tinydgl.trainers import TRAINERS

    real_step = TRAINERS["bp"].train_step

    def step(self, x, y):
        if not tracemalloc.is_tracing():  # the up-front check's steps (measured with tracemalloc) pass; training's not
            np.empty(1 << 50, np.uint8)  # 1 PiB: NumPy's own _ArrayMemoryError
        return real_step(self, x, y)

    monkeypatch.setattr(TRAINERS["bp"], "train_step", step)
    code, out, err = command(capsys, "train", *SMALL, "--batch-size", "64")
    check(catalogued(request), code, out, err)
    assert err.startswith("tinydgl: error: out of memory with --batch-size 64 (Unable to allocate")
    assert "use a smaller batch, e.g. --batch-size 16." in err


def test_a_batch_too_large_for_the_free_memory_is_refused_before_training(capsys, monkeypatch, request):
    from tinydgl.train import memory

    monkeypatch.setattr(memory, "available_memory", lambda: (20_000_000, "MemAvailable in /proc/meminfo"))
    code, out, err = command(capsys, "train", "--model", "cnn", "--batch-size", "4000", "--no-progress")
    check(catalogued(request), code, out, err)
    assert err.startswith("tinydgl: error: --batch-size 4000 needs about ")
    assert "but only 20.0 MB is free (MemAvailable in /proc/meminfo): use a smaller batch, e.g. --batch-size " in err
    suggested = int(err.split("e.g. --batch-size ")[1].split(";")[0])
    assert 8 <= suggested < 128 and "epoch" not in out
    # the suggestion fits
    assert (
        command(
            capsys,
            "train",
            "--model",
            "cnn",
            "--batch-size",
            str(suggested),
            "--limit-train",
            "256",
            "--limit-test",
            "32",
            "--no-progress",
        )[0]
        == 0
    )


MEMORY_LIMITED = textwrap.dedent("""
    import resource, sys
    # the address space this process has mapped already, plus 300 MB
    mapped = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 300_000_000, resource.RLIM_INFINITY))
    from tinydgl.cli import main
    sys.exit(main(["train", "--model", "cnn", "--batch-size", "4000", "--limit-test", "32", "--no-progress"]))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_a_batch_too_large_under_a_real_memory_limit(tmp_path):
    """ulimit -v: the up-front check reads the limit and refuses (cnn at 4000 needs about 1 GB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "TINYDGL_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import tinydgl.cli\n" + MEMORY_LIMITED],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "--batch-size 4000 needs about" in done.stderr
    assert "(the address-space limit, ulimit -v): use a smaller batch, e.g. --batch-size" in done.stderr


# --- a diverging run names only a checkpoint that exists ------------------------------------------------
def test_divergence_before_the_first_checkpoint_does_not_offer_one(tmp_path, capsys):
    folder = tmp_path / "ckd"
    code, _, err = command(
        capsys, "train", *SMALL, "--batch-size", "16", "--lr", "1e30", "--checkpoint-dir", str(folder)
    )
    assert code == 1
    assert "Training diverged: the loss became" in err and f"No checkpoint was written to {folder}." in err
    assert "last good checkpoint" not in err.lower()
    assert command(capsys, "train", *SMALL, "--checkpoint-dir", str(folder))[0] == 0  # nothing to refuse
    code, _, err = command(
        capsys,
        "train",
        *SMALL,
        "--batch-size",
        "16",
        "--lr",
        "1e30",
        "--checkpoint-dir",
        str(folder),
        "--resume",
        "--epochs",
        "2",
    )
    assert code == 1 and f"The last good checkpoint (after epoch 1) is in {folder}." in err
