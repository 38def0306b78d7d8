"""The parallel runtime's bookkeeping and its command line: the worker loop's metrics (staleness, replays,
occupancy, fresh/replayed/skipped batches, empty polls, timeline), `tinydgl train --workers` with checkpoints, resume and the timeline plot,
`--trainer dp-sync`, and stopping: Ctrl-C, and a worker that dies before it ever runs (spawn re-import).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinydgl.cli import main
from tinydgl.runtime.engine import pipeline_worker_loop
from tinydgl.runtime.metrics import WorkerRecorder, pipeline_counts, plot_timeline, work_summary
from tinydgl.runtime.shm_ring import RingEntry, SharedRing

SMALL = [
    "--dataset",
    "mnist-small",
    "--limit-train",
    "256",
    "--limit-test",
    "128",
    "--batch-size",
    "64",
    "--no-progress",
]


class _Double:
    """A stand-in module: output = 2 * input, loss = the batch's mean input."""

    def step(self, x, y):
        return float(np.mean(x)), 2 * x


class _ListSource:
    """Hands out prepared (x, labels, entry) items; None (nothing yet) where an item is None."""

    def __init__(self, items):
        self.items = list(items)

    def get(self, timeout=None):
        return self.items.pop(0) if self.items else None


class _ListSink:
    def __init__(self):
        self.items, self.origins = [], []

    def put(self, x, labels, produced_at=0, timeout=None, origin=None):
        self.items.append((x.copy(), labels.copy(), produced_at))
        self.origins.append(origin)
        return True


def _entry(serial, pushed, stored=1, uses=1, origin=None):
    return RingEntry(
        serial=serial, produced_at=serial + 1, samples=2, uses=uses, slot=0, pushed=pushed, stored=stored, origin=origin
    )


def test_worker_loop_records_staleness_replays_and_occupancy():
    x, y = np.ones((2, 3)), np.array([0, 1])
    items = [
        (x, y, _entry(0, pushed=1)),  # the freshest batch: staleness 0
        (x, y, _entry(1, pushed=4, stored=3)),  # two newer batches were pushed after it: staleness 2
        (x, y, _entry(1, pushed=4, uses=2)),
    ]  # served a second time: a replay
    recorder = WorkerRecorder(1, time.time())
    sink = _ListSink()
    pipeline_worker_loop([_Double(), _Double()], _ListSource(items), sink, 3, recorder)
    m = recorder.summary()
    assert (m["steps"], m["samples"], m["replayed_batches"], m["empty_polls"]) == (3, 6, 1, 0)
    assert m["staleness_max"] == 2 and m["staleness_mean"] == pytest.approx((0 + 2 + 2) / 3)
    assert m["occupancy_mean"] == pytest.approx((1 + 3 + 1) / 3)
    # both modules ran, in order, and the producer's step numbers went out with the batches
    assert [p for _, _, p in sink.items] == [1, 2, 3]
    np.testing.assert_array_equal(sink.items[0][0], 4 * x)
    assert len(m["timeline"]) == 3 and all(0 <= a <= b for a, b in m["timeline"])
    assert m["busy_seconds"] >= 0 and 0 <= m["busy_fraction"] <= 1


def test_worker_loop_counts_empty_polls_and_stops_with_its_replay_producer():
    x, y = np.ones((2, 3)), np.array([0, 1])
    source = _ListSource([None, (x, y, _entry(0, 1)), None, None])
    stopped = iter([False, False, False, True, True])
    recorder = WorkerRecorder(1, time.time())
    losses = pipeline_worker_loop(
        [_Double()], source, None, 100, recorder, replay_input=True, producer_stopped=lambda: next(stopped)
    )
    m = recorder.summary()
    assert m["steps"] == 1 and m["empty_polls"] == 2  # two empty looks, then the producer had stopped
    assert losses == [(1.0, 2)]  # the last worker keeps (loss, samples) per step


