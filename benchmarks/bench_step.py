"""SmallConv training speed, tinydgl against PyTorch CPU: one step (forward, backward, Adam), or one epoch.

    # step time, both input sizes, batch 128, 1 thread and all cores, 3 processes of each library per case
    python benchmarks/bench_step.py
    python benchmarks/bench_step.py --threads 1 --sizes 3x32 --rounds 5 --repeat 30

    # one whole epoch of Fashion-MNIST, batch 128, Adam lr 5e-3, in each library
    python benchmarks/bench_step.py --epoch
    python benchmarks/bench_step.py --epoch --limit-train 512 --rounds 1     # a smoke test

    # where tinydgl's step time goes: per-layer times and each convolution's GFLOP/s (tinydgl only)
    python benchmarks/bench_step.py --breakdown --no-torch

How it is timed (docs/protocol.md, section 4). Every measurement runs in a child process of its own
(`bench_step.py --child tinydgl|torch|breakdown ...`) that imports one library and times it alone, with
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS set to the thread count before NumPy or PyTorch
starts (and torch.set_num_threads in PyTorch's child). Timing the two in one process, or interleaving their
steps, would make them share spinning BLAS/OpenMP threads: the one that runs next loses cores to the one
that just ran (PyTorch's step measured ~146 ms that way on this project's 2-core machine, ~75-85 ms alone).
tinydgl reads the same variables for its own threads (tinydgl/threads.py), and it runs BLAS on one and
spreads its products over its own threads, so "2 threads" means two cores for both libraries. The parent
times nothing; it alternates the children, tinydgl, PyTorch, tinydgl, PyTorch, ... for `--rounds` rounds,
each round covering every thread count (`--threads`, default 1 and all cores) and input size, so a change
in background load hits every case alike.

What is printed:
1. the machine: command, CPU, cores, NumPy's BLAS, PyTorch's version, the load average (with a warning
   when other processes are busy before we start); each child's progress as it ends; the load at the end;
2. step mode: per input size and thread count, each library's step time in ms: the median of every timed
   step of every process (`--repeat` steps after `--warmup` untimed ones, per process) and in brackets the
   spread, the lowest and highest per-process median; then tinydgl / PyTorch, the ratio of the medians;
3. epoch mode: seconds of one epoch's training (data loading and evaluation excluded) per library and
   thread count, median of the processes [min-max], the ratio, and each library's mean training loss
   (a check that both did the same work: same batches in the same order from tinydgl's DataLoader with
   `--seed`; the initial weights differ, each library using its own default initialisation);
4. with `--breakdown`: tinydgl's per-layer forward / backward times and each convolution's GFLOP/s beside
   NumPy's own matmul on the same shapes, from a tinydgl-only child per thread count.

Both libraries train the same architecture: tinydgl's `build_model("smallconv")` and the PyTorch model in
torch_smallconv_fmnist.py. PyTorch appears in benchmarks and optional tests only; tinydgl never imports it.
Not a test: it prints tables to paste into benchmarks/RESULTS.md with the command that produced them.
"""

import argparse
import statistics
import sys
import time

import numpy as np  # in a child, the parent has already set the thread variables this reads at import

import _processes as procs
import tinydgl
from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.threads import blas_own_threads
from tinydgl.train import fit
from tinydgl.trainers import build_trainer

NUM_CLASSES = 10
LR = 5e-3
LIBRARIES = {"tinydgl": "tinydgl", "torch": "PyTorch"}


def make_data(batch, channels, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=batch)
    return x, y


def parse_size(text):
    """'3x32' (or '3x32x32') -> (3, 32)."""
    parts = text.lower().split("x")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts) or (len(parts) == 3 and parts[1] != parts[2]):
        raise ValueError(f"an input size is CxS (channels x side, square images), e.g. 1x28 or 3x32; got {text!r}.")
    return int(parts[0]), int(parts[1])


def size_label(text):
    channels, size = parse_size(text)
    return f"{channels}x{size}x{size}"


