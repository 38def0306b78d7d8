"""Scaling table: the same training run in-process, on the local engine and on the MPI engine, J = 1, 2, ...

    # module-parallel DGL, SmallConv, 1 epoch of 20,000 Fashion-MNIST images, J = 1 and 2
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_engines.py --trainer dgl --model smallconv \\
        --dataset fashion-mnist --limit-train 20000 --limit-test 1000 --workers 1,2

    # synchronous data-parallel SGD (dp-sync has no in-process run; J = 1 is its baseline)
    python benchmarks/bench_engines.py --trainer dp-sync --model cnn --workers 1,2

Every run is one `tinydgl train` command in a fresh process (the MPI ones under `mpiexec -n J python -m
mpi4py -m tinydgl`), so each pays its own start-up like a user would; the table reads the metrics JSON each
run writes. samples/s is the CLI's (training samples over training seconds, evaluation excluded; for the
parallel engines the seconds include starting the workers (local) or the end-of-epoch gather (MPI)).
Careful: the local engine's seconds include spawning its workers (about a second per epoch), the MPI
engine's do not include mpiexec starting the ranks (before training); "wall s", the whole command from
launch to exit (data loading and evaluation included), is the fair end-to-end comparison.
speedup: against the in-process run (dp-sync: against J = 1 of the same engine). busy: each worker's
busy_fraction, the pipeline's balance at a glance. Needs the `mpi` extra for the MPI rows (they are
skipped, with a note, if mpi4py or mpiexec is missing). Not a test: it prints a Markdown table to paste into
benchmarks/RESULTS.md together with the command and the machine's load.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_PARALLEL = ("dp-sync",)


def mpiexec():
    beside_python = os.path.join(sys.prefix, "bin", "mpiexec")
    found = beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")
    return found if found and importlib.util.find_spec("mpi4py") else None


def run(label, prefix, args, workdir, threads):
    path = os.path.join(workdir, f"{label.replace(' ', '_').replace('=', '')}.json")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update({k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    command = [*prefix, "train", "--no-progress", *args, "--metrics-json", path]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        print(out.stdout + out.stderr, file=sys.stderr)
        return None
    metrics = json.load(open(path))
    metrics["wall_seconds"] = wall
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainer", default="dgl")
    parser.add_argument("--model", default="smallconv")
    parser.add_argument("--dataset", default="mnist-small")
    parser.add_argument("--limit-train", default=None)
    parser.add_argument("--limit-test", default="1000")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--batch-size", default="128")
    parser.add_argument("--workers", default="1,2", help="comma-separated J values")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per process")
    parser.add_argument("--extra", default="", help="more `tinydgl train` options, e.g. '--buffer-size 2'")
    args = parser.parse_args(argv)

    common = ["--trainer", args.trainer, "--model", args.model, "--dataset", args.dataset, "--epochs", args.epochs,
              "--batch-size", args.batch_size, "--limit-test", args.limit_test, *args.extra.split()]
    if args.limit_train:
        common += ["--limit-train", args.limit_train]
    python = [sys.executable, "-m", "tinydgl"]
    launcher = mpiexec()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.trainer not in DATA_PARALLEL:
            rows.append(("in-process", 1, run("in-process", python, common, workdir, args.threads)))
        for j in [int(v) for v in args.workers.split(",")]:
            rows.append(("local", j, run(f"local J={j}", python, [*common, "--workers", str(j)], workdir,
                                         args.threads)))
            if launcher:
                prefix = [launcher, "-n", str(j), sys.executable, "-m", "mpi4py", "-m", "tinydgl"]
                rows.append(("mpi", j, run(f"mpi J={j}", prefix, [*common, "--engine", "mpi"], workdir, args.threads)))
    if not launcher:
        print("note: no MPI rows (install the mpi extra: pip install -e '.[mpi]')")

    def baseline(engine):
        """samples/s the speedup is measured against: in-process, or (dp-sync) the same engine's J = 1."""
        for e, j, m in rows:
            if m and (e == "in-process" or (args.trainer in DATA_PARALLEL and e == engine and j == 1)):
                return m["samples_per_second"]
        return None

    def busy_fraction(w):
        if "busy_fraction" in w:
            return w["busy_fraction"]
        span = w.get("busy_seconds", 0.0) + w.get("wait_seconds", 0.0)  # dp-sync's workers report these two
        return w.get("busy_seconds", 0.0) / span if span else 0.0

    print(f"\n{args.trainer} on {args.model}, {args.dataset} (limit-train {args.limit_train}), {args.epochs} epoch(s), "
          f"batch {args.batch_size}, {args.threads} BLAS thread(s) per process, {os.cpu_count()} CPUs\n")
    print("| engine | J | samples/s | speedup | wall s | test acc | busy fraction per worker |")
    print("|---|---|---|---|---|---|---|")
    for engine, j, m in rows:
        if m is None:
            print(f"| {engine} | {j} | failed | | | | |")
            continue
        sps = m["samples_per_second"]
        reference = baseline(engine)
        speedup = f"{sps / reference:.2f}x" if reference else "-"
        busy = ", ".join(f"{busy_fraction(w):.2f}" for w in m["history"][-1].get("workers", [])) or "-"
        print(f"| {engine} | {j} | {sps:,.0f} | {speedup} | {m['wall_seconds']:.1f} | {m['test_accuracy']:.4f} | {busy} |")


if __name__ == "__main__":
    main()