def test_fresh_means_new_data_not_a_new_ring_entry():
    """A third pipeline stage: its producer replayed data batch 0 and pushed the result as a new entry (uses
    1 again). By origin that is a replay; the stage learned from data batches 0 and 2 of the 4 fed, skipped 2,
    and passed each origin on with its output."""
    x, y = np.ones((2, 3)), np.array([0, 1])
    items = [
        (x, y, _entry(0, pushed=1, origin=0)),
        (x, y, _entry(1, pushed=2, origin=0)),  # a new entry computed from old data
        (x, y, _entry(1, pushed=2, uses=2, origin=0)),  # that entry again
        (x, y, _entry(2, pushed=3, origin=2)),
    ]
    recorder = WorkerRecorder(2, time.time(), fed_batches=4)
    sink = _ListSink()
    pipeline_worker_loop([_Double()], _ListSource(items), sink, 4, recorder)
    m = recorder.summary()
    assert (m["fresh_batches"], m["fresh_samples"], m["replayed_batches"], m["replayed_samples"]) == (2, 4, 2, 4)
    assert m["skipped_batches"] == 2 and m["steps"] == 4 and m["samples"] == 8
    assert sink.origins == [0, 0, 0, 2]
    # an entry without an origin (a ring used on its own) is its own data: fresh on its first serve only
    alone = WorkerRecorder(1, time.time())
    alone.got(_entry(5, pushed=6))
    alone.computed(0.0, 1.0, 2)
    alone.got(_entry(5, pushed=6, uses=2))
    alone.computed(1.0, 2.0, 2)
    assert (alone.fresh_batches, alone.replayed_batches) == (1, 1)


def test_data_readers_learn_from_every_batch_they_take():
    """The data-reading stage (got called with the data ring's entries or None) and a data-parallel worker
    (no got at all): every step fresh, nothing replayed; a worker that knows no fed_batches skips nothing."""
    reader = WorkerRecorder(0, time.time(), input_is_data=True, fed_batches=3)
    for i in range(3):
        assert reader.got(_entry(i, pushed=i + 1) if i else None) == i  # origins: the data batch numbers
        reader.computed(float(i), i + 0.5, 2)
    parallel = WorkerRecorder(1, time.time(), input_is_data=True)
    for i in range(3):
        parallel.computed(float(i), i + 0.5, 5)
    for m, n in ((reader.summary(), 2), (parallel.summary(), 5)):
        assert (m["fresh_batches"], m["fresh_samples"], m["replayed_batches"], m["skipped_batches"]) == (3, 3 * n, 0, 0)


def test_pipeline_counts_and_work_summary():
    def worker(index, fresh, replayed=0, skipped=0, batch=10):
        return {
            "worker": index,
            "fresh_batches": fresh,
            "fresh_samples": fresh * batch,
            "replayed_batches": replayed,
            "skipped_batches": skipped,
        }

    every_batch_once = [worker(0, 40), worker(1, 40)]
    assert work_summary(every_batch_once) == ""
    assert pipeline_counts(every_batch_once, 2.0) == {"samples": 400, "fed_samples": 400, "samples_per_second": 200.0}
    skipping = [worker(0, 40), worker(1, 31, replayed=12, skipped=9)]
    assert pipeline_counts(skipping, 2.0) == {"samples": 310, "fed_samples": 400, "samples_per_second": 155.0}
    assert work_summary(skipping) == "learned from: w0 40/40; w1 31/40 + 12 replayed, 9 skipped"
    modules = [
        {"module": 0, "fresh_batches": 5, "replayed_batches": 0, "skipped_batches": 0},
        {"module": 1, "fresh_batches": 5, "replayed_batches": 3, "skipped_batches": 0},
    ]
    assert work_summary(modules) == "learned from: m0 5/5; m1 5/5 + 3 replayed"


def test_the_data_reading_worker_reports_no_staleness():
    recorder = WorkerRecorder(0, time.time(), input_is_data=True)
    recorder.got(_entry(0, pushed=9, stored=2))
    assert recorder.summary()["staleness_max"] == 0


