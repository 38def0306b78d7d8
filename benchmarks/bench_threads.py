"""Threads on an idle and on a busy machine: training time at 1 and 2 threads, and the threshold below which
tinydgl does not split work (tinydgl/threads.py, MIN_PIECE_BYTES).

    # training: mlp, cnn, smallconv at 1 and 2 threads, idle and beside 1 competing CPU-bound process
    python benchmarks/bench_threads.py
    python benchmarks/bench_threads.py --models mlp --rounds 5 --competitors 0,1,2
    python benchmarks/bench_threads.py --pythonpath /path/to/other/checkout     # time another tinydgl
    python benchmarks/bench_threads.py --pythonpath /old/checkout,.             # before and after, alternated

    # the threshold: an elementwise op (LeakyReLU forward) of each size, one call on one thread against
    # the same work split in two pieces over two threads, idle and beside a competing process
    python benchmarks/bench_threads.py --calibrate

How it is timed. Every measurement is a process of its own: `python -m tinydgl train ... --metrics-json`
for training, whose `train_seconds` covers the training batches only (not data loading, evaluation or
start-up), or `bench_threads.py --child calibrate` for the threshold. Each child gets its thread count in
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before NumPy starts (tinydgl reads the same
variables). "Beside k competitors": the parent starts k processes running `while True: pass` before the
child and stops them after it, so the child shares the cores with k CPU-bound processes, as on a machine
where other work runs (the case where threads used to make small runs 15x slower). The cases alternate
over `--rounds` rounds, so a change in background load hits them alike. A table gives, per case, the median
over the processes and, in brackets, the lowest and highest.

Training children run `tinydgl train --model M --epochs 1 --limit-train N --limit-test 200
--bn-recalibrate 0 --seed 0`; the training loss is printed too, and must be the same at 1 and 2 threads
(tinydgl's results do not depend on the thread count).

Calibration prints, per size (bytes of input and output together, the size tinydgl's threshold looks at),
the time of one call on one thread and of the same work split in two pieces over two threads; median and
mean of `--repeat` calls after warm-up (the mean shows the rare long waits a busy machine adds), and the
ratio of the medians, split / one thread: below 1 the split pays off. The threshold is then
MIN_PIECE_BYTES = half the smallest size at which splitting is clearly faster on an idle machine (the rule
is printed with the table); the rows with competitors show what a busy machine does to a split.

Timings are only meaningful on an otherwise quiet machine: the load average is printed at the start and
the end, with a warning if something else was running. Not a test: it prints tables for
benchmarks/RESULTS.md with the command that produced them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import _processes as procs

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"

# Calibration sizes: bytes of input + output of one LeakyReLU forward, 16 KiB to 8 MiB.
DEFAULT_SIZES_KIB = "16,32,64,128,256,512,1024,2048,4096,8192"

# The threshold rule (see the module docstring): splitting must make the op at least this much faster on an
# idle machine (median time, one thread / split: the median, because on a shared machine a single long
# preemption moves a mean more than the split does).
IDLE_GAIN = 1.2


# --- competitors ------------------------------------------------------------------------------------------
@contextmanager
def competitors(count):
    """`count` CPU-bound processes running for the duration of the block (stopped by their own ids)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        if spinners:
            time.sleep(0.2)  # let them start spinning
        yield
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()


