"""Time the LLS family's local loss on a GPU: the composed layers against the fused numba-cuda kernel.

    python benchmarks/bench_local_loss_kernel.py                  # on a machine with a GPU, CuPy and numba-cuda
    python benchmarks/bench_local_loss_kernel.py --repeats 200
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_local_loss_kernel.py --simulator   # a tiny smoke run, no GPU

For each hidden block of SmallConv and VGG8 (its output shape and LLS pooling size, read off the model; batch 128, float32, random
data already on the device) and each head (lls, lls-m, lls-mxm, local-losses), it runs the local loss and
its gradient `--repeats` times each way, alternating the two ways in rounds, and prints the median
milliseconds per call and the largest difference between the two gradients (which must be float32
rounding). The time is host wall-clock around a synchronised stream, so it includes the launch overheads
that fusing removes. It has **not yet run on a GPU**: no machine with one was lent when it was written.
`--simulator` runs one small block in numba's simulator to check that the script works; its times mean
nothing.
"""

import argparse
import copy
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinydgl.kernels import composed_local_loss, fused_local_loss  # noqa: E402
from tinydgl.models import build_model  # noqa: E402
from tinydgl.trainers.lls import LocalLossesTrainer, lls_head  # noqa: E402
from tinydgl.trainers.local import block_output_shapes  # noqa: E402

MODELS = ("smallconv", "vgg8")


def hidden_blocks(name):
    """(model, block index, output shape per example, LLS pooling size) of each hidden block, read off the model."""
    model = build_model(name, seed=0)
    shapes = block_output_shapes(model)
    return [(name, j, shapes[j], block.local_pool) for j, block in enumerate(model.layers[:-1])]


SIMULATOR_BLOCKS = [("tiny", 1, (3, 7, 5), 2)]
HEADS = ("lls", "lls-m", "lls-mxm", "local-losses")


def build_head(kind, shape, pool, classes, dtype):
    if kind == "local-losses":
        block = types.SimpleNamespace(local_pool=pool, local_width=None)
        return LocalLossesTrainer.make_head(types.SimpleNamespace(temperature=0.5), shape, block, classes, 0, dtype)
    return lls_head(shape, pool, classes, modulation={"lls": None, "lls-m": "m", "lls-mxm": "mxm"}[kind], dtype=dtype)


def to_device(head, xp):
    """The head's parameters and buffers moved to `xp` (the heads are built with NumPy)."""
    for layer in head.layers:
        for p in layer.parameters():
            p.data = xp.asarray(p.data)
        for key, value in getattr(layer, "buffers", {}).items():
            layer.buffers[key] = xp.asarray(value)
    return head


def time_calls(run, sync, repeats):
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    sync()
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=100, help="calls per round and way (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is printed")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--simulator", action="store_true", help="one tiny block in numba's simulator (no GPU)")
    args = parser.parse_args(argv)

    if args.simulator:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            sys.exit("--simulator needs NUMBA_ENABLE_CUDASIM=1 in the environment (set before numba is imported).")
        xp, sync, blocks, batch, dtype = np, (lambda: None), SIMULATOR_BLOCKS, 3, "float64"
        args.repeats, args.rounds = 1, 1
    else:
        try:
            import cupy
            from numba import cuda

            if not cuda.is_available():
                raise ImportError("numba-cuda sees no GPU")
        except ImportError as err:
            print(
                f"no GPU to time on ({err}); install CuPy and numba-cuda (pip install -e '.[gpu]') on a machine "
                "with an NVIDIA GPU, or pass --simulator for a smoke run."
            )
            return 2
        xp, sync, blocks, batch, dtype = (
            cupy,
            (lambda: cupy.cuda.get_current_stream().synchronize()),
            [b for name in MODELS for b in hidden_blocks(name)],
            args.batch,
            "float32",
        )

    rng = np.random.default_rng(0)
    print(
        f"{'model':10} {'block':>5} {'shape':>14} {'head':13} {'composed ms':>12} {'fused ms':>9} {'speed-up':>9} "
        f"{'max |diff|':>10}"
    )
    for model, index, shape, pool in blocks:
        out = xp.asarray(rng.standard_normal((batch, *shape)).astype(dtype))
        y = xp.asarray(rng.integers(0, args.classes, batch))
        for kind in HEADS:
            head = to_device(build_head(kind, shape, pool, args.classes, dtype), xp)
            twin = copy.deepcopy(head)
            _, dout_composed = composed_local_loss(head, out, y)
            _, dout_fused = fused_local_loss(twin, out, y, **({"threads": 8} if args.simulator else {}))  # compiles
            difference = float(xp.max(xp.abs(dout_composed - dout_fused)))
            times = {"composed": [], "fused": []}
            for _ in range(args.rounds):
                times["composed"].append(time_calls(lambda: composed_local_loss(head, out, y), sync, args.repeats))
                times["fused"].append(
                    time_calls(lambda: fused_local_loss(twin, out, y), sync, args.repeats)
                    if not args.simulator
                    else 0.0
                )
            composed, fused = statistics.median(times["composed"]), statistics.median(times["fused"])
            speedup = f"{composed / fused:8.1f}x" if fused else "        -"
            print(
                f"{model:10} {index:5d} {str(shape):>14} {kind:13} {composed:12.3f} {fused:9.3f} {speedup} "
                f"{difference:10.2e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