def test_timeline_stays_bounded():
    recorder = WorkerRecorder(0, 0.0, max_intervals=8)
    for i in range(100):
        recorder.computed(float(i), i + 0.5, 1)
    m = recorder.summary()
    assert len(m["timeline"]) <= 8 and m["steps"] == 100
    assert m["timeline"][0][0] == 0.0 and m["timeline"][-1][1] == 99.5  # merging keeps the span


def test_ring_entry_says_how_stale_and_how_full():
    with SharedRing(4, 2, (3,), "float64", "fifo") as ring:
        for step in range(3):
            ring.put(np.full((2, 3), step), np.array([0, 1]), produced_at=step)
        _, _, first = ring.get(timeout=1)
        assert (first.serial, first.pushed, first.stored) == (0, 3, 3)  # two newer batches wait behind it
    with SharedRing(4, 2, (3,), "float64", "replay") as ring:
        ring.put(np.zeros((2, 3)), np.array([0, 1]))
        ring.put(np.ones((2, 3)), np.array([0, 1]))
        _, _, e = ring.get(timeout=1)
        assert (e.serial, e.pushed, e.stored, e.uses) == (1, 2, 2, 1)  # the freshest; both stay stored


def test_plot_timeline_writes_a_png(tmp_path):
    workers = [
        {
            "worker": 0,
            "modules": [0, 1],
            "timeline": [[0.0, 1.0], [1.5, 2.0]],
            "busy_seconds": 1.5,
            "idle_seconds": 0.5,
        },
        {"worker": 1, "modules": [2], "timeline": [[1.0, 1.4]], "busy_seconds": 0.4, "idle_seconds": 1.6},
    ]
    path = plot_timeline(workers, str(tmp_path / "t.png"))
    assert os.path.getsize(path) > 1000


# --- the command line -----------------------------------------------------------------------------------
def _weights(checkpoint_dir):
    state = json.load(open(os.path.join(checkpoint_dir, "latest.json")))
    with np.load(os.path.join(checkpoint_dir, state["arrays"])) as arrays:
        return {k: arrays[k] for k in arrays.files if k.startswith("model/")}


def test_cli_workers_checkpoint_resume_and_timeline(tmp_path, capsys):
    """dgl on 2 workers: a run stopped after epoch 1 and resumed equals the straight 2-epoch run (fifo rings
    keep every batch in order, so the weights are the in-process ones); metrics and the timeline are written."""
    base = ["train", "--trainer", "dgl", "--model", "mlp", "--workers", "2", *SMALL]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    metrics, plot = str(tmp_path / "m.json"), str(tmp_path / "curves.png")
    assert main([*base, "--epochs", "2", "--checkpoint-dir", straight, "--metrics-json", metrics, "--plot", plot]) == 0
    assert main([*base, "--epochs", "1", "--checkpoint-dir", resumed]) == 0
    assert main([*base, "--epochs", "2", "--checkpoint-dir", resumed, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    summary = json.load(open(metrics))
    assert len(summary["history"]) == 2
    w = summary["history"][0]["workers"]
    assert [m["worker"] for m in w] == [0, 1] and all(m["steps"] == 4 for m in w)  # 256 images / 64
    assert {"busy_seconds", "idle_seconds", "staleness_mean", "occupancy_mean", "timeline"} <= set(w[1])
    assert summary["history"][0]["rings"][1]["served"] == 4
    assert os.path.getsize(str(tmp_path / "curves-timeline.png")) > 1000


def test_cli_dp_sync(tmp_path, capsys):
    metrics = str(tmp_path / "m.json")
    assert (
        main(["train", "--trainer", "dp-sync", "--workers", "2", "--model", "mlp", *SMALL, "--metrics-json", metrics])
        == 0
    )
    summary = json.load(open(metrics))
    assert summary["trainer"] == "dp-sync" and len(summary["history"][0]["workers"]) == 2
    assert summary["test_accuracy"] > 0.3  # 4 steps of Adam on 256 digits: well above chance (0.1)
    assert main(["train", "--trainer", "dp-sync", "--model", "mlp", *SMALL]) == 1
    assert "--parallel sync runs on worker processes: say how many with --workers J" in capsys.readouterr().err


def _children(pid):
    """PIDs whose parent is `pid` (from /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize(
    "signame, code, ignored_at_start", [("SIGINT", 130, False), ("SIGTERM", 143, False), ("SIGINT", 130, True)]
)
def test_ctrl_c_or_sigterm_stops_every_worker_and_frees_the_rings(signame, code, ignored_at_start, tmp_path):
    """SIGINT (as Ctrl-C in a terminal) or SIGTERM (as a cluster's pre-emption) to the whole process group:
    the workers ignore it and are stopped by the parent; exit status 130 / 143 within seconds, no worker
    left, no shared memory left, and the last epoch's checkpoint is named with the command to resume.
    ignored_at_start: the run starts with SIGINT ignored, as a shell starts a background job (`... &`), where
    Python installs no Ctrl-C handler of its own; before the parent set one, such a run never stopped."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "tinydgl",
        "train",
        "--trainer",
        "dgl",
        "--model",
        "cnn",
        "--workers",
        "2",
        "--dataset",
        "mnist-small",
        "--epochs",
        "20",
        "--batch-size",
        "32",
        "--no-progress",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored_at_start else None
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ignore,
    )
    deadline = time.time() + 90
    kids = []
    while time.time() < deadline and len(kids) < 3:  # the resource tracker and two workers
        time.sleep(0.5)
        kids = _children(proc.pid)
        assert proc.poll() is None, proc.communicate()
    assert len(kids) >= 3, f"workers did not start: children {kids}"
    time.sleep(2.0)  # let them train a little
    os.killpg(proc.pid, getattr(signal, signame))  # the whole process group, as a terminal's Ctrl-C does
    started = time.time()
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert time.time() - started < 15
    assert f"interrupted by {'Ctrl-C' if signame == 'SIGINT' else 'SIGTERM'}; every worker process was stopped" in err
    assert "Traceback" not in err
    if (tmp_path / "latest.json").exists():
        assert "--resume" in err.splitlines()[-1]
    time.sleep(0.5)
    assert not [k for k in kids if _alive(k)], "a worker outlived the run"
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"tdgl_{proc.pid}_")]


