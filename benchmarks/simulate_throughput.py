"""Predicted pipeline throughput (`tinydgl.simulate`) against measured local runs, and for J <= 16.

    # (a) + (b): measure each DGL module's step on this machine, predict J = 1, 2, 4 workers on its cores
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.simulate_throughput
    # ... and run the real engine (`run_module_parallel`) for J = 1, 2, 4 to compare, side by side
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.simulate_throughput --measure
    # (c) only the figure for J = 1..16 devices (benchmarks/figures/throughput_simulation.png)
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.simulate_throughput --skip-local

Run it as a module from the repository root (`python -m`), so this checkout's tinydgl is the one imported.
Not a test: it prints tables (and the command that made them) to paste into benchmarks/RESULTS.md.

(a) Costs. DGL on `smallconv` (4 modules: three conv blocks, then the linear block with the classifier),
Fashion-MNIST, batch 128, Adam. Each module's `LocalModule.step` (forward, auxiliary head, backward,
update) is timed in-process, on the real batches, median over `--repeat` batches after two warm-up steps.
Also timed: one copy of each module's output (a ring `put` or `get` copies the batch once) and the data
loader's work per batch (in the engine it runs in the parent, which feeds ring 0).

(b) Prediction for the local engine, which runs J workers plus the feeding parent on this machine's P
cores. The model's stages are: the feeder (loader + one copy into ring 0), then each worker (its modules'
steps + one copy out of its input ring + one copy into its output ring), on P shared cores (processor
sharing), fifo rings of 2 slots, links free (the copies are the transfer and are charged to the cores).
Modules are split over workers as the engine splits them (`stages.unit_costs` + `split_modules`). The engine's
start (spawning workers, about a second) is not modelled: the measured table shows samples/s with and
without it ("wall" and "steady": samples over the slowest worker's busy + idle seconds).
With `--trainer async-dgl` the rings between workers replay (Algorithm 2, `--buffer-size` slots, no reuse
cap) and the prediction is the fresh samples/s into worker 0, simulated with the engine's rule that a
replaying worker stops once its producer has stopped and nothing fresh is left; the feeder is
left out there, since the model uses one policy for all links (its work is ~0.1 ms per batch).

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.simulate_throughput --measure --trainer async-dgl --skip-figure

(c) The figure: a documented synthetic deep model, because no bundled model has 16 modules: 16 identical
DGL modules, each a 3x3 conv block of 256 channels on 16x16 maps (conv + BN + LeakyReLU, the middle of a
VGG on CIFAR-sized images) with the "mlp" auxiliary head, batch 128, float32. Per module on the device:
compute = FLOPs of a DGL step (conv forward + weight gradient, no input gradient, 2 * 2*N*H*W*C*C*9) /
`--device-tflops` (an assumption: sustained float32 rate of the device); the head's FLOPs are not counted.
Activation bytes per link: N*C*H*W*4 (33.5 MB) + labels. Compressed buffers: `VQCodec` (K=256, uint8 code
per spatial position), its ratio measured from a real encode, and its encode/decode cost taken as the
ratio (codec seconds / module step seconds) measured on this CPU at batch `--calib-batch`, applied to the
device's module time (an assumption: the codec speeds up on the device as the module does). The 16
modules are grouped into J contiguous stages with `group_stages`; J devices, fifo, 2 slots. Lines are the
closed form, markers the simulation (steady state of 200 batches).
"""

import argparse
import math
import os
import shlex
import statistics
import sys
import time

import numpy as np

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.runtime.engine import run_module_parallel, split_modules
from tinydgl.runtime.stages import unit_costs
from tinydgl.simulate import (
    LINKS,
    Compression,
    group_stages,
    in_process_throughput,
    pipeline_throughput,
    simulate_pipeline,
)
from tinydgl.trainers import build_trainer

FIGURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", "throughput_simulation.png")


def load_average():
    try:
        return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "load average unknown"


def make_trainer(args, shape, num_classes, name=None):
    name = name or args.trainer
    model = build_model("smallconv", shape[0], shape[1], num_classes, seed=args.seed)
    options = {"buffer_size": args.buffer_size} if name == "async-dgl" else {}
    return build_trainer(name, model, lambda p: build_optimizer("adam", p, lr=args.lr), seed=args.seed, **options)


