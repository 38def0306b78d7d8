"""Accuracy, training speed and peak training memory of the training methods, side by side.

    # fidelity: full Fashion-MNIST (Debian's dataset-fashion-mnist), SmallConv, the LLS recipe
    python benchmarks/bench_trainers.py accuracy --trainers bp,lls,lls-m,lls-mxm,dgl,cdni --epochs 3
    python benchmarks/bench_trainers.py accuracy --trainers bp,lls --optimizer adamw-sf --bn-recalibrate 50

    # step time of each method, and its ratio to backprop, at 1 thread and all cores
    python benchmarks/bench_trainers.py speed --trainers bp,lls,lls-m,lls-mxm,dgl --steps 20 --rounds 3

    # one whole epoch of training per method (--limit-train N for a quick look)
    python benchmarks/bench_trainers.py speed --epoch --trainers bp,lls,lls-m,lls-mxm,dgl --rounds 3

    # peak memory of a few training steps on VGG8, batch 128, 3x32x32 inputs
    python benchmarks/bench_trainers.py memory --trainers bp,dgl,lls --model vgg8

`accuracy` trains each method from the same seed, on the same data and in the same process, one after the
other (Adam lr 5e-3, batch 128, T 0.5, sin basis, no augmentation by default, as in the LLS paper's
recipe; `--optimizer` takes any name tinydgl.optim.build_optimizer knows, e.g. adamw-sf, the paper's own)
and prints test accuracy after each epoch; its seconds per epoch are only indicative, since the methods
ran one after the other in one process.

`speed` is the timing to quote. Each method runs in a child process of its own
(`bench_trainers.py speed --child NAME ...`) with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS
set to the thread count before NumPy starts, and the parent alternates the children (bp, lls, ..., bp,
lls, ...) over `--rounds` rounds, each round covering every thread count in `--threads` (default 1 and all
cores). Why (docs/protocol.md, section 4): steps of several methods interleaved in one process share OpenBLAS's
spinning threads, so one method's step pays for the threads the one before left behind, and a process of
its own is what a user runs. Per method and thread count it prints the median [min-max of the
per-process medians] of the step time (`--steps` timed steps on Fashion-MNIST batches after `--warmup`
untimed ones, per process) or, with `--epoch`, of one epoch's training seconds (the library's own loop,
`tinydgl.train.fit`; evaluation excluded), and the ratio of the medians to bp's.

`memory` runs `--steps` training steps per method under tracemalloc (which sees NumPy's allocations) and
prints the peak, relative to backprop; it may stay in one process, since tracemalloc counts allocations,
not time. Not a test: it prints tables to paste into benchmarks/RESULTS.md together with the command that
produced them.
"""

import argparse
import itertools
import statistics
import sys
import time
import tracemalloc

import numpy as np  # in a speed child, the parent has already set the thread variables this reads

import _processes as procs
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import OPTIMIZERS, build_optimizer
from tinydgl.train import fit
from tinydgl.trainers import TRAINERS, build_trainer


def make(name, model_name, shape, num_classes, args):
    channels, size = shape[0], shape[1]
    model = build_model(model_name, channels, size, num_classes, seed=args.seed)
    options = {"temperature": args.temperature, "waveform": args.waveform} if name.startswith("lls") else {}
    if name in ("dni", "cdni"):
        options = {"synthesizer": args.synthesizer}
    return build_trainer(name, model, lambda p: build_optimizer(args.optimizer, p, lr=args.lr), **options)


