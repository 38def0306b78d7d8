"""`tinydgl compare`: several methods trained on the same model, data and seed, one after another, then one
table (accuracy, time, peak memory, multiply-accumulates) and, with --alignment, how close each method's
gradients are to backprop's.
"""

from ..backend import get_backend
from .checks import check_compare_options, check_output_paths, companion_plots, select_backend
from .train import PeakMemory, greedy_plan, load_data, make_trainer, run_summary


def cmd_compare(args):
    from ..train.memory import check_batch_memory

    check_compare_options(args)
    select_backend(args)
    check_output_paths(args)
    dataset, train_loader, test_loader = load_data(args)
    print(
        f"tinydgl compare on {args.model}, {dataset.name}: {len(dataset.y_train):,} train / {len(dataset.y_test):,} test "
        f"images, {args.epochs} epoch(s), batch {args.batch_size}, {args.optimizer}, seed {args.seed}, "
        f"BN recalibration on {args.bn_recalibrate} batches (models with batch norm)"
    )
    print(f"data read from {dataset.source}")
    first_batch = next(iter(train_loader.fresh_pass(0, 1)))  # where each method's MACs are counted
    for name in args.trainers:  # a batch too large for memory: said before any method trains
        check_batch_memory(make_trainer(args, name, dataset, strict=False)[0], train_loader, args.batch_size)
    runs = [train_one(args, name, dataset, train_loader, test_loader, first_batch) for name in args.trainers]
    print_table(runs)
    if args.alignment:
        print_alignment(runs)
    write_compare_outputs(args, runs)
    return 0


def train_one(args, name, dataset, train_loader, test_loader, first_batch):
    """Train --trainers' method `name`; its summary, with peak memory, MACs and (--alignment) alignment."""
    from ..train import fit
    from ..train.compute import step_macs

    trainer, lr = make_trainer(args, name, dataset, strict=False)
    print(f"--- {name} ---")
    plan = greedy_plan(trainer, args.epochs)
    if plan:
        print(plan)
    macs = step_macs(trainer, *first_batch)  # before training, on a copy: counting changes nothing
    probe = alignment_probe(args, trainer)
    with PeakMemory(get_backend().name) as memory:
        history = fit(
            trainer,
            train_loader,
            test_loader,
            args.epochs,
            progress=not args.no_progress,
            bn_recalibrate=args.bn_recalibrate,
            alignment=probe,
            lr_schedule=args.lr_schedule,
        )
    summary = run_summary(args, name, lr, history, trainer.model.num_parameters(), trainer)
    summary["peak_memory_bytes"] = memory.peak_bytes
    summary["macs_per_sample"] = macs
    if args.alignment:
        summary["alignment"] = probe.summary() if probe else None
    return summary


def print_table(runs):
    """One row per method: final and best accuracy, time, throughput, peak memory, MACs per sample."""
    header = (
        f"{'trainer':<12} {'final acc':>9} {'best (epoch)':>13} {'s/epoch':>9} {'samples/s':>10} "
        f"{'peak MiB':>9} {'MMAC/sample':>12} {'of it signal':>13}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in runs:
        best, macs = f"{r['best_test_accuracy']:.4f} ({r['best_epoch']})", r["macs_per_sample"]
        print(
            f"{r['trainer']:<12} {r['test_accuracy']:>9.4f} {best:>13} {r['train_seconds'] / r['epochs']:>9.2f} "
            f"{r['samples_per_second']:>10.0f} {r['peak_memory_bytes'] / 2**20:>9.1f} {macs['total'] / 1e6:>12.2f} "
            f"{macs['signal'] / 1e6:>13.2f}"
        )
    print(
        "MMAC/sample: multiply-accumulates of one training step per sample, counted from layer shapes (forward, "
        "learning signal, weight gradients; tinydgl/train/compute.py); 'of it signal': what the method spends to "
        "get its gradients beyond the forward pass and the weight gradients."
    )


def write_compare_outputs(args, runs):
    """--metrics-json (every run) and --plot (the learning curves; with --alignment, the alignment beside it)."""
    from ..train import plot_history
    from ..train.outputs import Outputs

    outputs = Outputs()  # a disk that filled up while training: the results go elsewhere, said
    if args.metrics_json:
        outputs.write_json(
            "metrics",
            args.metrics_json,
            {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "runs": runs},
        )
    if args.plot:
        outputs.write_file(
            "learning curves",
            args.plot,
            lambda path: plot_history(
                {r["trainer"]: r["history"] for r in runs}, path, title=f"{args.model} on {args.dataset}"
            ),
        )
        measured = {r["trainer"]: r["alignment"] for r in runs if r.get("alignment")}
        if measured:
            from ..train.alignment import plot_alignment

            outputs.write_file(
                "alignment per block",
                companion_plots(args)["alignment per block"],
                lambda path: plot_alignment(
                    measured, path, title=f"gradient alignment with backprop, {args.model} on {args.dataset}"
                ),
            )
    outputs.finish()


def alignment_probe(args, trainer):
    """compare --alignment: a probe for this trainer, or None (not asked for, or undefined for it: said)."""
    if not args.alignment:
        return None
    from ..train.alignment import AlignmentProbe

    probe = AlignmentProbe(args.alignment_every)
    try:
        probe.check(trainer)
    except ValueError as err:
        print(f"note: {err}")
        return None
    return probe


def print_alignment(runs):
    """Per method and block, the mean alignment over the last three records (blank: no gradient there)."""
    blocks = max((len(r["alignment"]["blocks"]) for r in runs if r.get("alignment")), default=0)
    if not blocks:
        return
    header = f"{'alignment':<10} " + " ".join(f"{'block ' + str(b):>8}" for b in range(blocks))
    print(
        "\n" + header + "  (cosine with the backprop gradient, mean of the last 3 records; the times above "
        "include the probe)\n" + "-" * len(header)
    )
    for r in runs:
        if not r.get("alignment"):
            print(f"{r['trainer']:<10} {'(not measured)':>17}")
            continue
        cells = []
        for values in r["alignment"]["blocks"]:
            last = [v for v in values[-3:] if v is not None]
            cells.append(f"{sum(last) / len(last):>8.3f}" if last else f"{'':>8}")
        print(f"{r['trainer']:<10} " + " ".join(cells))
