"""The module-parallel engine (tinydgl.runtime.engine): local trainers' modules in spawned worker processes.

Each spawned worker costs about a second to start on a busy machine, so the tests are few and tiny.
"""

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.runtime.engine import WorkerFailed, run_module_parallel, split_modules
from tinydgl.runtime.metrics import work_summary
from tinydgl.train import fit
from tinydgl.trainers import build_trainer


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("mnist-small", limit_train=256, limit_test=128, progress=False)
    test = DataLoader(ds.x_test, ds.y_test, 128, shuffle=False, mean=ds.mean, std=ds.std)
    return ds, test


def _loader(ds):
    return DataLoader(ds.x_train, ds.y_train, 64, seed=0, mean=ds.mean, std=ds.std)


def _trainer(name, model="mlp", **options):
    m = build_model(model, in_channels=1, image_size=28, num_classes=10, seed=0)
    return build_trainer(name, m, lambda p: build_optimizer("adam", p, lr=1e-3), **options)


def _segments_of_this_process():
    return (
        sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"tdgl_{os.getpid()}_"))
        if os.path.isdir("/dev/shm")
        else []
    )


def test_split_modules_is_contiguous():
    assert split_modules(5, 2) == [[0, 1, 2], [3, 4]]
    # by cost: the pipeline's pace is its most loaded worker; the best contiguous split minimises it
    assert split_modules(5, 2, costs=[5, 1, 1, 1, 1]) == [[0], [1, 2, 3, 4]]
    assert split_modules(5, 2, costs=[1, 1, 1, 1, 5]) == [[0, 1, 2, 3], [4]]
    assert split_modules(4, 2, costs=[2, 3, 3, 2]) == [[0, 1], [2, 3]]
    assert split_modules(3, 3, costs=[1, 9, 1]) == [[0], [1], [2]]
    assert split_modules(3, 3) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="workers must be between 1 and 3"):
        split_modules(3, 4)


@pytest.mark.parametrize("trainer_name, model, workers", [("dgl", "mlp", 1), ("dgl", "cnn", 2), ("lls", "mlp", 2)])
def test_fifo_pipeline_gives_the_in_process_weights(data, trainer_name, model, workers):
    """No gradient crosses a module boundary and fifo rings keep every batch in order, so each module sees
    exactly the in-process trainer's inputs: same weights, same test accuracy."""
    ds, test = data
    reference = _trainer(trainer_name, model)
    history = fit(reference, _loader(ds), test, 1, progress=False, log=lambda *a: None)
    trainer = _trainer(trainer_name, model)
    metrics = run_module_parallel(trainer, _loader(ds), 1, workers=workers, timeout=60)
    expected, got = reference.state_dict(), trainer.state_dict()
    for key in expected["model"]:
        np.testing.assert_allclose(got["model"][key], expected["model"][key], rtol=0, atol=1e-6, err_msg=key)
    for name in expected["aux"]:
        for key in expected["aux"][name]:
            np.testing.assert_allclose(got["aux"][name][key], expected["aux"][name][key], rtol=0, atol=1e-6)
    assert [o["steps"] for o in got["optimizers"]] == [o["steps"] for o in expected["optimizers"]]
    assert trainer.evaluate(test)["accuracy"] == pytest.approx(history[0]["test_accuracy"])
    assert metrics["train_loss"][0] == pytest.approx(history[0]["train_loss"], abs=1e-5)
    assert [w["steps"] for w in metrics["workers"]] == [len(_loader(ds))] * workers
    # fifo: every worker learns from every batch once, so samples/s counts every sample fed
    for w in metrics["workers"]:
        assert (w["fresh_batches"], w["fresh_samples"], w["replayed_batches"], w["skipped_batches"]) == (4, 256, 0, 0)
    assert metrics["samples"] == metrics["fed_samples"] == 256
    assert metrics["samples_per_second"] == pytest.approx(256 / metrics["seconds"])
    assert work_summary(metrics["workers"]) == ""
    json.dumps(metrics)  # JSON-ready
    assert _segments_of_this_process() == [] and mp.active_children() == []


