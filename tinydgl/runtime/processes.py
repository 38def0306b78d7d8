"""Worker processes for every local engine: start them, hand them their work, watch them, stop them.

The module-parallel engine (`engine`), dp-sync (`data_parallel`) and Downpour (`downpour`) all run their
workers the same way, and this file is that way, written once:

- `start_worker` spawns a worker and hands it its payload (modules, stage or trainer) through a socket
  pair, with Ctrl-C and SIGTERM blocked while it starts (`stop_signals_blocked`); the worker's first acts
  are `ignore_stop_signals()` and `conn.recv()`. BLAS threads: `worker_thread_environment`.
- Messages from a worker to the parent are tuples whose first item is a kind: READY (it holds its
  payload), DONE (its results follow) or ERROR (the traceback or reason follows).
- The parent waits with `multiprocessing.connection.wait` on every worker's pipe *and* `Process.sentinel`
  (`wait_ready`, `poll_workers`), so a worker that dies without a word is noticed at once, not after a
  timeout; `receive_result` turns its death or its error into `WorkerFailed`.
- `stop_processes` joins, then terminates, then kills: no worker outlives its run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from multiprocessing.connection import wait

# One poll interval for every wait that must also notice a failure: a semaphore or ring wait wakes this
# often to look at an abort flag, a dead parent or a dead worker. 0.1 s: a Ctrl-C or a crash stops the run
# before a person notices a delay, and ten wake-ups a second per waiting process cost nothing measurable.
# (The MPI links' spin between Iprobes is another thing, a latency: `links.MPI_SPIN_S`.)
POLL_S = 0.1

# The kinds of message a worker sends its parent (the first item of each tuple).
ERROR, DONE, READY = "error", "done", "ready"

# BLAS reads the first three when NumPy starts; tinydgl.threads reads them too, TINYDGL_NUM_THREADS first.
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYDGL_NUM_THREADS")


@contextlib.contextmanager
def worker_thread_environment(threads):
    """Set the BLAS/OpenMP thread variables while worker processes start (a spawned child reads them when it
    imports NumPy), then restore the parent's own values."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(int(threads)) for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_worker(ctx, target, name, args, payload, processes):
    """Start a spawned worker `target(*args, conn)`, append it to `processes` and send it `payload` (its
    modules or trainer) through `conn`, one end of a socket pair; returns (process, the parent's end).

    The process joins `processes` while stop signals are still blocked; the worker's first act is `conn.recv()`.
    Why both, and why the payload is not a `Process` argument: docs/design/runtime.md, "Starting a worker".
    """
    mine, theirs = ctx.Pipe(duplex=True)
    process = ctx.Process(target=target, name=name, daemon=True, args=(*args, theirs))
    with stop_signals_blocked():
        process.start()
        processes.append(process)
    theirs.close()  # the child holds its end now; ours sees EOF once the child exits
    try:
        mine.send(payload)
    except OSError as err:
        process.join(1)
        mine.close()
        raise WorkerFailed(
            f"{name} died ({describe_exit(process)}) before it received its work ({err.__class__.__name__}). If you "
            f'started the run from a script, put the code under `if __name__ == "__main__":` '
            f"(spawned workers re-import the main script)."
        ) from None
    return process, mine


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_blocked():
    """Block SIGINT and SIGTERM in this thread while a worker process starts. The child inherits the mask, so
    a Ctrl-C that reaches the process group while the child is still importing NumPy waits until the child
    ignores it (`ignore_stop_signals`) instead of ending it with a KeyboardInterrupt traceback; the parent
    gets its own copy of the signal as soon as the block ends. (CPython's resource tracker starts the same
    way.) Where there is no `pthread_sigmask` (Windows), nothing is blocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # Starting a process first starts multiprocessing's resource tracker if it is not running, and that
    # start ends by unblocking these very signals; so start it before blocking them.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def ignore_stop_signals():
    """In a worker: leave Ctrl-C (SIGINT) and SIGTERM to the parent, which stops every worker through its
    rings or queues and cleans up. A terminal's Ctrl-C and a cluster's SIGTERM reach the whole process group;
    a worker that died of them would look like a crash. (A worker still exits if its parent dies.) The worker
    started with both signals blocked (`stop_signals_blocked`); once they are ignored, any that arrived in the
    meantime are dropped by unblocking them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class WorkerFailed(RuntimeError):
    """A worker process died or raised; the run was stopped and cleaned up.

    ring_names: the shared-memory segments the run created (all unlinked by the time this is raised)."""

    ring_names: tuple = ()


def describe_exit(process):
    """'exit code 1' or 'signal SIGKILL': how a finished worker process ended."""
    process.join(1)
    code = process.exitcode
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


def receive_result(conn, process, name, kind=DONE):
    """A worker's message of `kind` (DONE: its results; READY: it holds its payload) from `conn`, or None if
    none has arrived yet (the worker is still running). Raises WorkerFailed if the worker reported an
    error or died without reporting."""
    try:
        message = conn.recv() if conn.poll(0) else None
    except (EOFError, OSError):
        message = None
    if message is not None and message[0] == kind:
        return message
    if message is not None:
        raise WorkerFailed(f"{name} failed:\n{message[2]}")
    if not process.is_alive():
        raise WorkerFailed(
            f"{name} died ({describe_exit(process)}) before it {'started' if kind == READY else 'finished'}"
            f"; the run was stopped. Check memory (a killed process often means out of memory) and "
            f"run again."
        )
    return None


def wait_ready(conns, processes, name, timeout):
    """Wait until every worker has said READY (it holds its payload): a worker that started late would
    otherwise find its input overwritten, or start after the others had finished. Raises WorkerFailed if
    one dies or reports an error first, or if they are not all ready within `timeout` s."""
    deadline, ready = time.monotonic() + timeout, {}
    while len(ready) < len(processes):
        left = deadline - time.monotonic()
        if left <= 0:
            late = [name(w) for w in range(len(processes)) if w not in ready]
            raise WorkerFailed(f"{', '.join(late)} did not start within {timeout} s.")
        poll_workers(conns, processes, ready, name, left, kind=READY)


def poll_workers(conns, processes, results, name, timeout, kind=DONE):
    """Wait up to `timeout` s for a message or the exit of any worker that has not reported yet; store each
    message of `kind` in `results[w]`. Raises WorkerFailed if a worker reported an error or died.
    name(w): how errors name worker w."""
    pending = [w for w in range(len(processes)) if w not in results]
    waitables = [conns[w] for w in pending] + [processes[w].sentinel for w in pending]
    ready = wait(waitables, timeout) if waitables else []
    for w in pending:
        if conns[w] in ready or processes[w].sentinel in ready:
            message = receive_result(conns[w], processes[w], name(w), kind)
            if message is not None:
                results[w] = message


def stop_processes(processes):
    """Wait briefly for each worker to exit, then terminate it, then kill it: none outlives the run."""
    for process in processes:
        process.join(2)
        if process.is_alive():
            process.terminate()
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join()