# --- child: tinydgl ------------------------------------------------------------------------------------
def tinydgl_step_fn(channels, size, x, y):
    model = build_model("smallconv", channels, size, NUM_CLASSES, seed=0)
    optimizer = Adam(model.parameters(), lr=LR)

    def step():
        optimizer.zero_grad()
        logits = model.forward(x)
        loss, dlogits = F.softmax_cross_entropy(logits, y)
        model.backward(dlogits, need_input_grad=False)
        optimizer.step()
        return loss

    return model, optimizer, step


def tinydgl_epoch(train_loader, test_loader, channels, size, seed):
    """One epoch of backprop with the library's own loop; returns (mean training loss, training seconds)."""
    model = build_model("smallconv", channels, size, NUM_CLASSES, seed=seed)
    trainer = build_trainer("bp", model, lambda params: Adam(params, lr=LR))
    # fit's `seconds` cover the training batches only, not the evaluation after the epoch
    history = fit(trainer, train_loader, test_loader, 1, progress=False, log=lambda line: None)
    return history[0]["train_loss"], history[0]["seconds"]


# --- child: PyTorch ------------------------------------------------------------------------------------
def import_torch(threads):
    """PyTorch with `threads` intra-op threads (OMP_NUM_THREADS from the parent says the same; set both
    so a child started by hand is right too). Only PyTorch's children import it."""
    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not installed: pip install torch (CPU build), or run with --no-torch.")
    torch.set_num_threads(threads)
    return torch


def torch_model(torch, channels, seed):
    from torch_smallconv_fmnist import smallconv  # the one PyTorch copy of the architecture

    torch.manual_seed(seed)
    model = smallconv(channels, NUM_CLASSES)
    return model, torch.optim.Adam(model.parameters(), lr=LR)


# --- child: the per-layer breakdown (tinydgl only) -----------------------------------------------------
def leaf_layers(module, prefix=""):
    """(dotted name, layer) for every layer that is not a container, in forward order."""
    children = module.children()
    if not children:
        yield prefix.rstrip("."), module
    for i, child in enumerate(children):
        yield from leaf_layers(child, f"{prefix}{i}.")


def layer_breakdown(channels, size, x, y, warmup, repeat):
    """Median forward / backward time of every layer, by wrapping each layer's methods with a timer."""
    model, optimizer, step = tinydgl_step_fn(channels, size, x, y)
    times = {}
    layers = list(leaf_layers(model))

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            times.setdefault(key, []).append(time.perf_counter() - t0)
            return out

        return wrapper

    for name, layer in layers:  # instance attributes shadow the class methods Sequential calls
        layer.forward = timed((name, "fwd"), layer.forward)
        layer.backward = timed((name, "bwd"), layer.backward)
    loss_fn = timed(("loss", "fwd"), F.softmax_cross_entropy)
    opt_step = timed(("adam", "step"), optimizer.step)

    def timed_step():
        optimizer.zero_grad()
        logits = model.forward(x)
        _, dlogits = loss_fn(logits, y)
        model.backward(dlogits, need_input_grad=False)
        opt_step()

    for _ in range(warmup):
        timed_step()
    times.clear()
    for _ in range(repeat):
        timed_step()
    median = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        (name, repr(layer).splitlines()[0], median.get((name, "fwd"), 0.0), median.get((name, "bwd"), 0.0))
        for name, layer in layers
    ]
    rows.append(("loss", "softmax_cross_entropy", median[("loss", "fwd")], 0.0))
    rows.append(("adam", "Adam.step", 0.0, median[("adam", "step")]))
    return model, rows, median


def print_breakdown(label, rows):
    total = sum(f + b for _, _, f, b in rows)
    print(f"\ntinydgl per-layer time, {label} (median of timed steps; ms)")
    print(f"  {'layer':<7} {'op':<44} {'forward':>8} {'backward':>9} {'share':>6}")
    for name, op, f, b in rows:
        print(f"  {name:<7} {op[:44]:<44} {f * 1e3:8.2f} {b * 1e3:9.2f} {100 * (f + b) / total:5.1f}%")
    print(f"  {'sum':<7} {'':<44} {sum(r[2] for r in rows) * 1e3:8.2f} {sum(r[3] for r in rows) * 1e3:9.2f}")


