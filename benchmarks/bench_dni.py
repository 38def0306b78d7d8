"""Is DNI faster than backprop? The SG-DNI benchmark, reproduced on this machine, and predicted for J devices.

    python benchmarks/bench_dni.py runs --dataset mnist-small --seeds 0,1,2 --epochs 4
    python benchmarks/bench_dni.py runs --dataset fashion-mnist --seeds 0,1,2 --epochs 2
    python benchmarks/bench_dni.py synthesizers --seeds 0,1,2         # linear / MLP synthesizers, update_prob
    python benchmarks/bench_dni.py predict --devices 1,2,3,4           # the throughput model, measured costs

"Benchmarking Decoupled Neural Interfaces with Synthetic Gradients" (arXiv 1712.08314, withdrawn) reports
SG-DNI training an MNIST MLP "over 3-fold faster" than backprop, at lower accuracy, with the gap growing
with iterations. Its setting, as far as it is stated, and what this script had to choose:

- a fully connected network on MNIST-style data, hidden layers Linear -> batch norm -> ReLU: here `mlp`
  with three hidden layers of 256 (Jaderberg et al.'s MNIST width), on the bundled `mnist-small` (4,000
  training digits; MNIST itself is not reachable offline) and on full Fashion-MNIST;
- synthesizers "of the same structure as the network": MLP synthesizers with two hidden layers of 256
  (`--synthesizer mlp --synth-hidden 256`; the DNI paper's are 1024 wide, measured in `synthesizers`);
- Adam with a stepped learning rate: the parallel engines train at a constant learning rate (tinydgl's
  `--lr-schedule` is for in-process runs), so every method here uses Adam at a constant 1e-3 (chosen so
  that all of them train; the paper's 3e-5 with 500k iterations is far beyond a CPU benchmark);
- batch 128; test accuracy after every epoch; iterations = epochs x batches per epoch.

`runs` trains, for each seed, backprop in-process at 1 and at 2 BLAS threads (its best is reported), DNI
and cDNI in-process at 1 and 2 threads (best), and DNI and cDNI on 2 workers (`--workers 2`, one thread
each, the module-parallel engine with synthesizer targets flowing back). Every run is a `tinydgl train`
process of its own, alternated over seeds (docs/protocol.md, section 4). Seconds are training seconds (the
engine's run, without evaluation; for the parallel runs the workers' start-up, about a second an epoch, is
reported apart). It prints one table per epoch count, mean and spread over seeds, and draws accuracy and
time against iterations to benchmarks/figures/dni_<dataset>.png.

`synthesizers` measures the accuracy / time trade-off of the synthesizer (linear, MLP 256, MLP 1024) and of
`--update-prob` on mnist-small, in-process and on 2 workers.

`predict` measures, in one process at one thread (a deep copy, nothing trains), the step time of each DNI
group with its synthesizer (`runtime.stages.unit_costs`) and of the whole backprop step, and feeds them to
`tinydgl.simulate.pipeline_throughput`: the samples per second J devices would reach, against backprop
on one device. Links are taken as free (say so if you quote it for machines joined by a network).

Not a test: it prints tables to paste into benchmarks/RESULTS.md with the command that produced them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NET = [
    "--model",
    "mlp",
    "--hidden",
    "256,256,256",
    "--optimizer",
    "adam",
    "--lr",
    "1e-3",
    "--batch-size",
    "128",
    "--no-augment",
    "--no-progress",
    "--bn-recalibrate",
    "0",
]
SAME_STRUCTURE = ["--synthesizer", "mlp", "--synth-hidden", "256"]


def train(args, threads, out):
    """One `tinydgl train` in a process of its own with `threads` BLAS threads; returns its metrics JSON."""
    env = dict(
        os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
    )
    done = subprocess.run(
        [sys.executable, "-m", "tinydgl", "train", *args, "--metrics-json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"tinydgl train {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(Path(out).read_text())


def curve(metrics):
    """[(epoch, test accuracy, cumulative training seconds, cumulative start-up seconds)] of one run."""
    rows, seconds, startup = [], 0.0, 0.0
    for h in metrics["history"]:
        seconds += h["seconds"]
        startup += h.get("startup_seconds", 0.0)
        rows.append((h["epoch"], h["test_accuracy"], seconds, startup))
    return rows


def spread(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def methods():
    """(label, extra args, thread counts to try, workers)"""
    return [
        ("bp", ["--trainer", "bp"], (1, 2)),
        ("dni", ["--trainer", "dni", *SAME_STRUCTURE], (1, 2)),
        ("cdni", ["--trainer", "cdni", *SAME_STRUCTURE], (1, 2)),
        ("dni, 2 workers", ["--trainer", "dni", *SAME_STRUCTURE, "--workers", "2"], (1,)),
        ("cdni, 2 workers", ["--trainer", "cdni", *SAME_STRUCTURE, "--workers", "2"], (1,)),
    ]


def run_all(args, data, label_methods):
    """{label: [curve per seed]}: each method at each thread count, alternated over seeds; the best thread
    count (least total training time, median over seeds) is kept."""
    curves = {}  # (label, threads) -> [curve per seed]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for label, extra, threads_list in label_methods:
                for threads in threads_list:
                    out = Path(tmp) / f"run-{len(curves)}-{seed}-{threads}.json"
                    metrics = train(
                        [*NET, *data, *extra, "--epochs", str(args.epochs), "--seed", str(seed)], threads, out
                    )
                    curves.setdefault((label, threads), []).append(curve(metrics))
                    last = curves[(label, threads)][-1][-1]
                    print(
                        f"  seed {seed} {label:<16} {threads} thread(s): acc {last[1]:.4f}  {last[2]:.2f} s", flush=True
                    )
    best = {}
    for label, _, threads_list in label_methods:
        chosen = min(threads_list, key=lambda t: statistics.median(c[-1][2] for c in curves[(label, t)]))
        best[label] = (chosen, curves[(label, chosen)])
    return best


def print_table(best, batches_per_epoch):
    epochs = len(next(iter(best.values()))[1][0])
    bp_seconds = {e: spread([c[e][2] for c in best["bp"][1]])[0] for e in range(epochs)}
    print("\n| method (best threads) | iterations | test accuracy | training s | vs bp time | start-up s |")
    print("|---|---|---|---|---|---|")
    for e in range(epochs):
        for label, (threads, runs) in best.items():
            acc, acc_sd = spread([c[e][1] for c in runs])
            sec, sec_sd = spread([c[e][2] for c in runs])
            startup = spread([c[e][3] for c in runs])[0]
            print(
                f"| {label} ({threads}) | {(e + 1) * batches_per_epoch} | {acc:.4f} ± {acc_sd:.4f} | "
                f"{sec:.2f} ± {sec_sd:.2f} | {sec / bp_seconds[e]:.2f}x | {startup:.1f} |"
            )


def plot(best, batches_per_epoch, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, (_, runs) in best.items():
        its = [(e + 1) * batches_per_epoch for e in range(len(runs[0]))]
        for ax, k in ((ax1, 1), (ax2, 2)):
            means = [spread([c[e][k] for c in runs]) for e in range(len(its))]
            ax.errorbar(its, [m for m, _ in means], yerr=[s for _, s in means], marker="o", capsize=3, label=label)
    ax1.set_xlabel("iterations")
    ax1.set_ylabel("test accuracy")
    ax2.set_xlabel("iterations")
    ax2.set_ylabel("training seconds (this machine)")
    ax1.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path.relative_to(ROOT)}")


def data_args(args):
    data = ["--dataset", args.dataset]
    if args.limit_train:
        data += ["--limit-train", str(args.limit_train)]
    return data


def batches_per_epoch(args):
    from tinydgl.data import load_dataset

    n = len(load_dataset(args.dataset, limit_train=args.limit_train or None, limit_test=10, progress=False).y_train)
    return -(-n // 128)


def cmd_runs(args):
    print(
        f"# bench_dni.py runs: {args.dataset}, seeds {args.seeds}, {args.epochs} epochs; load average "
        f"{os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    best = run_all(args, data_args(args), methods())
    per_epoch = batches_per_epoch(args)
    print_table(best, per_epoch)
    figures = ROOT / "benchmarks" / "figures"
    figures.mkdir(exist_ok=True)
    plot(
        best,
        per_epoch,
        figures / f"dni_{args.dataset.replace('-', '_')}.png",
        f"bp vs DNI/cDNI on {args.dataset}, mlp 3x256 BN, MLP synthesizers 256, Adam 1e-3, batch 128 "
        f"(mean ± sd over seeds {','.join(map(str, args.seeds))})",
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def cmd_synthesizers(args):
    print(
        f"# bench_dni.py synthesizers: {args.dataset}, seeds {args.seeds}, {args.epochs} epochs; load average "
        f"{os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    variants = []
    for trainer in ("dni", "cdni"):
        for name, synth in (
            ("linear", ["--synthesizer", "linear"]),
            ("MLP 256", SAME_STRUCTURE),
            ("MLP 1024", ["--synthesizer", "mlp", "--synth-hidden", "1024"]),
        ):
            variants.append((f"{trainer}, {name}", ["--trainer", trainer, *synth], (1,)))
        for p in (0.5, 0.2):
            variants.append(
                (
                    f"{trainer}, MLP 256, update-prob {p}",
                    ["--trainer", trainer, *SAME_STRUCTURE, "--update-prob", str(p)],
                    (1,),
                )
            )
        variants.append(
            (f"{trainer}, linear, 2 workers", ["--trainer", trainer, "--synthesizer", "linear", "--workers", "2"], (1,))
        )
    variants.insert(0, ("bp", ["--trainer", "bp"], (1,)))
    best = run_all(args, data_args(args), variants)
    bp = spread([c[-1][2] for c in best["bp"][1]])[0]
    print("\n| variant (1 thread per process) | test accuracy | training s | vs bp time |")
    print("|---|---|---|---|")
    for label, (_, runs) in best.items():
        acc, acc_sd = spread([c[-1][1] for c in runs])
        sec, sec_sd = spread([c[-1][2] for c in runs])
        print(f"| {label} | {acc:.4f} ± {acc_sd:.4f} | {sec:.2f} ± {sec_sd:.2f} | {sec / bp:.2f}x |")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def cmd_predict(args):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    from tinydgl.backend import asarray
    from tinydgl.models import build_model
    from tinydgl.optim import build_optimizer
    from tinydgl import simulate
    from tinydgl.runtime.stages import unit_costs
    from tinydgl.trainers import build_trainer

    print(
        f"# bench_dni.py predict: batch {args.batch_size}, devices {args.devices}; load average "
        f"{os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}"
    )

    def trainer(name, **options):
        model = build_model("mlp", hidden=(256, 256, 256), seed=0)
        return build_trainer(name, model, lambda p: build_optimizer("adam", p, lr=1e-3), **options)

    x = asarray(np.random.default_rng(0).standard_normal((args.batch_size, 1, 28, 28)), dtype="float32")
    y = asarray(np.arange(args.batch_size) % 10)
    bp = trainer("bp")
    for _ in range(3):
        bp.train_step(x, y)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bp.train_step(x, y)
        times.append(time.perf_counter() - t0)
    bp_step = statistics.median(times)
    bp_rate = args.batch_size / bp_step
    print(f"\nbackprop, one device: {1e3 * bp_step:.2f} ms a step, {bp_rate:.0f} samples/s\n")
    print("| synthesizer | groups: ms a step each (with its synthesizer) | J devices | predicted samples/s | vs bp |")
    print("|---|---|---|---|---|")
    for name, options in (
        ("linear", {"synthesizer": "linear"}),
        ("MLP 256", {"synthesizer": "mlp", "synth_hidden": 256}),
        ("MLP 1024", {"synthesizer": "mlp", "synth_hidden": 1024}),
    ):
        dni = trainer("dni", **options)
        costs = [statistics.median(c) for c in zip(*(unit_costs(dni, args.batch_size) for _ in range(args.repeats)))]
        for j in args.devices:
            if j > len(costs):
                continue
            stages = simulate.group_stages(costs, [0.0] * len(costs), j)[0]
            rate = simulate.pipeline_throughput(stages, batch_size=args.batch_size)
            shown = ", ".join(f"{1e3 * c:.2f}" for c in costs)
            print(f"| {name} | {shown} | {j} | {rate:.0f} | {rate / bp_rate:.2f}x |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("runs", "synthesizers"):
        p = sub.add_parser(name)
        p.add_argument("--dataset", default="mnist-small")
        p.add_argument("--limit-train", type=int, default=0)
        p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
        p.add_argument("--epochs", type=int, default=4 if name == "runs" else 2)
    p = sub.add_parser("predict")
    p.add_argument("--devices", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 3, 4])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    {"runs": cmd_runs, "synthesizers": cmd_synthesizers, "predict": cmd_predict}[args.command](args)


if __name__ == "__main__":
    main()
