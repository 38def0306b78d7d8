"""The process plumbing every local engine shares (`tinydgl.runtime.processes`): the start handshake."""

import multiprocessing as mp

import pytest

from tinydgl.runtime.processes import READY, WorkerFailed, stop_processes, wait_ready, start_worker


def _ready(index, conn):
    conn.recv()
    conn.send((READY, index))
    conn.recv()  # stay until the parent closes its end


def _dies_before_ready(index, conn):
    conn.recv()
    raise SystemExit(3)


def test_the_start_handshake_names_a_worker_that_died_before_it_was_ready():
    ctx, processes, conns = mp.get_context("spawn"), [], []
    try:
        for index, target in enumerate((_ready, _dies_before_ready)):
            conns.append(start_worker(ctx, target, f"w{index}", (index,), "payload", processes)[1])
        with pytest.raises(WorkerFailed, match=r"worker 1 died \(exit code 3\) before it started"):
            wait_ready(conns, processes, lambda w: f"worker {w}", timeout=60)
    finally:
        for conn in conns:
            conn.close()
        stop_processes(processes)


def test_the_start_handshake_waits_for_every_worker():
    ctx, processes, conns = mp.get_context("spawn"), [], []
    try:
        for index in range(2):
            conns.append(start_worker(ctx, _ready, f"w{index}", (index,), "payload", processes)[1])
        wait_ready(conns, processes, lambda w: f"worker {w}", timeout=60)
        assert all(p.is_alive() for p in processes)  # both said READY and are still waiting for work
    finally:
        for conn in conns:
            conn.close()
        stop_processes(processes)