def child_env(threads, pythonpath):
    env = procs.thread_env(threads)
    env.pop("TINYDGL_NUM_THREADS", None)  # the BLAS variables set tinydgl's count too
    env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run(cmd, env, timeout, cwd=None):
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise procs.ChildFailed(f"`{' '.join(cmd)}` ran past --timeout {timeout} s") from None
    if done.returncode != 0:
        raise procs.ChildFailed(f"`{' '.join(cmd)}` exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout


# --- training ---------------------------------------------------------------------------------------------
def train_case(checkout, model, threads, load, args, workdir):
    metrics = Path(workdir) / "metrics.json"
    cmd = [
        sys.executable,
        "-m",
        "tinydgl",
        "train",
        "--model",
        model,
        "--epochs",
        "1",
        "--seed",
        "0",
        "--limit-train",
        str(args.limit_train),
        "--limit-test",
        "200",
        "--bn-recalibrate",
        "0",
        "--no-progress",
        "--metrics-json",
        str(metrics),
    ]
    with competitors(load):
        # cwd: `python -m` imports from the current folder first, which must not be a checkout of tinydgl
        # other than the one asked for
        run(cmd, child_env(threads, checkout), args.timeout, cwd=workdir)
    result = json.loads(metrics.read_text())
    return {"seconds": result["train_seconds"], "loss": result["history"][-1]["train_loss"]}


def bench_training(args):
    checkouts = [str(Path(c).resolve()) for c in args.pythonpath.split(",")]  # the children run elsewhere
    models = args.models.split(",")
    counts = procs.parse_threads(args.threads)
    loads = [int(c) for c in args.competitors.split(",")]
    cases = [(c, m, t, k) for m in models for k in loads for t in counts for c in checkouts]
    print(
        f"training: tinydgl train --model M --epochs 1 --limit-train {args.limit_train} --limit-test 200 "
        f"--bn-recalibrate 0 --seed 0; {args.rounds} processes per case; tinydgl from "
        f"{' and '.join(checkouts)}, alternated\n"
    )
    with tempfile.TemporaryDirectory() as workdir:
        results = procs.alternate(
            cases,
            args.rounds,
            lambda case: train_case(*case, args, workdir),
            lambda case, r: (
                (f"{case[0]}: " if len(checkouts) > 1 else "")
                + f"{case[1]:<9} {case[2]} thread(s), {case[3]} competitor(s): "
                f"{r['seconds']:.3f} s, loss {r['loss']:.6f}"
            ),
        )
    print()
    procs.print_load("end")
    for c in checkouts:
        print(
            f"\ntraining seconds, tinydgl from {c} (train_seconds of the metrics; median [min-max] of "
            f"{args.rounds} processes)"
        )
        header = f"{'model':<10}{'competitors':>12}" + "".join(f"{f'{t} thread(s)':>24}" for t in counts)
        print(header + f"{'same loss':>11}")
        for m in models:
            for k in loads:
                row = f"{m:<10}{k:>12}"
                losses = set()
                for t in counts:
                    runs = results[(c, m, t, k)]
                    seconds = [r["seconds"] for r in runs]
                    row += f"{statistics.median(seconds):>10.3f} [{min(seconds):.3f}-{max(seconds):.3f}]"
                    losses.update(r["loss"] for r in runs)
                print(row + f"{'yes' if len(losses) == 1 else 'NO':>11}")


# --- calibration ------------------------------------------------------------------------------------------
def calibrate_child(args):
    """One process: per size, LeakyReLU forward at 1 thread, and split in two pieces on 2 threads."""
    import numpy as np

    from tinydgl import functional as F
    from tinydgl import threads

    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    rows = {}
    for size in sizes:
        x = np.random.default_rng(0).standard_normal((size // 8 // 64, 64)).astype(np.float32)  # x + out = size
        times = {}
        for mode in ("one", "split"):
            threads.set_num_threads(1 if mode == "one" else 2)
            threads.MIN_PIECE_BYTES = max(1, size // 2)  # two pieces, as at the threshold
            times[mode] = procs.timed(lambda x=x: F.leaky_relu_forward(x, 0.01), args.warmup, args.repeat)
        rows[size] = {mode: [statistics.median(t), statistics.fmean(t)] for mode, t in times.items()}
    procs.report(rows)


def bench_calibration(args):
    loads = [int(c) for c in args.competitors.split(",")]
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "calibrate",
        "--sizes",
        args.sizes,
        "--repeat",
        str(args.repeat),
        "--warmup",
        str(args.warmup),
    ]
    print(
        f"calibration: LeakyReLU forward, float32, (rows, 64); {args.repeat} timed calls per size and mode, "
        f"{args.rounds} processes per case; tinydgl from {args.pythonpath}\n"
    )

    def run_case(load):
        with competitors(load):
            out = run(cmd, child_env(2, str(Path(args.pythonpath).resolve())), args.timeout)
        return json.loads(out.splitlines()[-1])

    results = procs.alternate(loads, args.rounds, run_case, lambda k, r: f"{k} competitor(s): done")
    print()
    procs.print_load("end")
    sizes = [str(int(s) * 1024) for s in args.sizes.split(",")]

    def combined(load, size, mode, which):  # the median over processes of their median (0) or mean (1)
        return statistics.median(r[size][mode][which] for r in results[load]) * 1e6

    ratios = {}
    for k in loads:
        print(
            f"\n{k} competitor(s): microseconds per call, median / mean over the calls (median of "
            f"{args.rounds} processes); ratios of the medians"
        )
        print(f"{'KiB (x+out)':>12}{'one thread':>18}{'split in 2':>18}{'split/one':>11}")
        for size in sizes:
            t = {mode: (combined(k, size, mode, 0), combined(k, size, mode, 1)) for mode in ("one", "split")}
            ratios[(k, size)] = t["split"][0] / t["one"][0]
            print(
                f"{int(size) // 1024:>12}"
                + "".join(f"{t[m][0]:>9.1f} /{t[m][1]:>7.1f}" for m in t)
                + f"{ratios[(k, size)]:>11.2f}"
            )
    idle = min(loads)
    ok = [s for s in sizes if ratios[(idle, s)] <= 1 / IDLE_GAIN]
    print(
        f"\nrule: the smallest size where the split is >= {IDLE_GAIN}x faster (median times) with "
        f"{idle} competitor(s); MIN_PIECE_BYTES = half of it"
    )
    if ok:
        print(f"-> smallest such size: {int(ok[0]) // 1024} KiB; MIN_PIECE_BYTES = {int(ok[0]) // 2048} KiB")
    else:
        print("-> no size met the rule: keep the current MIN_PIECE_BYTES, or try larger --sizes")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="time the split threshold instead of training")
    parser.add_argument("--models", default="mlp,cnn,smallconv", help="comma-separated (default: %(default)s)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default: %(default)s)")
    parser.add_argument(
        "--competitors",
        default="0,1",
        help="CPU-bound processes running beside each child, per case (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="processes per case (default: %(default)s)")
    parser.add_argument(
        "--limit-train",
        type=int,
        default=2048,
        help="training images per run, an epoch of them (default: %(default)s = 16 steps)",
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES_KIB, help="calibration sizes in KiB (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per size (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default: %(default)s)")
    parser.add_argument(
        "--pythonpath",
        default=str(ROOT),
        help="the tinydgl checkout the children import, or several, comma-separated, timed in "
        "alternation (training only; default: this one, %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child (default: %(default)s)")
    parser.add_argument("--child", choices=["calibrate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return calibrate_child(args)
    procs.print_machine()
    if args.calibrate:
        bench_calibration(args)
    else:
        bench_training(args)


if __name__ == "__main__":
    main()