def matmul_gflops(m, k, n, warmup=2, repeat=7):
    """NumPy's float32 (m, k) @ (k, n) rate in GFLOP/s (2*m*k*n flops per product)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    # tinydgl keeps BLAS on one thread (tinydgl.threads); give BLAS its own thread count back for this
    # reference product, then take it to one again.
    with blas_own_threads():
        t = statistics.median(procs.timed(lambda: a @ b, warmup, repeat))
    return 2.0 * m * k * n / t / 1e9


def print_conv_rates(label, model, median, batch, size):
    """Conv forward/backward GFLOP/s from the breakdown, beside NumPy matmul on the im2col shapes."""
    print(f"\nconv GFLOP/s, {label} (conv as im2col: M = N*H_out*W_out, K = C*3*3, F filters)")
    print(f"  {'layer':<7} {'M x K x F':<22} {'fwd':>7} {'bwd':>7} {'np matmul MxK@KxF':>18}")
    side = size
    for name, layer in leaf_layers(model):
        if type(layer).__name__ == "MaxPool2d":
            side //= 2
        if type(layer).__name__ != "Conv2d":
            continue
        m, k, f = batch * side * side, layer.in_channels * layer.kernel_size**2, layer.out_channels
        flops = 2.0 * m * k * f
        first = name == "0.0"  # the first conv computes no input gradient: one product in backward
        fwd = flops / median[(name, "fwd")] / 1e9
        bwd = (flops if first else 2 * flops) / median[(name, "bwd")] / 1e9
        ref = matmul_gflops(m, k, f)
        print(f"  {name:<7} {f'{m} x {k} x {f}':<22} {fwd:7.1f} {bwd:7.1f} {ref:18.1f}")


# --- the child process ---------------------------------------------------------------------------------
def run_child(args):
    """Time one library alone (this process's only work) and print one JSON line, or print the breakdown."""
    counts, sizes = procs.parse_threads(args.threads), args.sizes.split(",")
    one_size = len(sizes) == 1 or args.epoch or args.child == "breakdown"  # a step child times one size
    if len(counts) != 1 or not one_size:
        sys.exit(
            "a --child process times one thread count and one size (--threads 2 --sizes 1x28); "
            "run the script without --child, and it passes them."
        )
    threads = counts[0]
    tinydgl.set_backend("numpy")
    if args.child == "breakdown":
        return child_breakdown(args, threads)
    torch = import_torch(threads) if args.child == "torch" else None
    seen = torch.get_num_threads() if torch else tinydgl.num_threads()  # tinydgl's threads run its BLAS too
    result = {"library": args.child, "threads": threads, "threads_seen": seen}
    if args.epoch:
        ds = load_dataset("fashion-mnist", limit_train=args.limit_train, progress=False)
        train = DataLoader(ds.x_train, ds.y_train, args.batch, seed=args.seed, mean=ds.mean, std=ds.std)
        channels, size = ds.input_shape[0], ds.input_shape[1]
        if torch:
            from torch_smallconv_fmnist import train_epoch

            model, optimizer = torch_model(torch, channels, args.seed)
            train.set_epoch(0)  # epoch 0's order, as fit gives tinydgl
            loss, seconds = train_epoch(model, optimizer, train)
        else:
            # fit evaluates after the epoch (untimed); one test batch keeps that short
            test = DataLoader(
                ds.x_test[: args.batch], ds.y_test[: args.batch], args.batch, shuffle=False, mean=ds.mean, std=ds.std
            )
            loss, seconds = tinydgl_epoch(train, test, channels, size, args.seed)
        result.update(epoch_seconds=seconds, train_loss=loss, steps=len(train), samples=len(ds.y_train))
    else:
        size_text = sizes[0]
        channels, size = parse_size(size_text)
        x, y = make_data(args.batch, channels, size, args.seed)
        if torch:
            from torch_smallconv_fmnist import train_step

            model, optimizer = torch_model(torch, channels, args.seed)
            model.train()
            step = lambda: train_step(model, optimizer, x, y)  # noqa: E731
        else:
            _, _, step = tinydgl_step_fn(channels, size, x, y)
        result.update(input=size_label(size_text), step_seconds=procs.timed(step, args.warmup, args.repeat))
    procs.report(result)


def child_breakdown(args, threads):
    print(
        f"\n=== tinydgl breakdown, {threads} thread(s) (tinydgl uses {tinydgl.num_threads()}, BLAS reports "
        f"{procs.blas_threads()} before tinydgl starts) ==="
    )
    for size_text in args.sizes.split(","):
        channels, size = parse_size(size_text)
        x, y = make_data(args.batch, channels, size, args.seed)
        label = f"{size_label(size_text)}, {threads} thread(s)"
        model, rows, median = layer_breakdown(channels, size, x, y, args.warmup, args.repeat)
        print_breakdown(label, rows)
        print_conv_rates(label, model, median, args.batch, size)
    big = 2048
    print(
        f"\nnp float32 matmul {big}x{big}x{big}, {threads} thread(s): {matmul_gflops(big, big, big):.1f} GFLOP/s "
        "(the BLAS's practical peak here)",
        flush=True,
    )


# --- the parent: alternate the children, then tabulate ------------------------------------------------
def child_args(args, library, threads, size=None):
    """The command line of one child: the parent's settings, one library, one thread count (one size)."""
    out = [
        __file__,
        "--child",
        library,
        "--threads",
        threads,
        "--batch",
        args.batch,
        "--seed",
        args.seed,
        "--warmup",
        args.warmup,
        "--repeat",
        args.repeat,
        "--sizes",
        size or args.sizes,
    ]
    if args.epoch:
        out += ["--epoch"] + (["--limit-train", args.limit_train] if args.limit_train else [])
    return out


def compare_steps(args, libraries, thread_counts):
    sizes = args.sizes.split(",")
    cases = [(threads, size, lib) for threads in thread_counts for size in sizes for lib in libraries]
    print(
        f"\nstep: SmallConv, float32, batch {args.batch}, Adam lr {LR}; per process {args.warmup} warm-up + "
        f"{args.repeat} timed steps; {args.rounds} round(s) of {len(cases)} processes\n"
    )
    results = procs.alternate(
        cases,
        args.rounds,
        lambda case: procs.child_result(child_args(args, case[2], case[0], case[1]), case[0], args.timeout),
        lambda case, r: (
            f"{LIBRARIES[case[2]]:<7} {case[0]} thread(s) {size_label(case[1])}: "
            f"median {statistics.median(r['step_seconds']) * 1e3:.1f} ms"
        ),
    )
    check_threads(results)
    procs.print_load("end")
    print(
        f"\nstep time in ms: median of all {args.rounds} x {args.repeat} timed steps "
        f"[lowest-highest median of the {args.rounds} processes]\n"
    )
    print("| input | threads | tinydgl ms | PyTorch ms | tinydgl / PyTorch |\n|---|---|---|---|---|")
    for threads in thread_counts:
        for size in sizes:
            got = {
                lib: procs.summarize([r["step_seconds"] for r in results[(threads, size, lib)]]) for lib in libraries
            }
            print(f"| {size_label(size)} | {threads} | " + " | ".join(cells(got, 1e3)) + " |")


def compare_epochs(args, libraries, thread_counts):
    cases = [(threads, lib) for threads in thread_counts for lib in libraries]
    subset = f"the first {args.limit_train:,} (class-balanced) training images" if args.limit_train else "60,000 images"
    print(
        f"\nepoch: SmallConv on Fashion-MNIST ({subset}), batch {args.batch}, Adam lr {LR}, "
        f"seed {args.seed}; {args.rounds} round(s) of {len(cases)} processes, one epoch each\n"
    )
    results = procs.alternate(
        cases,
        args.rounds,
        lambda case: procs.child_result(child_args(args, case[1], case[0]), case[0], args.timeout),
        lambda case, r: (
            f"{LIBRARIES[case[1]]:<7} {case[0]} thread(s): {r['epoch_seconds']:.1f} s "
            f"({r['steps']} steps), train loss {r['train_loss']:.4f}"
        ),
    )
    check_threads(results)
    procs.print_load("end")
    print(
        f"\nseconds of training in one epoch: median of {args.rounds} process(es) [min-max]; "
        "mean training loss (median)\n"
    )
    print(
        "| threads | tinydgl s | PyTorch s | tinydgl / PyTorch | loss tinydgl | loss PyTorch |\n"
        "|---|---|---|---|---|---|"
    )
    for threads in thread_counts:
        got = {lib: procs.summarize([[r["epoch_seconds"]] for r in results[(threads, lib)]]) for lib in libraries}
        loss = {lib: statistics.median(r["train_loss"] for r in results[(threads, lib)]) for lib in libraries}
        print(
            f"| {threads} | "
            + " | ".join(cells(got, 1.0))
            + " | "
            + " | ".join(f"{loss[lib]:.4f}" if lib in loss else "-" for lib in LIBRARIES)
            + " |"
        )


def cells(got, scale):
    """The tinydgl and PyTorch cells of a row, then their ratio ('-' where a library was not run)."""
    row = [procs.format_summary(got[lib], scale) if lib in got else "-" for lib in LIBRARIES]
    ratio = f"{got['tinydgl'].median / got['torch'].median:.2f}x" if len(got) == 2 else "-"
    return row + [ratio]


def check_threads(results):
    for case, runs in results.items():
        for r in runs:
            procs.warn_threads(f"{r['library']} {case}", r["threads"], r["threads_seen"])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads", default="1,all", help="comma-separated thread counts, 'all' = os.cpu_count() (default: 1,all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="processes per library and case, alternated (default: 3)")
    parser.add_argument("--sizes", default="1x28,3x32", help="comma-separated CxS input sizes (default: 1x28,3x32)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per process before timing")
    parser.add_argument("--repeat", type=int, default=15, help="timed steps per process")
    parser.add_argument(
        "--epoch",
        action="store_true",
        help="time one whole epoch of Fashion-MNIST instead of single steps on random data",
    )
    parser.add_argument(
        "--limit-train",
        type=int,
        default=None,
        help="--epoch on a class-balanced subset of this many training images (smoke tests)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data (and, in epoch mode, batch order and weights)")
    parser.add_argument("--no-torch", action="store_true", help="time tinydgl only")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print tinydgl's per-layer times and conv GFLOP/s (a tinydgl-only child per thread count)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one child may run (default: 3600)")
    parser.add_argument("--child", choices=["tinydgl", "torch", "breakdown"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)

    try:
        thread_counts = procs.parse_threads(args.threads)
        for size in args.sizes.split(","):
            parse_size(size)
    except ValueError as e:
        parser.error(str(e))
    if args.rounds < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--rounds and --repeat must be at least 1, --warmup at least 0.")
    if args.breakdown and args.epoch:
        parser.error("--breakdown times single steps; run it without --epoch.")
    libraries = ["tinydgl"]
    if not args.no_torch:
        if procs.torch_version() is None:
            print("PyTorch is not installed: timing tinydgl only (pip install torch for the comparison).")
        else:
            libraries.append("torch")
    procs.print_machine(with_torch="torch" in libraries)
    try:
        (compare_epochs if args.epoch else compare_steps)(args, libraries, thread_counts)
        if args.breakdown:
            for threads in thread_counts:
                print(procs.run_child(child_args(args, "breakdown", threads), threads, args.timeout), end="")
    except procs.ChildFailed as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
