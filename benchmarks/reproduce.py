"""Run one reference recipe over seeds, each run in a process of its own, and print its RESULTS row.

    OMP_NUM_THREADS=1 python benchmarks/reproduce.py --recipe drtp --trainer dfa --epochs 5 --seeds 0,1,2 \
        --dataset fashion-mnist --authors 0.769

Every run is `tinydgl train --recipe NAME --trainer T --dataset D --epochs E --seed S` (plus `--extra`), in a
child process, one after another, so no run shares the cores with another. Accuracy does not depend on
the machine's load, so these may run while other work does; the load average is recorded anyway. Each
run's summary is appended to `--out` (JSON lines) as it ends, and a rerun skips the runs already there.

The row: recipe, trainer, epochs, the authors' number if given (--authors, with where it comes from in
--authors-source), tinydgl's mean ± population standard deviation over the seeds (as issue 26's table),
the gap in points, the command, the date and the load averages before the first and after the last run.
Not a test.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def command(recipe, trainer, dataset, epochs, seed, extra):
    return [
        "tinydgl",
        "train",
        "--recipe",
        recipe,
        "--trainer",
        trainer,
        "--dataset",
        dataset,
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        *extra,
    ]


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def done_runs(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_one(argv, timeout):
    """`tinydgl train argv` in a child process; returns its metrics summary."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "metrics.json")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        child = [sys.executable, "-m", "tinydgl", *argv[1:], "--no-progress", "--metrics-json", metrics]
        subprocess.run(child, check=True, env=env, timeout=timeout)
        with open(metrics) as f:
            return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--authors", type=float, default=None, help="the authors' code's mean test accuracy")
    parser.add_argument("--authors-source", default="issue 26 (measured by its author with the authors' code)")
    parser.add_argument("--extra", default="", help="more `tinydgl train` options, one string")
    parser.add_argument("--out", default="benchmarks/results/reproduce.jsonl")
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = shlex.split(args.extra)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    key = (args.recipe, args.trainer, args.dataset, args.epochs, args.extra)
    before = load()
    accuracies = {}
    for run in done_runs(args.out):
        if (run["recipe"], run["trainer"], run["dataset"], run["epochs"], run.get("extra", "")) == key:
            accuracies[run["seed"]] = run["accuracy"]
    for seed in seeds:
        if seed in accuracies:
            continue
        argv_ = command(args.recipe, args.trainer, args.dataset, args.epochs, seed, extra)
        print("$ OMP_NUM_THREADS=1 " + shlex.join(argv_), flush=True)
        started, load_before = time.time(), load()
        summary = run_one(argv_, args.timeout)
        accuracies[seed] = summary["test_accuracy"]
        record = {
            "recipe": args.recipe,
            "trainer": args.trainer,
            "dataset": args.dataset,
            "epochs": args.epochs,
            "extra": args.extra,
            "seed": seed,
            "accuracy": summary["test_accuracy"],
            "best": summary["best_test_accuracy"],
            "wall_seconds": round(time.time() - started, 1),
            "load_before": load_before,
            "load_after": load(),
            "config": summary["config"],
            # e.g. ff's accuracy under both predictions
            "last_evaluation": (summary.get("trainer_stats") or {}).get("last_evaluation"),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"seed {seed}: {summary['test_accuracy']:.4f}", flush=True)
    values = [accuracies[s] for s in seeds]
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    gap = f"{100 * (mean - args.authors):+.1f}" if args.authors is not None else "-"
    authors = f"{args.authors:g}" if args.authors is not None else "-"
    shown = shlex.join(command(args.recipe, args.trainer, args.dataset, args.epochs, "S", extra))
    print(
        "| recipe | trainer | epochs | authors' code | tinydgl (seeds " + args.seeds + ") | gap (points) | command | "
        "date | load |"
    )
    print(
        f"| {args.recipe} | {args.trainer} | {args.epochs} | {authors} | {mean:.4f} ± {std:.4f} "
        f"({' / '.join(f'{v:.4f}' for v in values)}) | {gap} | `OMP_NUM_THREADS=1 {shown}` | "
        f"{time.strftime('%Y-%m-%d', time.gmtime())} | {before} -> {load()} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