def test_async_dgl_uses_replay_rings_and_reports_per_worker_metrics(data):
    ds, test = data
    trainer = _trainer("async-dgl", buffer_size=2)
    initial = trainer.state_dict()["model"]
    metrics = run_module_parallel(trainer, _loader(ds), 2, workers=2, timeout=60)
    json.dumps(metrics)
    assert metrics["policy"] == "replay" and metrics["rings"][1]["policy"] == "replay"
    assert metrics["rings"][1]["slots"] == 2
    first, second = metrics["workers"]
    assert first["steps"] == 2 * len(_loader(ds)) and first["replayed_batches"] == 0  # the data: each batch once
    # The consumer replays while it waits (no reuse cap), so its steps are fresh batches plus replays; it
    # can take each fresh batch only once, and it stops only after its producer did.
    fresh = second["fresh_batches"]
    assert fresh == second["steps"] - second["replayed_batches"]
    # (the ring may count one more serve than steps: the replay it offered after the producer stopped)
    assert 1 <= fresh <= first["steps"] and metrics["rings"][1]["served"] - second["steps"] in (0, 1)
    assert fresh + metrics["rings"][1]["dropped_unused"] == first["steps"]  # every batch: served or overwritten unseen
    assert second["skipped_batches"] == metrics["rings"][1]["dropped_unused"]
    assert metrics["samples"] == second["fresh_samples"] and metrics["fed_samples"] == first["samples"] == 512
    for w in metrics["workers"]:
        assert w["busy_seconds"] > 0 and w["idle_seconds"] >= 0 and w["samples_per_second"] > 0
    learned = trainer.state_dict()["model"]
    assert all(not np.array_equal(learned[k], initial[k]) for k in initial if k.endswith("weight"))  # weights came back
    assert np.isfinite(trainer.evaluate(test)["loss"])
    assert _segments_of_this_process() == [] and mp.active_children() == []


@pytest.mark.parametrize(
    "hidden, groups",
    [
        ((16, 1024, 1024), [[0], [1, 2]]),  # the case: the consumer is far slower and skips batches
        ((1024, 16, 16), [[0], [1], [2]]),  # a slow first stage: worker 1 replays and passes the replays on
    ],
    ids=["slow-consumer", "replays-passed-on"],
)
def test_replay_samples_per_second_counts_what_every_worker_learned_from(data, hidden, groups):
    """docs/protocol.md, section 4: an asynchronous pipeline's samples/s is the samples *every* module learned
    from (min over workers of fresh samples) per second, not what the first worker took. Each worker's
    counts add up: fresh + replayed = its steps, fresh + skipped = the batches fed.

    slow-consumer: modules 1-2 cost ~25x module 0 (whose head is 16 wide), so worker 1 takes a few of the 8
    batches and the ring overwrites the rest unseen (the old figure, worker 0's samples, was far too high).
    replays-passed-on: worker 1 waits for a slow worker 0 and replays meanwhile; each replay's output is a
    new entry in ring 2 (uses 1) computed from data worker 2 may have learned from already. Counting new
    entries would make worker 2 learn from more batches than were fed; counting origins cannot."""
    ds, _ = data
    loader = DataLoader(ds.x_train, ds.y_train, 32, seed=0, mean=ds.mean, std=ds.std)  # 8 batches
    model = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=0, hidden=hidden)
    trainer = build_trainer("async-dgl", model, lambda p: build_optimizer("adam", p, lr=1e-3), buffer_size=2)
    metrics = run_module_parallel(trainer, loader, 1, groups=groups, timeout=60)
    workers, fed = metrics["workers"], len(loader)
    for w in workers:
        assert w["fresh_batches"] + w["replayed_batches"] == w["steps"]
        assert w["fresh_samples"] + w["replayed_samples"] == w["samples"]
        assert w["fresh_batches"] + w["skipped_batches"] == fed and w["skipped_batches"] >= 0
    assert workers[0]["fresh_samples"] == metrics["fed_samples"] == 256
    assert metrics["samples"] == min(w["fresh_samples"] for w in workers)
    assert metrics["samples_per_second"] == pytest.approx(metrics["samples"] / metrics["seconds"])
    if len(groups) == 2:
        assert workers[1]["skipped_batches"] > 0, workers[1]  # the setup makes worker 1 miss batches
        assert workers[1]["skipped_batches"] == metrics["rings"][1]["dropped_unused"]
        assert metrics["samples_per_second"] < metrics["fed_samples"] / metrics["seconds"]
        assert "skipped" in work_summary(workers)
    else:
        assert metrics["rings"][2]["pushed"] > fed, metrics["rings"]  # worker 1 passed replays on
        assert workers[1]["replayed_batches"] > 0
        # Ring 2 held more entries than data batches, yet worker 2 learned from at most every batch once:
        # the count is by origin. (Whether worker 2 took one of those replayed entries before the ring
        # overwrote it depends on timing; when it did, the step counts as a replay, not as new data.)
        assert workers[2]["fresh_batches"] <= fed
        if workers[2]["steps"] > fed:
            assert workers[2]["replayed_batches"] == workers[2]["steps"] - workers[2]["fresh_batches"] > 0
    assert _segments_of_this_process() == [] and mp.active_children() == []


