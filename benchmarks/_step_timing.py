"""gpu_check.py's step 8: one training step timed per trainer, model and path, tinydgl on CuPy against PyTorch.

The cases: the trainers bp, lls and dgl on SmallConv (1x28x28, Fashion-MNIST's images) and VGG8 (3x32x32,
CIFAR-10's), each model at its own input size unless `--sizes` gives others. LLS runs twice, **fused** (the
numba-cuda local-loss kernel of tinydgl/kernels/, TINYDGL_FUSED_KERNELS=1) and **composed** (the head's own
CuPy ops, TINYDGL_FUSED_KERNELS=0), each in processes of its own. bp and dgl have only the composed path:
bp has no local loss, and DGL's auxiliary heads (MLPs with biases and batch norm) are not of the form the
kernel takes (`tinydgl.kernels.fusable`). PyTorch on CUDA times backprop only (torch_smallconv_fmnist.py
holds SmallConv and VGG8, layer for layer as tinydgl's); there is no faithful PyTorch LLS or DGL in
benchmarks/, so those rows say "no PyTorch reference here".

Each timed step is the library's own: `build_trainer(name, model, Adam lr 5e-3)` with the trainer's defaults
(the `tinydgl train --trainer NAME` ones: LLS's sin basis and T 0.5, DGL's MLP heads), then
`float(trainer.train_step(x, y))` on random data already on the GPU, then cupy's synchronize; PyTorch's is
forward, cross-entropy, backward and Adam, then loss.item() and torch.cuda.synchronize(). A fused child
counts the fused kernel's launches and fails if there were none (so a fused time is never a composed one),
and a composed child fails if there were any; a fused child that cannot launch the kernel (no numba-cuda,
or the CPU stand-in) reports "skipped" with the reason instead of a time.

Parent side (standard library only): `step_cases`, `child_command`, `step_rows`, `print_step_table`.
Child side: `timed_child` (imports CuPy or PyTorch, never both).
"""

import collections
import importlib.util
import os
import statistics
import sys
from pathlib import Path

import _processes as procs  # standard library only

HERE = Path(__file__).resolve().parent
LR = 5e-3  # bench_step.py's Adam rate, so the bp step is the one timed on the CPU there
NUM_CLASSES = 10
STEP_TRAINERS = ("bp", "lls", "dgl")
STEP_MODELS = {"smallconv": "1x28", "vgg8": "3x32"}  # each model at its data's size: Fashion-MNIST, CIFAR-10
FUSED_TRAINERS = ("lls",)  # the trainers whose local heads tinydgl.kernels.fusable accepts
WHY_COMPOSED_ONLY = {
    "bp": "bp has no local loss to fuse",
    "dgl": "DGL's auxiliary heads (MLPs with biases and batch norm) are not fusable",
}
TORCH_TRAINERS = ("bp",)  # the only trainer with a faithful PyTorch copy in benchmarks/
NO_TORCH_REFERENCE = "no PyTorch reference here"

StepCase = collections.namedtuple("StepCase", "trainer model size path library")


# --- parent side -----------------------------------------------------------------------------------------
def step_sizes(sizes, model):
    """The input sizes a model is timed at: `--sizes` (comma-separated CxS) if given, else its own."""
    return sizes.split(",") if sizes else [STEP_MODELS[model]]


def step_cases(args, with_torch):
    """Every child of one round, in order: per model, input and trainer, tinydgl's paths, then PyTorch's."""
    cases = []
    for model in args.models.split(","):
        for size in step_sizes(args.sizes, model):
            for trainer in args.trainers.split(","):
                paths = ("fused", "composed") if trainer in FUSED_TRAINERS else ("composed",)
                cases += [StepCase(trainer, model, size, path, "tinydgl") for path in paths]
                if with_torch and trainer in TORCH_TRAINERS:
                    cases.append(StepCase(trainer, model, size, "autograd", "torch"))
    return cases


def child_command(script, args, case):
    """`<script> --child tinydgl|torch ...`: one process timing one case."""
    path = ["--path", case.path] if case.library == "tinydgl" else []
    return [
        script,
        "--child",
        case.library,
        "--size",
        case.size,
        "--model",
        case.model,
        "--trainer",
        case.trainer,
        *path,
        "--batch",
        args.batch,
        "--warmup",
        args.warmup,
        "--repeat",
        args.repeat,
    ]


def describe(case, result):
    """One line of progress for a finished child."""
    name = f"{case.library:<7} {case.trainer:<3} {case.model:<9} {case.size} {case.path:<8}"
    if "step_seconds" in result:
        return f"{name}: median {statistics.median(result['step_seconds']) * 1e3:.2f} ms on {result['device']}"
    return f"{name}: {'skipped' if 'skipped' in result else 'FAILED'}: {first_line(result)}"


