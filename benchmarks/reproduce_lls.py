"""Reproduce the LLS paper's protocol on Fashion-MNIST with tinydgl: methods x optimizers x seeds, one
process per run, a table of mean and spread.

    # the 1-epoch check, no augmentation (about 1-2 min per run on 2 cores)
    python benchmarks/reproduce_lls.py --trainers bp,lls,lls-m,lls-mxm,dgl --optimizers adam,adamw-sf --seeds 0,1,2

    # the paper's recipe (SmallConv, 100 epochs, crop + flip); days on a CPU, so one method at a time
    python benchmarks/reproduce_lls.py --trainers lls --optimizers adamw-sf --seeds 0,1,2 --epochs 100 --augment

Every run is the `tinydgl train` command printed beside it (SmallConv, batch 128, lr 5e-3, T 0.5, sin basis,
batch-norm recalibration on 50 batches before every test: docs/protocol.md), run in a child
process of its own, one after another, so no run shares the cores with another. The child is that
command's own code (`tinydgl.cli.train`), with one addition: it also tests each epoch *before* recalibrating,
so the table shows what recalibration changed on the same weights. Results are appended to `--out` (JSON
lines) as each run ends; a rerun skips the runs already there, so an interrupted sweep continues.

The table gives, per method and optimizer, the final test accuracy (mean, sample standard deviation and
range over the seeds), the best epoch's (the paper's tables report the best), the accuracy before
recalibration, and the median training seconds per epoch. Load averages are recorded with every run:
timing is only meaningful when nothing else ran. Not a test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

RECIPE = [
    "--model",
    "smallconv",
    "--dataset",
    "fashion-mnist",
    "--batch-size",
    "128",
    "--lr",
    "5e-3",
    "--bn-recalibrate",
    "50",
]
LLS_OPTIONS = ["--temperature", "0.5", "--waveform", "sin"]


def train_args(trainer, optimizer, seed, epochs, augment, extra):
    args = ["--trainer", trainer, *RECIPE, "--optimizer", optimizer, "--epochs", str(epochs), "--seed", str(seed)]
    if trainer.startswith("lls"):
        args += LLS_OPTIONS
    if augment:
        args.append("--augment")
    return args + extra


def child(argv, out_path):
    """One run: what `tinydgl train argv` does in-process, plus a test before each recalibration."""
    from tinydgl.cli.parser import build_parser
    from tinydgl.cli.train import load_data, make_trainer, run_summary
    from tinydgl.train import fit

    args = build_parser().parse_args(["train", "--no-progress", *argv])
    dataset, train_loader, test_loader = load_data(args)
    trainer, lr = make_trainer(args, args.trainer, dataset)
    history = fit(
        trainer,
        train_loader,
        test_loader,
        args.epochs,
        progress=False,
        bn_recalibrate=args.bn_recalibrate,
        evaluate_before_recalibration=True,
        log=lambda line: print(line, flush=True),
    )
    summary = run_summary(args, args.trainer, lr, history, trainer.model.num_parameters(), trainer)
    with open(out_path, "w") as f:
        json.dump(summary, f)


def done_runs(path):
    if not os.path.exists(path):
        return {}
    runs = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            runs[(record["trainer"], record["optimizer"], record["seed"], record["epochs"], record["augment"])] = record
    return runs


def run_one(trainer, optimizer, seed, args):
    argv = train_args(trainer, optimizer, seed, args.epochs, args.augment, args.extra.split())
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "metrics.json")
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", metrics, "--", *argv], text=True, capture_output=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(
                f"FAILED: tinydgl train {' '.join(argv)}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}", file=sys.stderr
            )
            return None
        summary = json.load(open(metrics))
    history = summary["history"]
    return {
        "trainer": trainer,
        "optimizer": optimizer,
        "seed": seed,
        "epochs": args.epochs,
        "augment": args.augment,
        "command": "tinydgl train " + " ".join(argv),
        "final": summary["final_test_accuracy"],
        "best": summary["best_test_accuracy"],
        "best_epoch": summary["best_epoch"],
        "final_before_recalibration": history[-1]["test_accuracy_before_recalibration"],
        "per_epoch": [h["test_accuracy"] for h in history],
        "per_epoch_before_recalibration": [h["test_accuracy_before_recalibration"] for h in history],
        "train_seconds_per_epoch": [h["seconds"] for h in history],
        "recalibration_seconds_per_epoch": [h["bn_recalibrate_seconds"] for h in history],
        "wall_seconds": wall,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def spread(values):
    """'0.8812 +- 0.0040 [0.8770-0.8850]' (sample std; just the value for one run)."""
    if len(values) == 1:
        return f"{values[0]:.4f} (1 run)"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f} [{min(values):.4f}-{max(values):.4f}]"


def print_table(records, trainers, optimizers):
    print(
        f"\n{'trainer':<8} {'optimizer':<9} {'seeds':<7} {'final test acc: mean +- std [range]':<36} "
        f"{'best (paper)':<14} {'before recal.':<14} {'s/epoch':>8}"
    )
    print("-" * 104)
    for optimizer in optimizers:
        for trainer in trainers:
            rows = sorted(
                (r for r in records if r["trainer"] == trainer and r["optimizer"] == optimizer), key=lambda r: r["seed"]
            )
            if not rows:
                continue
            seeds = ",".join(str(r["seed"]) for r in rows)
            best = statistics.mean(r["best"] for r in rows)
            before = statistics.mean(r["final_before_recalibration"] for r in rows)
            seconds = statistics.median(s for r in rows for s in r["train_seconds_per_epoch"])
            print(
                f"{trainer:<8} {optimizer:<9} {seeds:<7} {spread([r['final'] for r in rows]):<36} "
                f"{best:<14.4f} {before:<14.4f} {seconds:8.1f}"
            )
    loads = [r["load_before"][0] for r in records] + [r["load_after"][0] for r in records]
    if loads:
        print(
            f"\nload average (1 min) over the runs: {min(loads):.2f}-{max(loads):.2f}; "
            f"dates {min(r['date'] for r in records)} to {max(r['date'] for r in records)}"
        )


def main():
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        return child(sys.argv[i + 3 :], sys.argv[i + 1])  # --child OUT -- ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", default="bp,lls,lls-m,lls-mxm,dgl")
    parser.add_argument("--optimizers", default="adam,adamw-sf")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--augment", action="store_true", help="the paper's crop + flip (its 100-epoch recipe)")
    parser.add_argument("--extra", default="", help="more `tinydgl train` options for every run")
    parser.add_argument("--out", default="lls-reproduction.jsonl", help="JSON lines, one per run (appended)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    trainers, optimizers = args.trainers.split(","), args.optimizers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}"
    )
    done = done_runs(args.out)
    if not args.table_only:
        for seed in seeds:
            for optimizer in optimizers:
                for trainer in trainers:
                    if (trainer, optimizer, seed, args.epochs, args.augment) in done:
                        continue
                    record = run_one(trainer, optimizer, seed, args)
                    if record is None:
                        continue
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[(trainer, optimizer, seed, args.epochs, args.augment)] = record
                    print(
                        f"{trainer:8s} {optimizer:9s} seed {seed}: final {record['final']:.4f} "
                        f"(before recal. {record['final_before_recalibration']:.4f}), "
                        f"{record['wall_seconds']:.0f}s, load {record['load_before'][0]:.2f}"
                        f"->{record['load_after'][0]:.2f}",
                        flush=True,
                    )
    records = [
        r for r in done.values() if r["epochs"] == args.epochs and r["augment"] == args.augment and r["seed"] in seeds
    ]
    print_table(records, trainers, optimizers)


if __name__ == "__main__":
    main()
