"""Time one SmallConv training step (forward, backward, Adam update) in tinydgl and, if installed, PyTorch.

    python benchmarks/bench_step.py                      # both input sizes, batch 128, float32
    python benchmarks/bench_step.py --sizes 3x32 --repeat 20 --no-torch

What is printed:
1. the machine: cores, NumPy and its BLAS (library, kernel, threads), PyTorch's thread count;
2. step time per input size: median of `--repeat` timed steps after `--warmup` untimed ones, for tinydgl
   and PyTorch CPU with the same number of threads, and their ratio (the issue's target is <= 1.25x);
3. tinydgl's per-layer breakdown: the median time of each layer's forward and backward, the loss and the
   optimizer, so you can see where a step's time goes;
4. each convolution's GFLOP/s (forward; backward = dw and, except in the first layer, dx), next to NumPy's
   own float32 matmul GFLOP/s for the same matrix shapes and for one large square product.

Both libraries see the same data (seeded), and PyTorch is told to use as many threads as NumPy's BLAS
(read with threadpoolctl when it is installed, else from the environment). PyTorch may appear in
benchmarks and optional tests only; tinydgl itself never imports it.
"""
import argparse
import os
import platform
import statistics
import time

import numpy as np

import tinydgl
from tinydgl import functional as F
from tinydgl.models import build_model
from tinydgl.optim import Adam

NUM_CLASSES = 10
LR = 5e-3


# --- the machine --------------------------------------------------------------------------------------
def blas_info():
    """(threads, description) of NumPy's BLAS, via threadpoolctl when available."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        return (int(threads) if threads else os.cpu_count()), "unknown (pip install threadpoolctl to see it)"
    pools = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    pools = pools or [p for p in threadpool_info() if p["user_api"] == "blas"]
    if not pools:
        return os.cpu_count(), "not found by threadpoolctl"
    p = pools[0]
    kernel = p.get("architecture", "?")
    desc = f"{p['internal_api']} {p.get('version')} kernel={kernel} threads={p['num_threads']}"
    return p["num_threads"], desc


def print_machine(threads, blas_desc, torch):
    print(f"machine : {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, python {platform.python_version()}")
    print(f"numpy   : {np.__version__}, BLAS {blas_desc}")
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    print(f"env     : {coretype or 'OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE not set'}")
    if torch is not None:
        print(f"torch   : {torch.__version__}, threads={torch.get_num_threads()} (matched to NumPy's BLAS: {threads})")
    else:
        print("torch   : not installed (tinydgl only)")


# --- timing helpers -----------------------------------------------------------------------------------
def median_time(fn, warmup, repeat):
    return median_times([fn], warmup, repeat)[0]


def median_times(fns, warmup, repeat):
    """Median wall time of each function, running them in turn (a, b, a, b, ...).

    Interleaving means a burst of load from another process slows both libraries alike, so their ratio
    stays meaningful on a shared machine.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, record in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            record.append(time.perf_counter() - t0)
    return [statistics.median(record) for record in times]


def make_data(batch, channels, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=batch)
    return x, y


# --- tinydgl ------------------------------------------------------------------------------------------
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
    rows = [(name, repr(layer).splitlines()[0], median.get((name, "fwd"), 0.0), median.get((name, "bwd"), 0.0))
            for name, layer in layers]
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
    t = median_time(lambda: a @ b, warmup, repeat)
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


# --- PyTorch ------------------------------------------------------------------------------------------
def torch_step_fn(torch, channels, x, y):
    nn = torch.nn

    def block(cin, cout, pool_first):
        layers = [nn.MaxPool2d(2)] if pool_first else []
        return layers + [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01)]

    torch.manual_seed(0)
    model = nn.Sequential(
        *block(channels, 32, False), *block(32, 64, True), *block(64, 128, True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(512, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.01),
        nn.Linear(512, NUM_CLASSES),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        optimizer.step()
        return loss

    return step


# --- main ---------------------------------------------------------------------------------------------
def parse_size(text):
    channels, size = text.lower().split("x")
    return int(channels), int(size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1x28,3x32", help="comma-separated CxS input sizes (default: 1x28,3x32)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--repeat", type=int, default=15, help="timed steps; the median is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both NumPy's BLAS (needs threadpoolctl) and PyTorch (default: BLAS's own count)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-layer and GFLOP/s tables")
    args = parser.parse_args()

    tinydgl.set_backend("numpy")
    if args.threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            parser.error("--threads needs threadpoolctl (pip install threadpoolctl), or set OPENBLAS_NUM_THREADS")
        threadpool_limits(limits=args.threads, user_api="blas")
    threads, blas_desc = blas_info()
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            torch = None
    print_machine(threads, blas_desc, torch)
    print(f"load    : {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15-min load average at start: other processes were busy if it is well above 0)")
    print(f"setup   : SmallConv, float32, batch {args.batch}, Adam lr={LR}; median of {args.repeat} steps after {args.warmup} warm-up")

    results = []
    for size_text in args.sizes.split(","):
        channels, size = parse_size(size_text)
        x, y = make_data(args.batch, channels, size)
        _, _, step = tinydgl_step_fn(channels, size, x, y)
        steps = [step] + ([torch_step_fn(torch, channels, x, y)] if torch else [])
        t_tiny, t_torch = (median_times(steps, args.warmup, args.repeat) + [None])[:2]
        results.append((f"{channels}x{size}x{size}", t_tiny, t_torch))

    print(f"\n{'input':<10} {'tinydgl ms':>11} {'torch ms':>9} {'ratio':>6}")
    for label, t_tiny, t_torch in results:
        torch_col = f"{t_torch * 1e3:9.1f}" if t_torch else f"{'-':>9}"
        ratio_col = f"{t_tiny / t_torch:5.2f}x" if t_torch else f"{'-':>6}"
        print(f"{label:<10} {t_tiny * 1e3:11.1f} {torch_col} {ratio_col}")

    if args.no_breakdown:
        return
    for size_text in args.sizes.split(","):
        channels, size = parse_size(size_text)
        x, y = make_data(args.batch, channels, size)
        label = f"{channels}x{size}x{size}"
        model, rows, median = layer_breakdown(channels, size, x, y, args.warmup, args.repeat)
        print_breakdown(label, rows)
        print_conv_rates(label, model, median, args.batch, size)
    big = 2048
    print(f"\nload at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"np float32 matmul {big}x{big}x{big}: {matmul_gflops(big, big, big):.1f} GFLOP/s (the BLAS's practical peak here)")


if __name__ == "__main__":
    main()