def test_a_worker_that_dies_while_starting_stops_the_run(tmp_path):
    """A script without `if __name__ == "__main__":` makes every spawned worker re-run it and die on
    import; the parent must report that worker, not hang."""
    script = tmp_path / "no_main_guard.py"
    script.write_text(
        textwrap.dedent("""
        from tinydgl.data import DataLoader, load_dataset
        from tinydgl.models import build_model
        from tinydgl.optim import build_optimizer
        from tinydgl.runtime import run_module_parallel
        from tinydgl.trainers import build_trainer

        ds = load_dataset("mnist-small", limit_train=128, limit_test=64, progress=False)
        model = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=0)
        trainer = build_trainer("dgl", model, lambda p: build_optimizer("adam", p, lr=1e-3))
        run_module_parallel(trainer, DataLoader(ds.x_train, ds.y_train, 64, seed=0), 1, workers=2)
    """)
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path)
    )
    assert proc.returncode != 0
    assert "WorkerFailed" in proc.stderr and "worker" in proc.stderr, proc.stderr[-2000:]
    assert time.time() - started < 60


def test_cli_downpour_reports_staleness(tmp_path, capsys):
    metrics = str(tmp_path / "m.json")
    assert (
        main(
            [
                "train",
                "--trainer",
                "downpour",
                "--workers",
                "2",
                "--n-fetch",
                "2",
                "--n-push",
                "1",
                "--model",
                "mlp",
                *SMALL,
                "--metrics-json",
                metrics,
            ]
        )
        == 0
    )
    entry = json.load(open(metrics))["history"][0]
    assert entry["pushes"] == 4 and len(entry["push_log"]) == 4  # one push per step, 4 batches
    assert entry["staleness"]["max"] >= 0 and len(entry["workers"]) == 2
    assert main(["train", "--trainer", "dgl", "--workers", "2", "--n-push", "2", *SMALL]) == 1
    assert "--n-push applies to --parallel downpour --transport shm only" in capsys.readouterr().err
