"""Activations between GPU workers (`tinydgl.runtime.device_ring`): the host fallback on the CuPy stand-in,
and the DeviceRing's bookkeeping on a fake of CUDA IPC. The device path itself has not run on a GPU yet."""

import ctypes
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cupy_standin import standin_cupy, subprocess_env
from tinydgl.runtime.device_ring import DeviceRing, device_links_available
from tinydgl.runtime.shm_ring import RingClosed

ROOT = Path(__file__).resolve().parent.parent


def test_on_the_standin_two_gpu_workers_fall_back_to_host_memory(tmp_path):
    metrics = tmp_path / "m.json"
    cmd = [
        sys.executable,
        "-m",
        "tinydgl",
        "train",
        "--backend",
        "cupy",
        "--trainer",
        "dgl",
        "--workers",
        "2",
        "--devices",
        "0,1",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--batch-size",
        "32",
        "--seed",
        "0",
        "--no-progress",
        "--metrics-json",
        str(metrics),
    ]
    env = subprocess_env(devices=2)
    env["PYTHONPATH"] += f":{ROOT}"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(metrics.read_text())["history"][0]["activations"] == "host"


def test_the_standin_and_the_switch_say_why_activations_go_through_the_host(monkeypatch):
    with standin_cupy(devices=2):
        assert device_links_available() == (False, "CUDA IPC unavailable (NotImplementedError)")
    monkeypatch.setenv("TINYDGL_DEVICE_LINKS", "0")
    assert device_links_available() == (False, "TINYDGL_DEVICE_LINKS=0")


class _Array(np.ndarray):
    """A host array with CuPy's `.data.ptr`, for the fake below."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _fake_cupy():
    """CUDA IPC in one process: a handle is the pointer itself, memcpy is memmove. Enough to run the ring's
    bookkeeping (handles published before a slot is READY, slots reused, the producer's wait at the end)."""

    def memory(size):
        block = np.zeros(size, np.uint8)
        return types.SimpleNamespace(ptr=block.ctypes.data, block=block)

    runtime = types.SimpleNamespace(
        memcpyDefault=4,
        getDevice=lambda: 1,
        deviceSynchronize=lambda: None,
        ipcCloseMemHandle=lambda p: None,
        ipcGetMemHandle=lambda ptr: ptr.to_bytes(8, "little") + bytes(56),
        ipcOpenMemHandle=lambda handle: int.from_bytes(handle[:8], "little"),
        memcpy=lambda dst, src, n, kind: ctypes.memmove(dst, src, n),
    )
    return types.SimpleNamespace(
        cuda=types.SimpleNamespace(Memory=memory, runtime=runtime),
        asarray=lambda x: np.asarray(x).view(_Array),
        ascontiguousarray=lambda x: np.ascontiguousarray(x).view(_Array),
        empty=lambda shape, dtype: np.empty(shape, dtype).view(_Array),
    )


def test_a_device_ring_passes_batches_through_the_producers_slots_in_order(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    with DeviceRing(2, 4, (3,)) as producer:
        consumer = DeviceRing.attach(producer.handle)  # the worker above's view of the same segment
        assert producer.__reduce__()[1][1] is DeviceRing  # a worker attaches to a DeviceRing, not a SharedRing
        for step in range(5):  # more batches than slots: each slot is written again
            x = np.full((step % 4 + 1, 3), step, np.float32)
            assert producer.put(x, np.arange(len(x)), timeout=0)
            got, labels, entry = consumer.get(timeout=0)
            assert got.tolist() == x.tolist() and labels.tolist() == list(range(len(x))) and entry.serial == step
        consumer.finish()  # read to the end: the producer may free its slots
        producer.finish()
        assert consumer.producer_stopped()
        consumer.close()


def test_a_device_rings_producer_does_not_wait_for_its_consumer_once_the_run_is_aborted(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    with DeviceRing(2, 4, (3,)) as producer:
        producer.put(np.ones((1, 3), np.float32), np.zeros(1, np.int64))
        producer.abort()  # the consumer never finishes: a stopped run must not leave the producer waiting
        with pytest.raises(RingClosed):
            producer.finish()
