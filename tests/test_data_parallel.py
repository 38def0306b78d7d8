"""Synchronous data-parallel SGD (tinydgl.runtime.data_parallel): W spawned workers, gradients averaged
through shared memory every step. Each spawn costs about a second, so the tests are few and tiny."""

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.nn import Parameter
from tinydgl.optim import build_optimizer
from tinydgl.runtime.data_parallel import run_data_parallel, shard_bounds
from tinydgl.runtime.processes import WorkerFailed
from tinydgl.trainers import build_trainer


@pytest.fixture(scope="module")
def data():
    # 150 images in batches of 64: the last batch has 22, and 3 workers would get shards of 8, 7, 7
    return load_dataset("mnist-small", limit_train=150, limit_test=64, progress=False)


def _loader(ds):
    return DataLoader(ds.x_train, ds.y_train, 64, seed=0, mean=ds.mean, std=ds.std, dtype="float64")


def _trainer(model, optimizer, **kwargs):
    m = build_model(model, in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float64", **kwargs)
    lr = 0.05 if optimizer == "sgd" else 1e-3
    options = {"momentum": 0.9} if optimizer == "sgd" else {}
    return build_trainer("bp", m, lambda p: build_optimizer(optimizer, p, lr=lr, **options))


def _segments_of_this_process():
    return (
        sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"tdgl_{os.getpid()}_"))
        if os.path.isdir("/dev/shm")
        else []
    )


def _assert_clean():
    assert _segments_of_this_process() == [] and mp.active_children() == []


def test_shard_bounds_cover_the_batch_evenly():
    assert shard_bounds(22, 3) == [(0, 8), (8, 15), (15, 22)]
    assert shard_bounds(64, 2) == [(0, 32), (32, 64)]
    assert shard_bounds(1, 2) == [(0, 1), (1, 1)]


@pytest.mark.parametrize(
    "model, kwargs, optimizer, workers",
    [
        ("cnn", {}, "sgd", 2),
        ("mlp", {"batchnorm": False}, "adam", 3),
        ("cnn", {}, "adamw-sf", 2),  # schedule-free: the averaged gradient feeds the same y/z update everywhere
    ],
)
def test_matches_single_process_large_batch_sgd(data, model, kwargs, optimizer, workers):
    """The issue's requirement: the averaged shard gradients are the whole batch's gradient, so the weights
    after two epochs (uneven last batch included) equal single-process backprop on whole batches."""
    reference = _trainer(model, optimizer, **kwargs)
    loader = _loader(data)
    losses = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        losses.append([(reference.train_step(x, y), int(y.shape[0])) for x, y in loader])
    trainer = _trainer(model, optimizer, **kwargs)
    metrics = run_data_parallel(trainer, _loader(data), 2, workers=workers, timeout=60)
    expected, got = reference.state_dict(), trainer.state_dict()
    for key in expected["model"]:
        np.testing.assert_allclose(got["model"][key], expected["model"][key], rtol=0, atol=1e-10, err_msg=key)
    assert got["optimizers"][0]["steps"] == expected["optimizers"][0]["steps"] == 2 * len(loader)
    for key in expected["optimizers"][0]["buffers"]:
        np.testing.assert_allclose(
            got["optimizers"][0]["buffers"][key],
            expected["optimizers"][0]["buffers"][key],
            rtol=0,
            atol=1e-10,
            err_msg=key,
        )
    for e in range(2):
        n = sum(s for _, s in losses[e])
        assert metrics["train_loss"][e] == pytest.approx(sum(l * s for l, s in losses[e]) / n, abs=1e-10)
    assert metrics["steps"] == 2 * len(loader) and metrics["samples"] == 2 * 150
    assert [w["samples"] for w in metrics["workers"]] == [
        sum(b - a for a, b in (shard_bounds(64, workers)[w],) * 4)
        + 2 * (shard_bounds(22, workers)[w][1] - shard_bounds(22, workers)[w][0])
        for w in range(workers)
    ]
    _assert_clean()


class _Loader:
    """A loader of fixed batches that can hurt a worker from inside the parent's loop."""

    def __init__(self, batches, on_batch=None):
        self.batches, self.on_batch, self.batch_size, self.dtype = batches, on_batch, 8, "float64"

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if self.on_batch:
                self.on_batch(i)
            yield batch


def _batches():
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)) for _ in range(4)]
    return batches


def test_a_worker_exception_stops_the_run_cleanly():
    m = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=0, dtype="float64", batchnorm=False)
    stray = Parameter(np.zeros(3))  # in the optimizer but not in the model: no gradient, so every worker raises
    trainer = build_trainer("bp", m, lambda p: build_optimizer("sgd", [*p, stray], lr=0.1))
    with pytest.raises(WorkerFailed, match=r"(?s)worker \d failed.*got no gradient"):
        run_data_parallel(trainer, _Loader(_batches()), 1, workers=2, timeout=60)
    _assert_clean()


def test_a_killed_worker_stops_the_run_cleanly():
    def kill_worker_1(i):
        if i == 2:
            victim = next(p for p in mp.active_children() if p.name == "tinydgl-dp-worker-1")
            os.kill(victim.pid, signal.SIGKILL)

    trainer = _trainer("mlp", "sgd", batchnorm=False)
    with pytest.raises(WorkerFailed, match=r"worker 1 died \(signal SIGKILL\)"):
        run_data_parallel(trainer, _Loader(_batches(), kill_worker_1), 1, workers=2, timeout=60)
    _assert_clean()


def test_rejects_other_trainers(data):
    m = build_model("mlp", in_channels=1, image_size=28, num_classes=10, seed=0)
    dgl = build_trainer("dgl", m, lambda p: build_optimizer("sgd", p, lr=0.1))
    with pytest.raises(ValueError, match="BackpropTrainer"):
        run_data_parallel(dgl, _loader(data), 1, workers=2)
