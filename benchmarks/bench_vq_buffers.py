"""Compressed replay buffers for async DGL: bytes per stored sample and accuracy, raw vs VQ.

    python benchmarks/bench_vq_buffers.py                                   # mnist-small, cnn, 3 epochs, seeds 0 1 2
    python benchmarks/bench_vq_buffers.py --model mlp --dataset fashion-mnist --epochs 3 --seeds 0

For each seed, two runs of `async-dgl` that differ only in `buffer_codec` (None = raw float32 activations,
"vq" = `tinydgl.trainers.buffers.VQCodec`): same model initialisation, data order, schedule draws
(random, uniform over modules unless --slow-module), buffer size and optimizer. Printed:
- per buffer: raw and VQ bytes per stored sample (activations only; labels, 1 byte each as uint8 or 8 as
  int64, are the same in both), the factor, the codebook bytes (sent/stored once, not per sample) and the
  buffer's total bytes at capacity (M batches);
- per seed: final test accuracy raw and VQ (evaluation is the plain forward pass, the trainer's default),
  and the VQ-trained model evaluated with its activations quantised at the module boundaries
  (`quantised_eval=True`), plus the scheduling statistics of the VQ run;
- the mean accuracy difference (VQ - raw) over seeds, in percentage points.
"""

import argparse
import json
import statistics
import time

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.train import fit
from tinydgl.trainers.async_dgl import AsyncDGLTrainer


def run(args, ds, codec, seed):
    model = build_model(args.model, ds.x_train.shape[1], ds.x_train.shape[2], ds.num_classes, seed=seed)
    trainer = AsyncDGLTrainer(
        model,
        lambda p: Adam(p, lr=args.lr),
        aux=args.aux,
        buffer_size=args.buffer_size,
        slow_module=args.slow_module,
        slowdown=args.slowdown,
        buffer_codec=codec,
        codebook_size=args.codebook_size,
        seed=seed,
    )
    train = DataLoader(ds.x_train, ds.y_train, args.batch_size, seed=seed, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    t0 = time.perf_counter()
    history = fit(trainer, train, test, epochs=args.epochs, progress=False, log=lambda *_: None)
    result = {
        "codec": codec or "raw",
        "seed": seed,
        "accuracy": history[-1]["test_accuracy"],
        "per_epoch": [round(h["test_accuracy"], 4) for h in history],
        "seconds": time.perf_counter() - t0,
        "stats": trainer.stats(),
    }
    if codec:  # the same weights, evaluated with activations quantised between modules as in training
        trainer.quantised_eval = True
        result["accuracy_quantised_eval"] = trainer.evaluate(test)["accuracy"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist-small")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--aux", default="mlp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--buffer-size", type=int, default=4)
    parser.add_argument("--slow-module", type=int, default=None)
    parser.add_argument("--slowdown", type=float, default=1.0)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=None, help="also write every run's results here")
    args = parser.parse_args()

    ds = load_dataset(args.dataset, limit_train=args.limit_train, progress=False)
    print(
        f"{args.dataset} ({len(ds.y_train)} train / {len(ds.y_test)} test), model {args.model}, aux {args.aux}, "
        f"batch {args.batch_size}, Adam {args.lr:g}, {args.epochs} epochs, M={args.buffer_size}, "
        f"slow module {args.slow_module} x{args.slowdown:g}, K={args.codebook_size}"
    )
    runs = []
    for seed in args.seeds:
        for codec in (None, "vq"):
            r = run(args, ds, codec, seed)
            runs.append(r)
            extra = f"  (quantised eval {r['accuracy_quantised_eval']:.4f})" if codec else ""
            print(
                f"seed {seed} {r['codec']:>3}: test accuracy {r['accuracy']:.4f} per epoch {r['per_epoch']}{extra}"
                f"  {r['seconds']:.0f}s",
                flush=True,
            )

    vq_stats = next(r["stats"] for r in runs if r["codec"] == "vq")
    print(
        "\nbuffer after module | raw B/sample | VQ B/sample | factor | codebook B | raw B at capacity | VQ B at capacity"
    )
    for b in vq_stats["buffers"]:
        cap = args.buffer_size * args.batch_size
        print(
            f"{b['after_module']:>19} | {b['raw_bytes_per_sample']:>12} | {b['stored_bytes_per_sample']:>11.0f} | "
            f"{b['compression']:>5.0f}x | {b['codebook_bytes']:>10} | {b['raw_bytes_per_sample'] * cap:>17} | "
            f"{b['stored_bytes_per_sample'] * cap + b['codebook_bytes']:>16.0f}"
        )
    print("\nscheduling (VQ run, seed %d):" % args.seeds[0])
    for m in vq_stats["modules"]:
        print("  " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}))

    raw = [r["accuracy"] for r in runs if r["codec"] == "raw"]
    vq = [r["accuracy"] for r in runs if r["codec"] == "vq"]
    diffs = [100 * (v - a) for a, v in zip(raw, vq)]
    print(
        f"\nmean test accuracy: raw {statistics.mean(raw):.4f}, VQ {statistics.mean(vq):.4f}; "
        f"VQ - raw = {statistics.mean(diffs):+.2f} pp (per seed: {', '.join(f'{d:+.1f}' for d in diffs)})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