def first_line(result):
    return (result.get("skipped") or result.get("error") or "").splitlines()[0][:200]


def milliseconds(results):
    """{median, low, high, processes} in ms over the children that timed, or None when none did."""
    timed = [r["step_seconds"] for r in results if "step_seconds" in r]
    if not timed:
        return None
    s = procs.summarize(timed)
    return {
        "median": round(s.median * 1e3, 3),
        "low": round(s.low * 1e3, 3),
        "high": round(s.high * 1e3, 3),
        "processes": s.processes,
    }


def step_rows(cases, results, why_no_torch):
    """The table: one row per tinydgl case (trainer, model, input, path), with PyTorch's time where it has one,
    the ratio tinydgl / PyTorch, and on a fused row the ratio fused / composed. `status`: fail when a child
    failed, skip when the fused kernel could not launch, else pass."""
    rows = []
    for case in (c for c in cases if c.library == "tinydgl"):
        ours = results[case]
        torch_case = case._replace(path="autograd", library="torch")
        theirs = results.get(torch_case, [])
        row = {
            "trainer": case.trainer,
            "model": case.model,
            "input": case.size,
            "path": case.path,
            "tinydgl_ms": milliseconds(ours),
            "torch_ms": milliseconds(theirs),
        }
        errors = [r["error"] for r in ours + theirs if "error" in r]
        skipped = next((r["skipped"] for r in ours if "skipped" in r), None)
        row["status"] = "fail" if errors else "skip" if skipped else "pass"
        row["note"] = (
            first_line({"error": errors[0]})
            if errors
            else skipped or (None if case.path == "fused" else WHY_COMPOSED_ONLY.get(case.trainer))
        )
        if errors:
            row["error"] = "\n\n".join(errors)
        launches = [r["fused_launches_per_step"] for r in ours if "fused_launches_per_step" in r]
        row["fused_launches_per_step"] = launches[0] if launches else None
        row["torch_note"] = (
            NO_TORCH_REFERENCE
            if case.trainer not in TORCH_TRAINERS
            else why_no_torch
            if torch_case not in results
            else None
            if row["torch_ms"]
            else "failed: " + first_line(theirs[-1])
        )
        row["tinydgl_vs_torch"] = ratio(row["tinydgl_ms"], row["torch_ms"])
        composed = results.get(case._replace(path="composed"), []) if case.path == "fused" else []
        row["fused_vs_composed"] = ratio(row["tinydgl_ms"], milliseconds(composed))
        rows.append(row)
    return rows


def ratio(a, b):
    return round(a["median"] / b["median"], 3) if a and b else None


def format_ms(ms):
    return f"{ms['median']:.2f} [{ms['low']:.2f}-{ms['high']:.2f}]" if ms else "-"


def row_detail(row):
    """The row in words, for gpu_check's table of checks."""
    if row["tinydgl_ms"] is None:
        said = row["note"] or "no time"
    else:
        said = f"tinydgl {format_ms(row['tinydgl_ms'])} ms"
        if row["fused_launches_per_step"]:
            said += f" ({row['fused_launches_per_step']:g} fused launches per step)"
        if row["fused_vs_composed"] is not None:
            said += f", fused / composed {row['fused_vs_composed']:.2f}x"
        if row["torch_ms"]:
            said += f", PyTorch {format_ms(row['torch_ms'])} ms, tinydgl / PyTorch {row['tinydgl_vs_torch']:.2f}x"
        else:
            said += f"; PyTorch: {row['torch_note']}"
        if row["status"] == "fail":
            said += f"; {row['note']}"
    return said