def kill_when_running(worker_name, after=1.0):
    """Start a thread that SIGKILLs the worker process `worker_name` `after` s after it appears; returns
    (thread, record): record gets "pids" (every child then), "pid" and "at" (time.monotonic() of the kill)."""
    killed = {}

    def kill():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = [p for p in mp.active_children() if p.name == worker_name]
            if workers:
                time.sleep(after)  # let the run get going
                killed["pid"] = workers[0].pid
                killed["pids"] = [p.pid for p in mp.active_children()]
                os.kill(workers[0].pid, signal.SIGKILL)
                killed["at"] = time.monotonic()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread, killed


def assert_stopped_cleanly(killed, raised_at, ring_names, rings):
    """The run raised within seconds of the kill, and left no process and no shared-memory segment."""
    assert "at" in killed, "the worker was never seen running"
    assert raised_at - killed["at"] < 10
    assert mp.active_children() == []
    for pid in killed["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert len(ring_names) == rings
    for name in ring_names:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    assert _segments_of_this_process() == []


def test_killed_worker_stops_the_run_cleanly(data):
    ds, _ = data
    killer, killed = kill_when_running("tinydgl-worker-1")
    with pytest.raises(WorkerFailed, match=r"worker 1 \(module 1\) died \(signal SIGKILL\)") as caught:
        run_module_parallel(_trainer("dgl"), _loader(ds), 5000, workers=2, timeout=60)  # far longer than the test
    raised_at = time.monotonic()
    killer.join()
    assert_stopped_cleanly(killed, raised_at, caught.value.ring_names, rings=2)


def test_cli_workers_matches_in_process_and_rejects_other_trainers(tmp_path, capsys):
    from tinydgl.cli import main

    common = [
        "train",
        "--no-progress",
        "--trainer",
        "dgl",
        "--model",
        "mlp",
        "--limit-train",
        "256",
        "--limit-test",
        "100",
        "--epochs",
        "2",
    ]
    assert main([*common, "--metrics-json", str(tmp_path / "a.json")]) == 0
    assert main([*common, "--workers", "2", "--metrics-json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    for x, y in zip(a["history"], b["history"]):
        assert y["test_accuracy"] == pytest.approx(x["test_accuracy"])
        assert y["train_loss"] == pytest.approx(x["train_loss"], abs=1e-5)
    assert [w["modules"] for w in b["history"][0]["workers"]] == [[0], [1]]
    assert main(["train", "--no-progress", "--model", "mlp", "--limit-train", "256", "--workers", "2"]) != 0
    assert "got 'bp'. Choose one of those, or run 'bp' with --parallel sync or downpour" in capsys.readouterr().err
    assert mp.active_children() == [] and _segments_of_this_process() == []


def test_devices_need_the_cupy_backend(data):
    ds, _ = data
    with pytest.raises(ValueError, match="needs the CuPy backend"):
        run_module_parallel(_trainer("dgl"), _loader(ds), 1, workers=2, devices=[0, 1])


@pytest.mark.gpu
@pytest.mark.parametrize("activations", ["host", "device"])
def test_workers_on_gpus_give_the_in_process_weights(data, activations, monkeypatch):
    """CuPy backend: worker j on GPU j % n, batches staged through host memory in the rings or kept on the
    GPUs (`DeviceRing`, CUDA IPC: not run on a GPU yet); fifo keeps the in-process weights (up to float32
    reduction order on the GPU)."""
    from tinydgl.backend import is_gpu_available, to_numpy, use_backend
    from tinydgl.runtime.device_ring import device_links_available

    if not is_gpu_available():
        pytest.skip("needs CuPy and a visible NVIDIA GPU")
    ds, test = data
    with use_backend("cupy", 0):
        if activations == "host":
            monkeypatch.setenv("TINYDGL_DEVICE_LINKS", "0")
        elif not device_links_available()[0]:
            pytest.skip(f"activations cannot stay on the GPUs here: {device_links_available()[1]}")
        reference, parallel = _trainer("dgl", "cnn"), _trainer("dgl", "cnn")
        fit(reference, _loader(ds), test, 1, progress=False, log=lambda *a: None)
        assert run_module_parallel(parallel, _loader(ds), 1, workers=2)["activations"] == activations
        for p, q in zip(reference.model.parameters(), parallel.model.parameters()):
            np.testing.assert_allclose(to_numpy(p.data), to_numpy(q.data), rtol=1e-4, atol=1e-5)


def test_an_explicit_split_is_used_and_checked(data):
    ds, _ = data
    metrics = run_module_parallel(_trainer("dgl", "cnn"), _loader(ds), 1, groups=[[0], [1]])
    assert [w["modules"] for w in metrics["workers"]] == [[0], [1]]
    with pytest.raises(ValueError, match="contiguous"):
        run_module_parallel(_trainer("dgl", "cnn"), _loader(ds), 1, groups=[[1], [0]])


SIGNAL_PROBE = """
import signal, sys, multiprocessing as mp
from tinydgl.runtime.processes import ignore_stop_signals, start_worker

def probe(conn):
    blocked_at_start = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ignore_stop_signals()
    blocked_after = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    conn.send((conn.recv(), blocked_at_start, blocked_after))

if __name__ == "__main__":
    process, conn = start_worker(mp.get_context("spawn"), probe, "probe", (), "payload", [])
    process_pid = process.pid
    import os; os.kill(process_pid, signal.SIGINT)  # while the child is still starting (importing NumPy)
    print(conn.recv(), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    process.join(30)
    print("exit", process.exitcode)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks on this platform")
def test_a_ctrl_c_while_a_worker_starts_does_not_kill_it(tmp_path):
    """CI caught a worker dying of a Ctrl-C that arrived while it was still importing NumPy (a
    KeyboardInterrupt traceback on stderr). Workers now start with SIGINT/SIGTERM blocked and drop them once
    they ignore them; the parent's mask is restored right after the start."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(SIGNAL_PROBE)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["('payload', True, False) False", "exit 0"]


STOPPED_WHILE_STARTING = """
import os, signal, sys, multiprocessing as mp
from tinydgl.runtime.processes import start_worker, stop_processes

def idle(conn):
    conn.recv()

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    start = ctx.Process.start
    def start_and_interrupt(self):
        start(self)
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C during the start: held until the signals are unblocked
    ctx.Process.start = start_and_interrupt
    processes = []
    try:
        start_worker(ctx, idle, "idle", (), "payload", processes)
    except KeyboardInterrupt:
        print("interrupted; known to the clean-up:", len(processes))
        stop_processes(processes)
        print("stopped:", [p.exitcode is not None for p in processes])
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks on this platform")
def test_a_ctrl_c_during_a_worker_start_leaves_it_to_the_clean_up(tmp_path):
    """A Ctrl-C (or SIGTERM) held back while a worker starts is raised when the signals are unblocked; the
    worker must be in the run's list by then, or the clean-up misses it and it goes on starting after the
    parent exits (found as a spawn traceback when a signal came as a new epoch's workers started)."""
    import subprocess
    import sys

    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_WHILE_STARTING)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    assert proc.stdout.splitlines() == ["interrupted; known to the clean-up: 1", "stopped: [True]"], (
        proc.stdout + proc.stderr
    )
    assert "Traceback" not in proc.stderr, proc.stderr
