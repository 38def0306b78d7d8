"""Accuracy, epoch time and peak training memory of the training methods, side by side.

    # fidelity and speed: full Fashion-MNIST (Debian's dataset-fashion-mnist), SmallConv, the LLS recipe
    python benchmarks/bench_trainers.py accuracy --trainers bp,lls,lls-m,lls-mxm,dgl,cdni --epochs 3

    # step time of each method relative to backprop, steps interleaved so background load hits all alike
    python benchmarks/bench_trainers.py speed --trainers bp,lls,lls-m,lls-mxm,dgl --steps 20

    # peak memory of a few training steps on VGG8, batch 128, 3x32x32 inputs
    python benchmarks/bench_trainers.py memory --trainers bp,dgl,lls --model vgg8

`accuracy` trains each method from the same seed, on the same data and in the same process, one after the
other (Adam lr 5e-3, batch 128, T 0.5, sin basis, no augmentation by default, as in the LLS paper's
recipe) and prints test accuracy after each epoch and seconds per epoch, plus LLS's epoch time relative to
backprop's. `memory` runs `--steps` training steps per method under tracemalloc (which sees NumPy's
allocations) and prints the peak, relative to backprop. Not a test: it prints tables to paste into
benchmarks/RESULTS.md together with the command that produced them.
"""
import argparse
import time
import tracemalloc

import numpy as np

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
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
    train = DataLoader(ds.x_train, ds.y_train, args.batch_size, seed=args.seed, augment=args.augment,
                       mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    print(f"{args.model} on {ds.name}: {len(ds.y_train):,} train / {len(ds.y_test):,} test, batch {args.batch_size}, "
          f"{args.optimizer} lr {args.lr:g}, seed {args.seed}, augment={args.augment}")
    results = {}
    for name in args.trainers:
        trainer = make(name, args.model, ds.input_shape, ds.num_classes, args)
        history = fit(trainer, train, test, args.epochs, progress=False, log=lambda line, n=name: print(f"  {n:8s} {line}"))
        results[name] = history
    header = f"{'trainer':<9}" + "".join(f" {'acc@' + str(e + 1):>8}" for e in range(args.epochs)) + f" {'s/epoch':>8} {'x bp':>6}"
    print("\n" + header + "\n" + "-" * len(header))
    bp_time = np.mean([h["seconds"] for h in results["bp"]]) if "bp" in results else None
    for name, history in results.items():
        seconds = np.mean([h["seconds"] for h in history])
        ratio = f"{seconds / bp_time:6.2f}" if bp_time else "     -"
        print(f"{name:<9}" + "".join(f" {h['test_accuracy']:8.4f}" for h in history) + f" {seconds:8.1f} {ratio}")


def run_speed(args):
    """Median step time of each method, steps interleaved (a, b, c, a, b, c, ...) on the same batches, so
    load from other processes hits every method alike; ratios to bp are the number to read."""
    import statistics

    ds = load_dataset(args.dataset, limit_train=args.batch_size * 8)
    loader = DataLoader(ds.x_train, ds.y_train, args.batch_size, seed=args.seed, mean=ds.mean, std=ds.std)
    batches = list(loader)
    trainers = {name: make(name, args.model, ds.input_shape, ds.num_classes, args) for name in args.trainers}
    times = {name: [] for name in trainers}
    for step in range(args.steps + 2):
        x, y = batches[step % len(batches)]
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_step(x, y)
            if step >= 2:  # two warm-up steps
                times[name].append(time.perf_counter() - t0)
    print(f"median step time, {args.model} on {ds.name}, batch {args.batch_size}, {args.steps} interleaved steps")
    bp = statistics.median(times["bp"]) if "bp" in times else None
    print(f"\n{'trainer':<9} {'ms/step':>8} {'x bp':>6}\n" + "-" * 25)
    for name, ts in times.items():
        ms = statistics.median(ts) * 1000
        print(f"{name:<9} {ms:8.1f} {(ms / 1000 / bp if bp else float('nan')):6.2f}")


def run_memory(args):
    rng = np.random.default_rng(args.seed)
    shape = (3, 32, 32)
    x = rng.standard_normal((args.batch_size, *shape)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    print(f"peak memory of {args.steps} training steps, {args.model}, batch {args.batch_size}, input {shape}")
    rows = []
    for name in args.trainers:
        trainer = make(name, args.model, (3, 32), 10, args)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["accuracy", "speed", "memory"])
    parser.add_argument("--trainers", default="bp,lls,lls-m,lls-mxm,dgl", type=lambda s: s.split(","))
    parser.add_argument("--model", default="smallconv")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--waveform", default="sin")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--synthesizer", default="linear", help="dni/cdni synthesizer (auto is far slower on convs)")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    unknown = [t for t in args.trainers if t not in TRAINERS]
    if unknown:
        parser.error(f"unknown trainers {unknown}; choose from {', '.join(TRAINERS)}")
    {"accuracy": run_accuracy, "speed": run_speed, "memory": run_memory}[args.what](args)


if __name__ == "__main__":
    main()