def median_seconds(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- (a) costs ------------------------------------------------------------------------------------------------
def measure_costs(args, ds):
    """Median seconds of each module's step, of one copy of each module's output, and of the loader per batch."""
    loader = DataLoader(ds.x_train, ds.y_train, args.batch_size, seed=args.seed, mean=ds.mean, std=ds.std, prefetch=0)
    batches = []
    it = iter(loader)
    for _ in range(args.repeat + 2):
        batches.append(next(it))
    loader_seconds = median_seconds(lambda it=iter(loader): next(it), args.repeat)
    trainer = make_trainer(args, ds.input_shape, ds.num_classes)
    steps = [[] for _ in trainer.modules]
    outputs = []
    for b, (x, y) in enumerate(batches):
        for j, module in enumerate(trainer.modules):
            t0 = time.perf_counter()
            _, x = module.step(x, y)
            if b >= 2:
                steps[j].append(time.perf_counter() - t0)
            if b == 0:
                outputs.append(np.asarray(x))
    step_seconds = [statistics.median(s) for s in steps]
    x0 = np.asarray(batches[0][0])
    copy_in = [median_seconds(lambda a=a: np.array(a, copy=True), args.repeat) for a in [x0, *outputs]]
    return trainer, step_seconds, [a.nbytes for a in outputs], copy_in, loader_seconds


def engine_stages(step_seconds, copy_seconds, loader_seconds, groups, feeder=True):
    """The local engine as a pipeline: [feeder] + one stage per worker (module steps + copy in + copy out)."""
    stages = [loader_seconds + copy_seconds[0]] if feeder else []  # the parent: prepare a batch, put it in ring 0
    for w, group in enumerate(groups):
        last = w == len(groups) - 1
        stages.append(
            sum(step_seconds[j] for j in group)
            + copy_seconds[group[0]]
            + (0.0 if last else copy_seconds[group[-1] + 1])
        )
    return stages


def local_prediction(args, ds):
    print(
        f"(a) per-module costs: DGL modules of smallconv (as {args.trainer} builds them), {ds.name}, "
        f"batch {args.batch_size}, adam lr {args.lr:g}, "
        f"median of {args.repeat} steps, in-process, {load_average()}"
    )
    trainer, step_seconds, out_bytes, copy_seconds, loader_seconds = measure_costs(args, ds)
    print(f"\n{'module':<8} {'step ms':>8} {'output':>18} {'copy out ms':>12}")
    for j, s in enumerate(step_seconds):
        copy = f"{copy_seconds[j + 1] * 1e3:12.2f}" if j < len(step_seconds) - 1 else f"{'-':>12}"
        out = f"{out_bytes[j] / 2**20:8.2f} MiB" if j < len(step_seconds) - 1 else f"{'logits':>18}"
        print(f"{j:<8} {s * 1e3:8.1f} {out:>18} {copy}")
    print(
        f"loader {loader_seconds * 1e3:.1f} ms/batch, input copy {copy_seconds[0] * 1e3:.2f} ms/batch; sum of steps "
        f"{sum(step_seconds) * 1e3:.1f} ms -> in-process {in_process_throughput(step_seconds, args.batch_size):.0f} samples/s "
        f"(modules only) / {args.batch_size / (sum(step_seconds) + loader_seconds):.0f} (with the loader)"
    )

    batches = math.ceil(len(ds.y_train) / args.batch_size)
    cores = args.cores or os.cpu_count()
    forward_costs = unit_costs(trainer, args.batch_size)
    replay = args.trainer == "async-dgl"
    rows = []
    for J in args.workers:
        groups = split_modules(len(step_seconds), J, forward_costs if J > 1 else None)
        if replay:
            # The model has one policy for all links, so the feeder (a fifo ring, 0.1 ms of work per batch) is
            # left out: worker 0 reads from a source that is always ready. Replay rings of the trainer's buffer
            # size, no reuse cap; a replay worker stops once its producer has stopped and nothing fresh is left,
            # as in the engine.
            stages = engine_stages(step_seconds, copy_seconds, loader_seconds, groups, feeder=False)
            sim = simulate_pipeline(
                stages, batches, slots=args.buffer_size, policy="replay", devices=cores, batch_size=args.batch_size
            )
            closed = pipeline_throughput(stages, policy="replay", devices=cores, batch_size=args.batch_size)
            own = pipeline_throughput(stages, policy="replay", batch_size=args.batch_size)
            predicted = sim["input_samples_per_s"]
        else:
            stages = engine_stages(step_seconds, copy_seconds, loader_seconds, groups)
            sim = simulate_pipeline(stages, batches, slots=2, devices=cores, batch_size=args.batch_size)
            closed = pipeline_throughput(stages, devices=cores, batch_size=args.batch_size)
            own = pipeline_throughput(stages, batch_size=args.batch_size)
            predicted = sim["output_samples_per_s"]
        rows.append((J, groups, stages, sim, closed, own, predicted))
    if replay:
        print(
            f"\n(b) predicted: async-dgl, the engine's J workers (replay rings of {args.buffer_size} slots, no reuse cap, "
            f"at most {batches} steps each) on P = {cores} shared cores, {batches} batches of {args.batch_size}"
        )
        head = "stage ms (workers)"
    else:
        print(
            f"\n(b) predicted: the engine with J workers + the feeding parent on P = {cores} shared cores, "
            f"{batches} batches of {args.batch_size}, fifo rings of 2 slots"
        )
        head = "stage ms (feeder, workers)"
    print(f"\n{'J':>2} {'modules':<20} {head:<34} {'simulated':>10} {'formula':>9} {'own cores':>10}   samples/s")
    for J, groups, stages, sim, closed, own, predicted in rows:
        ms = ", ".join(f"{s * 1e3:.0f}" for s in stages)
        print(f"{J:>2} {str(groups):<20} {ms:<34} {predicted:10.0f} {closed:9.0f} {own:10.0f}")
        if replay and J > 1:
            print(
                "   simulated steps (fresh + replayed) per worker: "
                + ", ".join(f"{st['fresh_steps']} + {st['replays']}" for st in sim["stages"])
            )
    if replay:
        print(
            "simulated: fresh samples/s into worker 0 over its whole run; formula: min(1, P/J) / c_0 (exact without "
            "a reuse cap, as here); own cores: one core per worker"
        )
    else:
        print(
            "simulated: whole run incl. pipeline fill; formula: min(1/max stage, P/sum) (an upper bound on P < J+1 "
            "cores); own cores: one core per stage"
        )
    return rows


def measure_local(args, ds, rows):
    train = DataLoader(ds.x_train, ds.y_train, args.batch_size, seed=args.seed, mean=ds.mean, std=ds.std)
    trainer = make_trainer(args, ds.input_shape, ds.num_classes, name="dgl")  # every module once per batch
    print(f"\n(b) measured, {load_average()}")
    t0 = time.perf_counter()
    samples = 0
    train.set_epoch(0)
    for x, y in train:
        trainer.train_step(x, y)
        samples += len(y)
    in_process = samples / (time.perf_counter() - t0)
    print(f"in-process train_step loop: {in_process:.0f} samples/s")
    measured = []
    for J, groups, *_ in rows:
        trainer = make_trainer(args, ds.input_shape, ds.num_classes)
        # the split the prediction was made for (the engine would time the modules again and may pick another)
        run = run_module_parallel(trainer, train, 1, groups=groups, threads_per_worker=1)
        slowest = max(w["busy_seconds"] + w["idle_seconds"] for w in run["workers"])
        measured.append((run["samples_per_second"], run["samples"] / slowest, run))
        print(
            f"  J={J}: {run['samples_per_second']:.0f} samples/s wall, workers "
            + ", ".join(
                f"{w['modules']} {w['steps']} steps ({w['fresh_batches']} fresh, {w['skipped_batches']} "
                f"skipped, {w['empty_polls']} empty polls) busy {w['busy_seconds']:.1f} s "
                f"idle {w['idle_seconds']:.1f} s"
                for w in run["workers"]
            )
        )
    # The per-module costs of (a) come from a few steps and move by +-15% from run to run here; scaling every
    # prediction by measured / predicted at J=1 separates the pipeline model's error from that noise.
    scale = next((steady / row[6] for row, (_, steady, _) in zip(rows, measured) if row[0] == 1), None)
    print(
        f"\n{'J':>2} {'predicted (sim)':>16} {'measured wall':>14} {'measured steady':>16} {'pred/steady':>12}"
        f" {'pred x J=1 scale':>17} {'/ steady':>9}"
    )
    print(f"{'in':>2} {args.batch_size / sum(rows[0][2]):16.0f} {in_process:14.0f} {'':>16}")
    for (J, groups, stages, sim, closed, own, predicted), (wall, steady, _) in zip(rows, measured):
        scaled = f" {predicted * scale:17.0f} {predicted * scale / steady:9.2f}" if scale else ""
        print(f"{J:>2} {predicted:16.0f} {wall:14.0f} {steady:16.0f} {predicted / steady:12.2f}{scaled}")
    print(
        "'in' row: predicted = batch / (the J=1 row's stage seconds); measured = an in-process DGL train_step loop. "
        "measured: fresh samples (worker 0's) / seconds; 'pred x J=1 scale': predictions times measured steady / "
        f"predicted at J=1. Ended at {load_average()}."
    )


# --- (c) J up to 16 -------------------------------------------------------------------------------------------
def calibrate_codec(args):
    """On this CPU: one 256-channel 16x16 DGL module's step and the VQ codec's encode (learning) and decode
    at batch `calib_batch`; returns (encode / step, decode / step, compression ratio)."""
    from tinydgl.models import _conv_block
    from tinydgl.backend import default_rng
    from tinydgl.trainers.buffers import VQCodec
    from tinydgl.trainers.heads import aux_head
    from tinydgl.trainers.local import LocalModule

    C, H, n = 256, 16, args.calib_batch
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((n, C, H, H)).astype(np.float32)
    y = rng.integers(0, 10, n)
    module = LocalModule(
        _conv_block(C, C, default_rng(args.seed), "float32", local_pool=2),
        aux_head("mlp", (C, H, H), 10, seed=args.seed),
        lambda p: build_optimizer("adam", p, lr=1e-3),
    )
    module.step(x, y)
    step = median_seconds(lambda: module.step(x, y), 5)
    codec = VQCodec((C, H, H))
    codes = codec.encode(x)
    encode = median_seconds(lambda: codec.encode(x), 5)
    decode = median_seconds(lambda: codec.decode(codes), 5)
    ratio = x.nbytes / codec.payload_bytes(codes)
    print(
        f"\n(c) calibration on this CPU (batch {n}, one thread, {load_average()}): module step {step * 1e3:.0f} ms, "
        f"VQ encode {encode * 1e3:.1f} ms ({encode / step:.3f} of a step), decode {decode * 1e3:.1f} ms "
        f"({decode / step:.3f}), {x.nbytes / n:,.0f} -> {codec.payload_bytes(codes) / n:,.0f} bytes/sample "
        f"({ratio:.0f}x; codebook {codec.codebook_bytes():,} bytes, not sent in the model)"
    )
    return encode / step, decode / step, ratio


def deep_model_figure(args):
    encode_share, decode_share, ratio = calibrate_codec(args)
    N, C, H, modules = 128, 256, 16, 16
    flops = 2 * (2 * N * H * H * C * C * 9)  # conv forward + weight gradient; DGL skips the input gradient
    module_seconds = flops / (args.device_tflops * 1e12)
    bytes_out = N * C * H * H * 4 + N * 8  # float32 activations + int64 labels
    codec = Compression(
        ratio=bytes_out / (N * H * H + N * 8),
        encode_seconds=encode_share * module_seconds,
        decode_seconds=decode_share * module_seconds,
    )
    print(
        f"\n(c) synthetic deep model: {modules} modules of conv 256->256 at 16x16, batch {N}: {flops / 1e9:.1f} GFLOP "
        f"per module step at {args.device_tflops:g} TFLOP/s = {module_seconds * 1e3:.2f} ms; {bytes_out / 1e6:.1f} MB "
        f"per link raw, {bytes_out / codec.ratio / 1e3:.1f} kB with VQ ({codec.ratio:.0f}x incl. labels); codec "
        f"{codec.encode_seconds * 1e3:.3f} ms encode + {codec.decode_seconds * 1e3:.3f} ms decode per batch"
    )
    Js = list(range(1, modules + 1))
    baseline = in_process_throughput([module_seconds] * modules, N)
    curves = {}
    for link, (bandwidth, latency) in LINKS.items():
        for label, comp in (("raw", None), ("VQ", codec)):
            formula, simulated = [], []
            for J in Js:
                stage_seconds, sent, _ = group_stages([module_seconds] * modules, [bytes_out] * modules, J)
                kw = dict(bytes_out=sent, bandwidth=bandwidth, latency=latency, compression=comp, batch_size=N)
                formula.append(pipeline_throughput(stage_seconds, **kw))
                simulated.append(simulate_pipeline(stage_seconds, 200, slots=2, **kw)["steady_samples_per_s"])
            curves[(link, label)] = (formula, simulated)
    worst = max(abs(sim / form - 1) for forms, sims in curves.values() for form, sim in zip(forms, sims))
    print(
        f"\nin-process (one device, all 16 modules): {baseline:.0f} samples/s. Speed-up over it, closed form "
        f"(the simulation's steady rate differs from it by at most {worst:.1e}, relative):"
    )
    print(f"{'J':>3} " + " ".join(f"{(link.split(' (')[0] + ' ' + label)[:19]:>19}" for link, label in curves))
    for i, J in enumerate(Js):
        print(f"{J:>3} " + " ".join(f"{curves[key][0][i] / baseline:19.2f}" for key in curves))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = dict(zip(LINKS, ["tab:red", "tab:blue", "tab:green"]))
    widths = dict(zip(LINKS, [7, 4, 1.5]))  # the VQ curves of all three links coincide: draw them nested
    for (link, label), (formula, simulated) in curves.items():
        style, width = ("-", widths[link]) if label == "VQ" else ("--", 1.5)
        for ax, scale in ((ax1, 1.0), (ax2, 1 / baseline)):
            ax.plot(
                Js, [f * scale for f in formula], style, color=colours[link], linewidth=width, label=f"{link}, {label}"
            )
            ax.plot(Js, [s * scale for s in simulated], "o", color=colours[link], markersize=3)
    ax2.plot(Js, Js, ":", color="grey", label="ideal (J)")
    ax1.set_yscale("log")
    ax1.set_ylabel("samples / s (predicted)")
    ax2.set_ylabel("speed-up over one device running all modules")
    for ax in (ax1, ax2):
        ax.set_xlabel("J devices (16 equal modules in J contiguous stages)")
        ax.set_xticks(Js)
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"DGL pipeline, 16 modules (conv 256ch 16x16, batch {N}) at {args.device_tflops:g} TFLOP/s per device; "
        f"fifo, 2 slots; lines: closed form, dots: simulation.\nThe speed-up climbs in steps because it "
        f"only rises when the largest stage gets fewer modules; the three VQ curves coincide (drawn nested).",
        fontsize=9,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(FIGURE), exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    print(f"\nwrote {os.path.relpath(FIGURE)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", action="store_true", help="also run run_module_parallel for each J")
    parser.add_argument(
        "--trainer",
        default="dgl",
        choices=["dgl", "async-dgl"],
        help="dgl: fifo rings; async-dgl: replay rings (Algorithm 2)",
    )
    parser.add_argument("--buffer-size", type=int, default=4, help="async-dgl: slots per replay ring")
    parser.add_argument("--skip-local", action="store_true", help="only the J <= 16 figure")
    parser.add_argument("--skip-figure", action="store_true")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--repeat", type=int, default=10, help="batches timed per module")
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--cores", type=int, default=None, help="P for the prediction (default: os.cpu_count())")
    parser.add_argument(
        "--device-tflops", type=float, default=10.0, help="(c): assumed sustained FLOP rate of a device"
    )
    parser.add_argument("--calib-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    print(
        "command: "
        + " ".join(
            [
                *([f"OPENBLAS_NUM_THREADS={threads}"] if threads else []),
                "python -m benchmarks.simulate_throughput",
                *map(shlex.quote, sys.argv[1:]),
            ]
        )
    )
    if not args.skip_local:
        ds = load_dataset(args.dataset, limit_train=args.limit_train, limit_test=100)
        rows = local_prediction(args, ds)
        if args.measure:
            measure_local(args, ds, rows)
    if not args.skip_figure:
        deep_model_figure(args)


if __name__ == "__main__":
    main()
