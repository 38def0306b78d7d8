"""DNI and cDNI on the module-parallel engine (tinydgl.runtime.engine), with synthesizer targets flowing back.

One worker holds the whole network: nothing crosses a boundary, so the run must be the in-process trainer
exactly. With BP(lambda) > 0 every stage waits for the gradient from above (lock-step), so two workers are
the in-process trainer exactly too. With lambda = 0 two workers run at the same time and each boundary
synthesizer learns from targets that come back late: such a run must still learn, above what the network
reaches when its lower groups never learn. Weights are compared with atol=0: tests/conftest.py pins one BLAS
thread, as the workers have.
"""

import json
import multiprocessing as mp

import numpy as np
import pytest

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.runtime.engine import fit_module_parallel, run_module_parallel
from tinydgl.runtime.metrics import plot_timeline
from tinydgl.train import fit
from tinydgl.trainers import build_trainer


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("mnist-small", limit_train=256, limit_test=128, progress=False)
    return ds, DataLoader(ds.x_test, ds.y_test, 128, shuffle=False, mean=ds.mean, std=ds.std)


def _loader(ds, batch=64):
    return DataLoader(ds.x_train, ds.y_train, batch, seed=0, mean=ds.mean, std=ds.std)


def _trainer(name, seed=0, **options):
    model = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=seed)
    return build_trainer(
        name, model, lambda p: build_optimizer("adam", p, lr=1e-3), seed=seed, synthesizer="linear", **options
    )


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa["model"]:
        np.testing.assert_array_equal(sb["model"][key], sa["model"][key], err_msg=key)
    for name in sa["aux"]:  # the synthesizers
        for key in sa["aux"][name]:
            np.testing.assert_array_equal(sb["aux"][name][key], sa["aux"][name][key], err_msg=f"{name}.{key}")
    assert [o["steps"] for o in sb["optimizers"]] == [o["steps"] for o in sa["optimizers"]]


@pytest.mark.parametrize(
    "name, workers, options",
    [
        ("dni", 1, {}),
        ("cdni", 1, {"update_prob": 0.5}),
        ("cdni", 2, {"bp_lambda": 0.5}),  # lock-step: each stage waits for the gradient from above
        ("dni", 2, {"bp_lambda": 1.0, "update_prob": 0.5}),
    ],
)
def test_one_worker_or_lock_step_is_the_in_process_trainer(small, name, workers, options):
    ds, test = small
    reference = _trainer(name, **options)
    fit(reference, _loader(ds), test, 1, progress=False, log=lambda *a: None)
    trainer = _trainer(name, **options)
    metrics = run_module_parallel(trainer, _loader(ds), 1, workers=workers, balance=False, timeout=60)
    _assert_same(reference, trainer)
    assert [w["steps"] for w in metrics["workers"]] == [4] * workers
    assert mp.active_children() == []


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist-small", progress=False)  # all 4,000 training digits
    return ds, DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)


def test_two_workers_learn_from_late_targets(digits, tmp_path):
    """cDNI, 2 workers, 2 epochs: 0.91-0.92 test accuracy (seeds 0, 1), as in one process (0.91). A run whose
    lower groups never learn (sg_scale 1e-9) reaches 0.83: 0.88 is out of its reach."""
    ds, test = digits
    trainer = _trainer("cdni")
    history = fit_module_parallel(
        trainer, _loader(ds), test, 2, workers=2, balance=False, log=lambda *a: None, timeout=120
    )
    assert history[-1]["test_accuracy"] > 0.88, history
    lower, upper = history[-1]["workers"]
    batches = len(_loader(ds))
    # every batch the upper worker ran sent its lowest group's input gradient back: one target per batch
    assert lower["targets_received"] == batches and "targets_received" not in upper
    assert sum(lower["target_lateness_counts"].values()) == batches
    assert 0 <= lower["target_lateness_mean"] <= lower["target_lateness_max"] <= 2 + 2 + 1  # bounded by the rings
    assert np.isfinite(lower["synthesizer_loss_mean"]) and lower["synthesizer_loss_mean"] > 0
    assert len(lower["feedback_timeline"]) == batches
    json.dumps(history)
    plot_timeline(history[-1]["workers"], tmp_path / "timeline.png")  # with the targets' arrivals drawn
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    assert mp.active_children() == []


def test_checkpoints_resume_a_parallel_dni_run(small, tmp_path):
    """Two epochs in one go equal one epoch, a stop, and a resumed second epoch (update_prob's draws are
    seeded by epoch and batch, so the resumed epoch draws what the uninterrupted one drew)."""
    ds, test = small
    straight = _trainer("cdni", update_prob=0.5)
    fit_module_parallel(
        straight, _loader(ds), test, 2, workers=1, log=lambda *a: None, checkpoint_dir=tmp_path / "straight"
    )
    resumed = _trainer("cdni", update_prob=0.5)
    fit_module_parallel(resumed, _loader(ds), test, 1, workers=1, log=lambda *a: None, checkpoint_dir=tmp_path / "r")
    again = _trainer("cdni", update_prob=0.5)
    history = fit_module_parallel(
        again, _loader(ds), test, 2, workers=1, log=lambda *a: None, checkpoint_dir=tmp_path / "r", resume=True
    )
    assert [h["epoch"] for h in history] == [1, 2]
    _assert_same(straight, again)


def test_cli_runs_dni_on_workers(tmp_path, capsys):
    from tinydgl.cli import main

    args = [
        "train",
        "--no-progress",
        "--trainer",
        "dni",
        "--model",
        "mlp",
        "--synthesizer",
        "linear",
        "--limit-train",
        "256",
        "--limit-test",
        "100",
        "--epochs",
        "1",
    ]
    assert main([*args, "--workers", "2", "--metrics-json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert [w["modules"] for w in metrics["history"][0]["workers"]] in ([[0], [1, 2]], [[0, 1], [2]])
    assert main([*args, "--workers", "4"]) != 0
    assert "has 3 group(s) of blocks between synthesizers" in capsys.readouterr().err


def test_a_killed_dni_worker_stops_the_run_and_frees_both_directions(small):
    """The links back down are rings like the ones up: killing a worker stops the run within seconds, with
    no process left and no shared-memory segment (of the three rings of a 2-worker DNI run) left behind."""
    import time

    from test_engine import assert_stopped_cleanly, kill_when_running
    from tinydgl.runtime.engine import WorkerFailed

    ds, _ = small
    killer, killed = kill_when_running("tinydgl-worker-0")
    with pytest.raises(WorkerFailed, match=r"worker 0 .* died \(signal SIGKILL\)") as caught:
        run_module_parallel(_trainer("cdni"), _loader(ds), 5000, workers=2, balance=False, timeout=60)
    raised_at = time.monotonic()
    killer.join()
    assert_stopped_cleanly(killed, raised_at, caught.value.ring_names, rings=3)  # the feed, one up, one down
