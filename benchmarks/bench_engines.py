"""Scaling of the parallel engines: in-process vs the local engine vs the MPI engine, J = 1, 2, 4 workers.

    # the issue's table: dgl and async-dgl, J = 1, 2, 4, local and MPI engines, against the in-process run
    python benchmarks/bench_engines.py --trainers dgl,async-dgl --workers 1,2,4 --engines local,mpi

    # quicker: one trainer, the bundled digits
    python benchmarks/bench_engines.py --trainers dgl --workers 1,2 --dataset mnist-small --model smallconv

Every run is a separate `tinydgl train` process (`mpiexec -n J python -m mpi4py -m tinydgl train --transport mpi`
for MPI), so each gets exactly the BLAS threads it is given: in-process runs with 1 thread and with
`--cores` threads (the "same total threads" as `--cores` single-threaded workers), workers with 1 thread
each. samples/s is the training throughput the run reports (data samples through the first module per
second of training, evaluation excluded; the local engine's seconds include spawning its workers, about
a second per epoch, the MPI engine's do not include mpiexec starting the ranks, so "wall s", the whole
command from launch to exit, is the fair end-to-end comparison); speed-up is against the in-process run
with the same total threads (dp-sync, downpour: against in-process backprop on the same batches). Not a test: prints a table to paste into benchmarks/RESULTS.md with the
command, and writes every run's metrics to --out.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _processes import thread_env


def run(cmd, threads, timeout):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(f"FAILED ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", default="dgl,async-dgl")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--engines", default="local", help="local, mpi or local,mpi")
    parser.add_argument("--model", default="smallconvl")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--limit-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--extra", default="", help="more `tinydgl train` options, e.g. '--reuse-cap 2'")
    parser.add_argument(
        "--baseline-extra",
        default="",
        help="options for the in-process runs only, e.g. '--schedule round-robin' for async-dgl",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of every case, interleaved; the table shows medians"
    )
    parser.add_argument("--out", default="engines.json")
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()

    common = [
        "--model",
        args.model,
        "--dataset",
        args.dataset,
        "--limit-train",
        str(args.limit_train),
        "--limit-test",
        str(args.limit_test),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--no-progress",
        *args.extra.split(),
    ]
    mpiexec = shutil.which("mpiexec") or os.path.join(sys.prefix, "bin", "mpiexec")
    print("command: python " + " ".join(sys.argv))
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    results = []
    trainers = args.trainers.split(",")
    cases = [(t, "in-process", 0, th) for t in trainers for th in sorted({1, args.cores})]
    cases += [(t, e, int(j), 1) for t in trainers for e in args.engines.split(",") for j in args.workers.split(",")]
    runs = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeat):  # interleaved, so a change in background load hits every case alike
            for case in cases:
                trainer, engine, workers, threads = case
                metrics = os.path.join(tmp, f"{trainer}-{engine}-{workers}-{threads}-{repeat}.json")
                # data-parallel methods' in-process counterpart is backprop on the whole batch (what dp-sync's
                # update equals, and what Downpour approximates with stale weights)
                data_parallel = {"dp-sync": "sync", "downpour": "downpour"}.get(trainer)
                name = "bp" if data_parallel else trainer
                cmd = [sys.executable, "-m", "tinydgl", "train", "--trainer", name, *common, "--metrics-json", metrics]
                if engine == "in-process" and args.baseline_extra:
                    cmd += args.baseline_extra.split()
                if engine != "in-process":
                    cmd += [
                        "--parallel",
                        data_parallel or "module",
                        "--transport",
                        "shm" if engine == "local" else "mpi",
                    ]
                    cmd += ["--workers", str(workers)] if engine == "local" else []  # MPI: the ranks are the workers
                if engine == "mpi":
                    if not os.path.exists(mpiexec):
                        print("mpiexec not found: skipping the MPI engine", file=sys.stderr)
                        continue
                    cmd = [mpiexec, "-n", str(workers), sys.executable, "-m", "mpi4py", *cmd[1:]]
                wall = run(cmd, threads, args.timeout)
                if wall is None:
                    continue
                summary = json.load(open(metrics))
                summary.update(engine=engine, workers=workers, threads=threads, wall_seconds=wall, repeat=repeat)
                results.append(summary)
                runs[case].append(summary)
                print(
                    f"  [{repeat + 1}/{args.repeat}] {trainer} {engine} J={workers} threads={threads}: "
                    f"{summary['samples_per_second']:.0f} samples/s, {wall:.1f} s wall, "
                    f"acc {summary['test_accuracy']:.4f}",
                    flush=True,
                )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print(f"median of {args.repeat} run(s) each (samples/s: min-max in brackets)\n")
    header = (
        "| trainer | engine | J | BLAS threads each | samples/s | wall s | vs in-process 1 thread | "
        "vs in-process, same total threads | wall vs in-process, same threads | test acc | worker busy | "
        "replayed/skipped batches |"
    )
    print(header + "\n|" + "---|" * 12)
    median = statistics.median
    for case in cases:
        got = runs[case]
        if not got:
            continue
        trainer, engine, workers, threads = case
        sps = [r["samples_per_second"] for r in got]
        wall = median([r["wall_seconds"] for r in got])
        base = {th: runs.get((trainer, "in-process", 0, th)) for th in (1, args.cores)}
        base_sps = {th: median([r["samples_per_second"] for r in b]) for th, b in base.items() if b}
        base_wall = {th: median([r["wall_seconds"] for r in b]) for th, b in base.items() if b}
        same = min(max(workers, 1) * threads, args.cores)
        last = got[len(got) // 2]
        per_worker = last["history"][-1].get("workers") or []
        busy = " ".join(f"{100 * w.get('busy_fraction', 0):.0f}%" for w in per_worker) or "-"
        replays = (
            f"{sum(w.get('replayed_batches', 0) for w in per_worker)}/"
            f"{sum(w.get('skipped_batches', 0) for w in per_worker)}"
        )
        ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
        print(
            f"| {trainer} | {engine} | {workers or '-'} | {threads} | {median(sps):,.0f} [{min(sps):,.0f}-{max(sps):,.0f}] "
            f"| {wall:.1f} | {ratio(median(sps), base_sps.get(1))} | {ratio(median(sps), base_sps.get(same))} | "
            f"{ratio(base_wall.get(same, 0), wall)} | {median([r['test_accuracy'] for r in got]):.4f} | {busy} | "
            f"{replays if per_worker else '-'} |"
        )
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nmetrics of every run: {args.out}")


if __name__ == "__main__":
    main()
