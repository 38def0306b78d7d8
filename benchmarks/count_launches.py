"""Count, per trainer, the calls that would launch a GPU kernel and the host syncs in one training step on
the CuPy stand-in (tests/cupy_standin/, CPU only): SmallConv, batch 128, 1x28x28, float32, Adam, each
trainer at its defaults (ff trains its own fully connected network: mlp).

    PYTHONPATH=$PWD python benchmarks/count_launches.py                 # every trainer, a table
    PYTHONPATH=$PWD python benchmarks/count_launches.py bp lls --where  # and where the launches come from
    PYTHONPATH=$PWD python benchmarks/count_launches.py --syncs          # host syncs per step, and where

Host syncs (float(), .item(), .get(), bool() of a device value: the host waits for the GPU) are counted in
the same step. The training loop adds its own reads of the losses: one every `LOSS_READ_EVERY` steps
(tinydgl/train/batches.py), printed beside them.

What counts as a launch is written in tests/cupy_standin/fake.py (`_launches`): elementwise ops, reductions,
matmuls, copies on the device, creations with a fill, ElementwiseKernel calls; views, `empty` and
host<->device copies do not. CuPy spends some 10 us of host time per launch, so a step of N launches costs
at least N * 10 us on any GPU. The counts depend on the code, not on the machine or its load.
The second step is counted (the first builds optimizer state and buffers).
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cupy_standin import STATS, standin_cupy  # noqa: E402

import tinydgl  # noqa: E402
from tinydgl.backend import asarray  # noqa: E402
from tinydgl.models import build_model  # noqa: E402
from tinydgl.optim import Adam  # noqa: E402
from tinydgl.trainers import TRAINERS, build_trainer  # noqa: E402

# the part of the library each source file is, for the breakdown
PARTS = {
    "optim.py": "optimizer",
    "batchnorm": "batch norm",
    "pool": "pooling",
    "conv": "conv",
    "linear": "linear",
    "activation": "activations",
    "functional.py": "functional (F.*)",
    "heads.py": "local heads",
    "kernels": "fused local loss",
    "backend.py": "backend helpers",
}


def source(site):
    """'tinydgl/nn/batchnorm.py:forward' from the call site 'path:line (function) <- ...'."""
    frames = site.split(" <- ")
    first = frames[-1] if "kernels/elementwise.py" in frames[0] else frames[0]  # the fused kernel's caller
    path, _, rest = first.rpartition(":")
    path = Path(path)
    try:
        path = path.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return f"{path}:{rest.split('(')[-1].rstrip(')')}"


MODEL_OPTIONS = {"pepita": {"batchnorm": False}}  # the official PEPITA network: no batch norm


def count(name, batch=128, size=28, seed=0, sync_sites=None):
    """(launches, syncs, launches by source 'file:function') of the second train_step of `name`; the Counter
    sync_sites, if given, gets the syncs by (what, call site)."""
    model_name = "mlp" if name in ("ff", "pepita") else "smallconv"
    with standin_cupy():
        tinydgl.set_backend("cupy")
        rng = np.random.default_rng(seed)
        model = build_model(model_name, 1, size, 10, seed=seed, dtype="float32", **MODEL_OPTIONS.get(name, {}))
        trainer = build_trainer(name, model, lambda p: Adam(p, lr=1e-3))
        x = asarray(rng.standard_normal((batch, 1, size, size)).astype(np.float32))
        y = asarray(np.arange(batch) % 10)
        trainer.train_step(x, y)
        STATS.reset()
        trainer.train_step(x, y)
        by_source = Counter()
        for (_, site), n in STATS.launches.items():
            by_source[source(site)] += n
        if sync_sites is not None:
            sync_sites.update(STATS.syncs)
        return STATS.total_launches(), STATS.total_syncs(), by_source


def by_file(by_source):
    files = Counter()
    for where, n in by_source.items():
        files[where.rpartition(":")[0]] += n
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trainers", nargs="*", default=list(TRAINERS))
    parser.add_argument("--where", action="store_true", help="list the launches by source file and function")
    parser.add_argument("--syncs", action="store_true", help="only the host syncs per step, and where they are")
    args = parser.parse_args(argv)
    if args.syncs:
        return print_syncs(args.trainers)
    print("| trainer | launching calls / step | host syncs / step | largest sources (launches) |")
    print("|---|---:|---:|---|")
    details = {}
    for name in args.trainers:
        launches, syncs, by_source = count(name)
        details[name] = by_source
        top = ", ".join(f"{Path(f).name} {n}" for f, n in by_file(by_source).most_common(4))
        print(f"| {name} | {launches} | {syncs} | {top} |", flush=True)
    if args.where:
        for name, by_source in details.items():
            print(f"\n{name}:")
            for where, n in by_source.most_common():
                print(f"  {n:5d}  {where}")


def print_syncs(trainers):
    """The table of host syncs per step: in the trainer's step, and the loop's reads of the losses."""
    try:
        from tinydgl.train.batches import LOSS_READ_EVERY
    except ImportError:  # tinydgl before issue 24: the loop read each step's loss, a Python float, as it came
        LOSS_READ_EVERY = 1

    print("| trainer | host syncs in train_step | the loop's loss reads per step | where (syncs in the step) |")
    print("|---|---:|---:|---|")
    for name in trainers:
        sites = Counter()
        _, syncs, _ = count(name, sync_sites=sites)
        merged = Counter()
        for (what, site), n in sites.items():
            merged[f"{what} at {source(site)}"] += n
        where = "; ".join(f"{n} x {at}" for at, n in merged.most_common()) or "-"
        print(f"| {name} | {syncs} | 1/{LOSS_READ_EVERY} | {where} |", flush=True)


if __name__ == "__main__":
    main()