def run_accuracy(args):
    ds = load_dataset(args.dataset, limit_train=args.limit_train, limit_test=args.limit_test)
    train = DataLoader(
        ds.x_train, ds.y_train, args.batch_size, seed=args.seed, augment=args.augment, mean=ds.mean, std=ds.std
    )
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    print(
        f"{args.model} on {ds.name}: {len(ds.y_train):,} train / {len(ds.y_test):,} test, batch {args.batch_size}, "
        f"{args.optimizer} lr {args.lr:g}, seed {args.seed}, augment={args.augment}"
    )
    results = {}
    for name in args.trainers:
        trainer = make(name, args.model, ds.input_shape, ds.num_classes, args)
        history = fit(
            trainer,
            train,
            test,
            args.epochs,
            progress=False,
            bn_recalibrate=args.bn_recalibrate,
            log=lambda line, n=name: print(f"  {n:8s} {line}"),
        )
        results[name] = history
    header = (
        f"{'trainer':<9}"
        + "".join(f" {'acc@' + str(e + 1):>8}" for e in range(args.epochs))
        + f" {'s/epoch':>8} {'x bp':>6}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    bp_time = np.mean([h["seconds"] for h in results["bp"]]) if "bp" in results else None
    for name, history in results.items():
        seconds = np.mean([h["seconds"] for h in history])
        ratio = f"{seconds / bp_time:6.2f}" if bp_time else "     -"
        print(f"{name:<9}" + "".join(f" {h['test_accuracy']:8.4f}" for h in history) + f" {seconds:8.1f} {ratio}")


def run_speed(args):
    """The parent: one child per (round, thread count, method), alternated; then the table."""
    thread_counts = procs.parse_threads(args.threads)
    cases = [(threads, name) for threads in thread_counts for name in args.trainers]
    procs.print_machine()
    what = (
        f"one epoch ({f'{args.limit_train:,} training images' if args.limit_train else 'the whole training set'})"
        if args.epoch
        else f"{args.warmup} warm-up + {args.steps} timed steps"
    )
    print(
        f"\n{args.model} on {args.dataset}, batch {args.batch_size}, {args.optimizer} lr {args.lr:g}, seed "
        f"{args.seed}; per process {what}; {args.rounds} round(s) of {len(cases)} processes\n"
    )

    def run_case(case):
        threads, name = case
        return procs.child_result(
            [__file__, "speed", "--child", name, "--threads", threads, *forwarded(args)], threads, args.timeout
        )

    def describe(case, r):
        value = (
            f"{r['epoch_seconds']:.1f} s ({r['steps']} steps)"
            if args.epoch
            else f"median {statistics.median(r['step_seconds']) * 1e3:.1f} ms/step"
        )
        return f"{case[1]:<8} {case[0]} thread(s): {value}"

    try:
        results = procs.alternate(cases, args.rounds, run_case, describe)
    except procs.ChildFailed as e:
        sys.exit(f"error: {e}")
    for (threads, name), runs in results.items():
        for r in runs:
            procs.warn_threads(f"{name}, {threads} thread(s)", threads, r["threads_seen"])
    procs.print_load("end")

    key, unit, scale = ("epoch_seconds", "s/epoch", 1.0) if args.epoch else ("step_seconds", "ms/step", 1e3)
    samples = (lambda r: [r[key]]) if args.epoch else (lambda r: r[key])  # an epoch is one sample per process
    summary = {case: procs.summarize([samples(r) for r in runs]) for case, runs in results.items()}
    spread = (
        f"median of {args.rounds} process(es) [min-max]"
        if args.epoch
        else f"median of all {args.rounds} x {args.steps} timed steps [lowest-highest median of the processes]"
    )
    print(f"\n{unit}: {spread}; x bp: ratio of the medians\n")
    print(
        "| trainer | "
        + " | ".join(f"{unit}, {t} thread{'s' if t > 1 else ''} | x bp" for t in thread_counts)
        + " |\n|---|"
        + "---|---|" * len(thread_counts)
    )
    for name in args.trainers:
        row = []
        for threads in thread_counts:
            s, bp = summary[(threads, name)], summary.get((threads, "bp"))
            row += [procs.format_summary(s, scale), f"{s.median / bp.median:.2f}" if bp else "-"]
        print(f"| {name} | " + " | ".join(row) + " |")


def forwarded(args):
    """The options a speed child needs to build the same trainer on the same data as its siblings."""
    out = [
        "--model",
        args.model,
        "--dataset",
        args.dataset,
        "--batch-size",
        args.batch_size,
        "--optimizer",
        args.optimizer,
        "--lr",
        args.lr,
        "--temperature",
        args.temperature,
        "--waveform",
        args.waveform,
        "--synthesizer",
        args.synthesizer,
        "--seed",
        args.seed,
        "--steps",
        args.steps,
        "--warmup",
        args.warmup,
    ]
    if args.limit_train is not None:
        out += ["--limit-train", args.limit_train]
    return out + ["--augment"] * args.augment + ["--epoch"] * args.epoch


def run_speed_child(args):
    """One method alone in this process: time its steps, or one epoch, and print one JSON line."""
    counts = procs.parse_threads(args.threads)
    if len(counts) != 1:
        sys.exit(
            "a --child process takes one thread count (--threads 2); run without --child and the parent passes it."
        )
    name = args.child
    result = {"trainer": name, "threads": counts[0], "threads_seen": procs.blas_threads()}
    if args.epoch:
        ds = load_dataset(args.dataset, limit_train=args.limit_train, progress=False)
        train = DataLoader(
            ds.x_train, ds.y_train, args.batch_size, seed=args.seed, augment=args.augment, mean=ds.mean, std=ds.std
        )
        # fit evaluates after the epoch, untimed; one test batch keeps that short
        test = DataLoader(
            ds.x_test[: args.batch_size],
            ds.y_test[: args.batch_size],
            args.batch_size,
            shuffle=False,
            mean=ds.mean,
            std=ds.std,
        )
        trainer = make(name, args.model, ds.input_shape, ds.num_classes, args)
        (epoch,) = fit(trainer, train, test, 1, progress=False, log=lambda line: None)
        result.update(epoch_seconds=epoch["seconds"], train_loss=epoch["train_loss"], steps=len(train))
    else:
        # a few distinct batches, cycled: real images, without loading an epoch's worth
        limit = min(args.limit_train or args.batch_size * 8, args.batch_size * 8)
        ds = load_dataset(args.dataset, limit_train=limit, progress=False)
        loader = DataLoader(
            ds.x_train, ds.y_train, args.batch_size, seed=args.seed, augment=args.augment, mean=ds.mean, std=ds.std
        )
        batches = list(loader)
        trainer = make(name, args.model, ds.input_shape, ds.num_classes, args)
        trainer.to_train_weights()
        trainer.model.train()
        batch = itertools.cycle(batches)
        result.update(step_seconds=procs.timed(lambda: trainer.train_step(*next(batch)), args.warmup, args.steps))
    procs.report(result)


def run_memory(args):
    rng = np.random.default_rng(args.seed)
    shape = (3, 32, 32)
    x = rng.standard_normal((args.batch_size, *shape)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    print(f"peak memory of {args.steps} training steps, {args.model}, batch {args.batch_size}, input {shape}")
    rows = []
    for name in args.trainers:
        trainer = make(name, args.model, (3, 32), 10, args)
        trainer.to_train_weights()
        trainer.train_step(x, y)  # optimizer state exists before we measure
        tracemalloc.start()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(x, y)
        seconds = (time.perf_counter() - t0) / args.steps
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((name, peak / 2**20, seconds))
    bp = dict((r[0], r[1]) for r in rows).get("bp")
    print(f"\n{'trainer':<9} {'peak MiB':>9} {'x bp':>6} {'s/step':>7}\n" + "-" * 34)
    for name, mib, seconds in rows:
        print(f"{name:<9} {mib:9.1f} {(mib / bp if bp else float('nan')):6.2f} {seconds:7.2f}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["accuracy", "speed", "memory"])
    parser.add_argument("--trainers", default="bp,lls,lls-m,lls-mxm,dgl", type=lambda s: s.split(","))
    parser.add_argument("--model", default="smallconv")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizer", default="adam", help="any name build_optimizer knows (default: adam)")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--waveform", default="sin")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--synthesizer", default="linear", help="dni/cdni synthesizer (auto is far slower on convs)")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument(
        "--bn-recalibrate",
        type=int,
        default=0,
        help="accuracy: re-estimate batch-norm statistics on this many batches before each test "
        "(the LLS authors' protocol uses 50; default 0)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per process in speed (default 20), steps measured in memory (default 3)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="speed: untimed steps per process before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        default="1,all",
        help="speed: comma-separated thread counts, 'all' = os.cpu_count() (default: 1,all)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="speed: processes per method and thread count, alternated (default: 3)"
    )
    parser.add_argument("--epoch", action="store_true", help="speed: time one whole epoch instead of single steps")
    parser.add_argument("--timeout", type=float, default=3600, help="speed: seconds one child may run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [t for t in args.trainers if t not in TRAINERS]
    if unknown:
        parser.error(f"unknown trainers {unknown}; choose from {', '.join(TRAINERS)}")
    if args.optimizer not in OPTIMIZERS:
        parser.error(f"unknown optimizer {args.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if args.steps is None:
        args.steps = 20 if args.what == "speed" else 3
    if args.what == "speed" and not args.child:
        try:
            procs.parse_threads(args.threads)
        except ValueError as e:
            parser.error(str(e))
        if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
            parser.error("--rounds and --steps must be at least 1, --warmup at least 0.")
    if args.child:
        if args.what != "speed" or args.child not in TRAINERS:
            parser.error("--child is how `speed` starts its children: `speed --child NAME --threads N`.")
        return run_speed_child(args)
    {"accuracy": run_accuracy, "speed": run_speed, "memory": run_memory}[args.what](args)


if __name__ == "__main__":
    main()
