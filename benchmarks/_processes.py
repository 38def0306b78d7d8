"""Timing in separate processes, alternated: what bench_step.py and bench_trainers.py share.

Why (docs/protocol.md, section 4): NumPy's OpenBLAS and PyTorch's OpenMP keep their worker threads spinning for
a while after each operation. Two libraries timed in one process, or interleaved step by step, therefore
fight over the cores: the one that runs next loses them to the threads of the one that just ran (on this
project's 2-core machine PyTorch's SmallConv step took ~146 ms interleaved with tinydgl's, ~75-85 ms in a
process of its own). So a parent script never times anything itself. It launches one child process per
measurement (`python <script> --child ...`), each running one library or one method alone with its thread
count fixed in the environment before NumPy or PyTorch is imported, and it alternates the children
(a, b, a, b, ...) over several rounds, so that a change in background load hits every case alike. A table
then gives, per case, the median and the spread (min-max of the per-process medians).

Parent side: `parse_threads`, `print_machine`, `print_load`, `alternate`, `child_result`, `summarize`.
Child side: `report` (print the one JSON line the parent reads), `blas_threads`.
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import namedtuple

# Every variable one of the thread pools we may meet reads: OpenBLAS (NumPy's), OpenMP (PyTorch's intra-op
# pool, and OpenBLAS builds that use OpenMP), MKL (some PyTorch and NumPy builds).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# The 1-minute load average above which we warn before starting: nothing of ours runs yet, so anything
# much above 0 is someone else's work competing for the cores.
QUIET_LOAD = 0.5


class ChildFailed(RuntimeError):
    """A child process exited with an error or printed no result."""


# --- parent side -----------------------------------------------------------------------------------------
def parse_threads(text):
    """'1,all' -> [1, os.cpu_count()]: the thread counts to measure, in order, without repeats."""
    counts = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            count = os.cpu_count() or 1
        elif part.isdigit() and int(part) >= 1:
            count = int(part)
        else:
            raise ValueError(
                f"--threads takes a comma-separated list of positive integers or 'all' (e.g. '1,all'), got {text!r}."
            )
        if count not in counts:
            counts.append(count)
    return counts


def thread_env(threads):
    """os.environ with every thread-pool variable set to `threads`, for a child process."""
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def child_result(args, threads, timeout=None):
    """Run `python <args>` with `threads` threads and return the JSON object it printed last.

    The child's stderr goes straight to ours, so its errors and warnings are seen as they happen.
    """
    out = run_child(args, threads, timeout)
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ChildFailed(f"`{command_text(args)}` printed no JSON result line; its output was:\n{out[-2000:]}")


def run_child(args, threads, timeout=None):
    """Run `python <args>` with `threads` threads in the child's environment; return its stdout."""
    cmd = [sys.executable, *map(str, args)]
    try:
        proc = subprocess.run(cmd, env=thread_env(threads), stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildFailed(
            f"`{command_text(args)}` ran past --timeout {timeout} s and was stopped; "
            "give it more time with a larger --timeout."
        ) from None
    if proc.returncode != 0:
        raise ChildFailed(
            f"`{command_text(args)}` (threads={threads}) exited with code {proc.returncode}; "
            "its error is printed above."
        )
    return proc.stdout


def command_text(args):
    return " ".join(["python", *map(str, args)])


def alternate(cases, rounds, run_case, describe):
    """Run every case once per round, in order, for `rounds` rounds; return {case: [result per round]}.

    The rounds are the outer loop, so the processes of different cases alternate (a, b, a, b, ...) and a
    spell of background load is shared among all cases instead of landing on one of them.
    run_case(case) -> result; describe(case, result) -> one line of progress, printed as each ends.
    """
    results = {case: [] for case in cases}
    total = rounds * len(cases)
    for r in range(rounds):
        for i, case in enumerate(cases):
            load = os.getloadavg()[0]
            result = run_case(case)
            results[case].append(result)
            n = r * len(cases) + i + 1
            print(
                f"  [{n:>{len(str(total))}}/{total}] round {r + 1}: {describe(case, result)}  (load before {load:.2f})",
                flush=True,
            )
    return results


Summary = namedtuple("Summary", "median low high processes")


def summarize(per_process):
    """per_process: one list of samples per process. The median of all samples pooled, and the spread:
    the lowest and highest per-process median (how much the processes disagreed)."""
    per_process = [list(samples) for samples in per_process if samples]
    if not per_process:
        raise ValueError("summarize needs at least one process with samples.")
    medians = [statistics.median(samples) for samples in per_process]
    pooled = [s for samples in per_process for s in samples]
    return Summary(statistics.median(pooled), min(medians), max(medians), len(per_process))


def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_blas():
    """NumPy's version and its BLAS as threadpoolctl sees it (library, version, kernel)."""
    import numpy as np  # the parent only reads the BLAS's description; it runs no computation

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"{np.__version__}, BLAS unknown (pip install threadpoolctl to see it)"
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    if not pools:
        return f"{np.__version__}, BLAS not found by threadpoolctl"
    p = next((p for p in pools if "numpy" in p["filepath"]), pools[0])
    return f"{np.__version__}, BLAS {p['internal_api']} {p.get('version')} kernel={p.get('architecture', '?')}"


def torch_version():
    """PyTorch's installed version, or None; read from the package metadata, without importing it."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "installed (version unknown)"


def print_machine(with_torch=False):
    """The command, the machine, NumPy's BLAS, PyTorch's version and the load average at start."""
    print("command : python " + " ".join(sys.argv))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine : {cpu_model()}, {os.cpu_count()} cores ({usable} usable here), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    print(f"numpy   : {numpy_blas()}")
    if with_torch:
        print(f"torch   : {torch_version() or 'not installed'}")
    print(
        f"threads : each child gets {', '.join(THREAD_VARIABLES)} = its thread count before importing NumPy"
        + (" or PyTorch (and torch.set_num_threads)" if with_torch else "")
        + "; a warning follows the runs if a child's pool reported another count"
    )
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if coretype:
        print(f"env     : {coretype}")
    print_load("start")


def print_load(when):
    """The 1/5/15-minute load average; at the start, a warning when something else is using the CPU."""
    one, five, fifteen = os.getloadavg()
    print(
        f"load    : {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15-min average at {when}"
        + (")" if when == "start" else "; includes this benchmark's own processes)"),
        flush=True,
    )
    if when == "start" and one > QUIET_LOAD:
        # All-core runs suffer most: a BLAS thread that waits for one on a busy core spins, so a step can
        # take many times longer (seen here: 2-thread SmallConv steps of ~6 s instead of ~0.15 s at load 4).
        print(
            f"WARNING : the 1-minute load average is {one:.2f} before anything of ours runs: other processes are "
            "using the CPU, so these times will be inflated and noisy, the all-cores ones most. For figures to "
            f"quote, wait until `uptime` shows less than {QUIET_LOAD}.",
            flush=True,
        )


def format_summary(s, scale=1.0, digits=1):
    """'123.4 [120.1-130.2]': the median and, in brackets, the spread of the per-process medians."""
    return f"{s.median * scale:.{digits}f} [{s.low * scale:.{digits}f}-{s.high * scale:.{digits}f}]"


def warn_threads(case, requested, seen):
    """A child that did not get the threads it was given would make the comparison unfair: say so."""
    if seen is not None and seen != requested:
        print(f"WARNING : {case}: asked for {requested} threads, the child's pool reported {seen}", flush=True)


# --- child side ------------------------------------------------------------------------------------------
def blas_threads():
    """How many threads NumPy's BLAS uses in this process (threadpoolctl), or None when it cannot tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    p = next((p for p in pools if "numpy" in p["filepath"]), pools[0] if pools else None)
    return p["num_threads"] if p else None


def report(result):
    """Print the child's result: one JSON line, the last thing it writes to stdout."""
    print(json.dumps(result), flush=True)


def timed(fn, warmup, repeat):
    """Call fn `warmup` times untimed, then `repeat` times timed; return the `repeat` durations in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