def print_step_table(rows, batch):
    """The timed steps as a Markdown table: median ms [lowest-highest per-process median]."""
    print(
        f"\none training step, batch {batch}, float32, data on the GPU: median ms [lowest-highest per-process median]\n"
    )
    print("| trainer | model | input | path | tinydgl ms | PyTorch ms | tinydgl / PyTorch | fused / composed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ours = format_ms(r["tinydgl_ms"]) if r["tinydgl_ms"] else f"{r['status']}: {r['note']}"
        theirs = format_ms(r["torch_ms"]) if r["torch_ms"] else r["torch_note"] or "-"
        cells = [
            r["trainer"],
            r["model"],
            r["input"],
            r["path"],
            ours,
            theirs,
            f"{r['tinydgl_vs_torch']:.2f}x" if r["tinydgl_vs_torch"] else "-",
            f"{r['fused_vs_composed']:.2f}x" if r["fused_vs_composed"] else "-",
        ]
        print("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")


# --- child side --------------------------------------------------------------------------------------------
def timed_child(args):
    """Time `--repeat` synchronized steps of one case, alone in this process; print one JSON line."""
    from bench_step import make_data, parse_size

    channels, size = parse_size(args.size)
    x, y = make_data(args.batch, channels, size, seed=0)
    case = {
        "library": args.child,
        "trainer": args.trainer,
        "model": args.model,
        "input": args.size,
        "path": args.path if args.child == "tinydgl" else "autograd",
    }
    setup = tinydgl_step if args.child == "tinydgl" else torch_step
    step, sync, info = setup(args, channels, size, x, y)
    if step is None:
        return procs.report({**case, **info})

    def synced_step():
        step()
        sync()

    times = procs.timed(synced_step, args.warmup, args.repeat)
    if "launches" in info:
        launches = info.pop("launches")[0] / (args.warmup + args.repeat)
        if (launches > 0) != (args.path == "fused"):
            sys.exit(
                f"{args.trainer} on {args.model}, path {args.path}: the fused kernel ran {launches:g} times per "
                f"step, {'none' if args.path == 'fused' else 'expected none'} (TINYDGL_FUSED_KERNELS="
                f"{os.environ.get('TINYDGL_FUSED_KERNELS')})."
            )
        info["fused_launches_per_step"] = launches
    procs.report({**case, **info, "step_seconds": times})


def tinydgl_step(args, channels, size, x, y):
    """(step, sync, info) for one trainer's step on CuPy; (None, None, {"skipped": why}) when the fused path
    was asked for and the kernel cannot launch here."""
    os.environ["TINYDGL_FUSED_KERNELS"] = "1" if args.path == "fused" else "0"  # read at each local loss
    import cupy

    import tinydgl
    from tinydgl import kernels
    from tinydgl.models import build_model
    from tinydgl.optim import Adam
    from tinydgl.trainers import build_trainer

    tinydgl.set_backend("cupy")
    why = fused_unavailable(cupy, kernels) if args.path == "fused" else None
    if why:
        return None, None, {"skipped": why}
    model = build_model(args.model, channels, size, NUM_CLASSES, seed=0)
    trainer = build_trainer(args.trainer, model, lambda params: Adam(params, lr=LR))
    xd, yd = tinydgl.backend.asarray(x), tinydgl.backend.asarray(y)
    launches = [0]
    fused = kernels.fused_local_loss

    def counted(*a, **kw):  # kernels.local_loss looks this name up at each call
        launches[0] += 1
        return fused(*a, **kw)

    kernels.fused_local_loss = counted
    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    device = device.decode() if isinstance(device, bytes) else str(device)
    info = {"device": device, "version": f"cupy {cupy.__version__}", "launches": launches}
    return lambda: float(trainer.train_step(xd, yd)), cupy.cuda.Device().synchronize, info


def fused_unavailable(cupy, kernels):
    """Why the fused local-loss kernel cannot launch in this process (a sentence), or None when it can."""
    if kernels.numba_cuda_ready():
        return None
    if getattr(cupy, "__cupy_standin__", None) is not None:
        return "the CuPy stand-in runs on the CPU: numba-cuda has no GPU to launch the kernel on"
    if importlib.util.find_spec("numba") is None:
        return "numba-cuda is not installed (pip install -e '.[gpu]')"
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "0":
        return "NUMBA_ENABLE_CUDASIM is set: numba's simulator, not the GPU"
    return "numba-cuda is installed but sees no GPU (numba.cuda.is_available() is False)"


def torch_step(args, channels, size, x, y):
    """(step, sync, info) for PyTorch's backprop step on CUDA, in full float32."""
    import torch
    from torch_smallconv_fmnist import MODELS

    if not torch.cuda.is_available():
        sys.exit("PyTorch sees no CUDA GPU.")
    if args.trainer not in TORCH_TRAINERS:
        sys.exit(f"no PyTorch {args.trainer} here: only {', '.join(TORCH_TRAINERS)} has a PyTorch copy.")
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = MODELS[args.model](channels, NUM_CLASSES).to(cuda).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    xd, yd = torch.from_numpy(x).to(cuda), torch.from_numpy(y).to(cuda)

    def step():
        loss = torch.nn.functional.cross_entropy(model(xd), yd)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    torch.backends.cudnn.allow_tf32 = False  # full float32, as tinydgl's CuPy computes (gpu_check's docstring)
    torch.backends.cuda.matmul.allow_tf32 = False
    info = {"device": torch.cuda.get_device_name(0), "version": f"torch {torch.__version__}"}
    return step, torch.cuda.synchronize, info
