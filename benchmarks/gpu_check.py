"""Check tinydgl on an NVIDIA GPU: a single command with a single table of results, offline if need be.

    python benchmarks/gpu_check.py                    # from the repository root, on a machine with a GPU
    python benchmarks/gpu_check.py --no-install       # never run pip (the machine is offline)
    python benchmarks/gpu_check.py --dry-run          # print the commands it would run, and run nothing
    python benchmarks/gpu_check.py --standin          # the whole check on the CuPy stand-in, on the CPU (CI)
    python benchmarks/gpu_check.py --limit-train 20000 --models smallconv --trainers bp,lls   # a shorter run

What it runs, in order (each command in a process of its own; `--dry-run` prints them all):
0. looks for a GPU (`nvidia-smi -L`, else the driver's /proc/driver/nvidia/gpus/, else CuPy if installed).
   None found (or CUDA_VISIBLE_DEVICES hides them all): it says so and exits with status 2 before installing
   anything. This is what happens on the project's own 2-core machine.
1. install: nothing when CuPy already imports (whatever its build: cupy-cuda12x, cupy-cuda13x, ...) and pytest
   is there. Otherwise, and unless --no-install, `pip install -e ".[gpu]"` (cupy-cuda12x[ctk]) and pytest.
2. gpu: CuPy's view of device 0 (name, memory, compute capability, CUDA runtime and driver versions), after
   an elementwise kernel (NVRTC) and a matrix product (cuBLAS) have run on it; `nvidia-smi -L` beside it.
   If CuPy sees no device, it stops here with status 2; if CuPy is missing or cannot run a kernel, with 1.
3. steps: one training step of every trainer on `cnn` and `smallconv` (ff: on `mlp`, the only model it
   takes), and one backprop step of VGG8 and of MobileNet-V1 on 3x32x32 images, all on CuPy in one process
   (`gpu_check.py --child steps`; random data, batch 32). Each case that raises is a failure with its
   error's text.
4. tests: `python -m pytest -q -m gpu <the test files with gpu tests>` (named, so that no other test module,
   and none of its imports such as hypothesis, is needed), counted from pytest's JUnit XML report: it passes
   when none failed and at least one ran (all skipped means pytest could not use the GPU).
5. devices: with two GPUs or more, `tinydgl train --trainer dgl --parallel module --workers 2 --devices 0,1` (one worker
   process per GPU); skipped with one GPU.
6. mpi: where `mpiexec` and mpi4py are installed, `mpiexec -n 2 python -m mpi4py -m tinydgl train
   --parallel module --transport mpi --backend cupy --trainer dgl` (each rank picks GPU local_rank % GPUs); skipped otherwise.
7. train bp / train lls: one epoch of SmallConv on CuPy with each method, through the CLI
   (`python -m tinydgl train --backend cupy --model smallconv ...`, which is the `tinydgl train` command), on
   Fashion-MNIST if its files are on this machine (it does not download them), else the bundled mnist-small.
   The recipe is the LLS protocol of benchmarks/RESULTS.md (batch 128, schedule-free AdamW lr 5e-3, 50
   batch-norm recalibration batches, seed 0), so on full Fashion-MNIST the accuracy is compared with the CPU
   runs recorded there (seed 0: bp 0.9106, lls 0.8849); more than 2 points away is a failure (a float32
   run on a GPU adds rounding differences, not points). Accuracy and training seconds come from
   `--metrics-json`. `--limit-train` / `--limit-test` shorten the runs (printed with the results).
8. step: one training step (Adam lr 5e-3, batch 128, float32, random data already on the GPU) of bp, lls and
   dgl on SmallConv (1x28x28) and VGG8 (3x32x32), through the library's trainers on CuPy; lls both fused (the
   numba-cuda local-loss kernel) and composed (TINYDGL_FUSED_KERNELS=0); bp also in PyTorch on CUDA where
   torch sees a GPU. dgl runs composed only (its MLP heads are not fusable), and there is no PyTorch LLS or
   DGL here to compare with. `--trainers`, `--models`, `--sizes` and `--batch` choose the cases
   (_step_timing.py says how each step is taken). As in bench_step.py (which times the CPU), each
   measurement is a child process of its own (`gpu_check.py --child tinydgl|torch ...`), the children
   alternate over `--rounds` rounds (default 2, `--warmup` 5 and `--repeat` 20 steps each, to fit the
   budget), and the table gives medians [lowest-highest per-process median]. Every timed step ends with
   cupy.cuda.Device().synchronize() / torch.cuda.synchronize(), so a step's time includes its GPU work.
   Both steps read the loss back to the host once (float(trainer.train_step(...)); PyTorch's side calls
   loss.item()), as a training loop does; tinydgl's local-loss trainers may sync more inside the step.
   Both compute in full float32: PyTorch's TF32 switches (on for cuDNN convolutions by default) are turned
   off, as CuPy's matmuls do not use TF32 unless CUPY_TF32=1; otherwise PyTorch keeps its defaults (cuDNN,
   no cudnn.benchmark). A fused case that cannot launch the kernel (no numba-cuda) is skipped, with why.
9. prints one table (check, result, seconds), then the step table (trainer, model, input, path, tinydgl ms,
   PyTorch ms, tinydgl / PyTorch, fused / composed), and writes both with the GPU's description to --out
   (gpu_check.json, "checks" and "step_table"; a failed check keeps the last lines of its command's output,
   its error, under "error"); the exit status is 0 when every check passed (a skipped check is not a
   failure), 1 when one failed, 2 when no GPU was found.

`--standin` runs all of this on the CPU, with `import cupy` giving the CuPy stand-in of tests/cupy_standin/
(CuPy 14's names and signatures, arrays that refuse implicit conversion to NumPy; two simulated GPUs, so the
devices and MPI checks run too). It installs nothing, shortens the runs unless told otherwise
(STANDIN_DEFAULTS: `--limit-train 64 --limit-test 32`, batch 4 steps, and one timed step per case, every
model at 3x16x16), and proves that this script and the CuPy route work before a GPU sees them
(tests/test_gpu_check.py runs it so in CI). Its timings are not a GPU's, and its fused rows are skipped:
numba-cuda cannot launch a kernel on the CPU.

How long: about 5-7 minutes on one recent GPU (an estimate: the script has not yet run on one), of which the
timed steps' 20 processes (10 cases, 2 rounds) take about 2; CuPy's first kernel compilations (cached in
~/.cupy/kernel_cache afterwards) and a pip install, if one is needed, take the most. Each step has a time
limit, and `--budget` (default 450 s) caps the whole run: checks (and timed processes) that would start after
it are reported as failed ("not run"), so the command ends in under 8 minutes.

Afterwards, paste into benchmarks/RESULTS.md, in place of the section "GPU check (ready, not yet run)": a
heading "GPU check (DATE, GPU NAME)", the command you ran, the `gpu` line printed above the table (device,
memory, CUDA runtime / driver, CuPy, PyTorch versions), the two tables (printed as Markdown), and
anything that failed with its message; keep gpu_check.json beside it in benchmarks/results/ if you like.
"""

import argparse
import datetime
import collections
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import _processes as procs  # standard library only: importable before anything is installed
import _step_timing as step_timing  # the same

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STANDIN_SHIM = ROOT / "tests" / "cupy_standin" / "shim"  # holds a `cupy` package: the CuPy stand-in
NO_GPU = 2  # exit status when there is no GPU to check
LR = step_timing.LR  # bench_step.py's Adam rate, for every step this script takes
TRAIN_RECIPE = [
    "--model",
    "smallconv",
    "--epochs",
    "1",
    "--batch-size",
    "128",
    "--optimizer",
    "adamw-sf",
    "--lr",
    "5e-3",
    "--bn-recalibrate",
    "50",
    "--seed",
    "0",
    "--no-progress",
]
# benchmarks/RESULTS.md, "Reproducing the LLS protocol": full Fashion-MNIST, adamw-sf, seed 0, on the CPU
CPU_ACCURACY = {"bp": 0.9106, "lls": 0.8849}
ACCURACY_TOLERANCE = 0.02
LIMITS = {
    "install": 300,
    "gpu": 120,
    "steps": 150,
    "tests": 180,
    "devices": 90,
    "mpi": 90,
    "train": 240,
    "step": 120,
}  # seconds per command
# The test files that hold tests marked `gpu`: named, so that pytest imports only these (no hypothesis needed).
GPU_TEST_FILES = [
    "tests/test_portability.py",
    "tests/test_forward_forward.py",
    "tests/test_trainer_dni.py",
    "tests/test_engine.py",
]
STANDIN_GPUS = 2  # the stand-in pretends to have two GPUs, so that --devices 0,1 and MPI's choice are exercised
DEFAULTS = {
    "rounds": 2,
    "warmup": 5,
    "repeat": 20,
    "step_batch": 32,
    "batch": 128,
    "trainers": ",".join(step_timing.STEP_TRAINERS),
    "models": ",".join(step_timing.STEP_MODELS),
}
# the stand-in computes with NumPy on the CPU: a small input and batch keep VGG8's steps short there
STANDIN_DEFAULTS = {
    "limit_train": 64,
    "limit_test": 32,
    "sizes": "3x16",
    "rounds": 1,
    "warmup": 0,
    "repeat": 1,
    "step_batch": 4,
    "batch": 4,
}


def short_run(args):
    """The options of the devices and MPI runs: one short epoch (shorter still on the stand-in)."""
    train, test, batch = (64, 32, 32) if args.standin else (512, 256, 64)
    return [
        "--epochs",
        "1",
        "--limit-train",
        train,
        "--limit-test",
        test,
        "--batch-size",
        batch,
        "--seed",
        "0",
        "--no-progress",
    ]


# Run in a child after the install, so that the parent never imports CuPy (it may not be installed yet).
GPU_PROBE = r"""
import json
def out(**d):
    print(json.dumps(d))
try:
    import cupy
except ImportError as err:
    out(error="no-cupy", message=str(err)); raise SystemExit
try:
    count = cupy.cuda.runtime.getDeviceCount()
except Exception as err:
    out(error="no-gpu", message=f"{type(err).__name__}: {err}"); raise SystemExit
if count < 1:
    out(error="no-gpu", message="CUDA sees 0 devices"); raise SystemExit
v = lambda n: f"{n // 1000}.{n % 1000 // 10}"
props = cupy.cuda.runtime.getDeviceProperties(0)
name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
info = dict(count=count, name=name, cupy=cupy.__version__,
            compute_capability=cupy.cuda.Device(0).compute_capability,
            cuda_runtime=v(cupy.cuda.runtime.runtimeGetVersion()), cuda_driver=v(cupy.cuda.runtime.driverGetVersion()))
try:
    free, total = cupy.cuda.Device(0).mem_info
    info.update(memory_total_gib=round(total / 2**30, 1), memory_free_gib=round(free / 2**30, 1))
    x = cupy.arange(10, dtype=cupy.float32)
    assert float((x * x).sum()) == 285.0, "elementwise kernel gave a wrong sum"
    a = cupy.ones((64, 64), dtype=cupy.float32)
    assert float((a @ a)[0, 0]) == 64.0, "matmul gave a wrong value"
except Exception as err:
    info.update(error="no-kernel", message=f"{type(err).__name__}: {err}")
out(**info)
"""

TORCH_PROBE = (
    "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'available': torch.cuda.is_available(), "
    "'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))"
)


def python(*args):
    return [sys.executable, *map(str, args)]


def show(cmd):
    return " ".join(shlex.quote(str(c)) for c in cmd).replace(shlex.quote(sys.executable), "python", 1)


# --- step 0: is there a GPU at all? ---------------------------------------------------------------------
def find_gpu(standin=False):
    """(True, how it was seen) when this machine has an NVIDIA GPU visible to CUDA, else (False, why not)."""
    if standin:
        return True, (
            f"no GPU: the CuPy stand-in (tests/cupy_standin/, CPU only, {STANDIN_GPUS} simulated GPUs) poses as CuPy"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False, f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            return False, f"`nvidia-smi -L` did not answer ({err})"
        gpus = [line for line in proc.stdout.splitlines() if line.startswith("GPU ")]
        if proc.returncode == 0 and gpus:
            return True, "; ".join(gpus)
        said = (proc.stdout + proc.stderr).strip().splitlines()
        return False, f"`nvidia-smi -L` lists no GPU (exit code {proc.returncode}: {said[0] if said else 'no output'})"
    drivers = Path("/proc/driver/nvidia/gpus")
    if drivers.is_dir() and any(drivers.iterdir()):
        return True, f"the NVIDIA driver lists {len(list(drivers.iterdir()))} GPU(s) in {drivers} (no nvidia-smi)"
    if importlib.util.find_spec("cupy") is not None:
        try:
            probe = run_probe()
        except subprocess.TimeoutExpired:
            return False, "CuPy is installed but did not say within 120 s whether it sees a device"
        if "error" not in probe or probe["error"] == "no-kernel":
            return True, f"CuPy sees {probe['count']} device(s)"
        return False, f"CuPy is installed but sees no device ({probe.get('message')})"
    return False, "no nvidia-smi on PATH, no GPU in /proc/driver/nvidia/gpus, and no CuPy to ask"


def run_probe(timeout=LIMITS["gpu"]):
    proc = subprocess.run(python("-c", GPU_PROBE), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        said = (proc.stderr or proc.stdout).strip()[-800:]
        return {"error": "probe", "message": f"the CuPy probe exited with code {proc.returncode}: {said}"}
    return json.loads(lines[-1])


# --- the plan --------------------------------------------------------------------------------------------
def choose_dataset():
    """'fashion-mnist' when its files are on this machine (found as `tinydgl train` would, never downloaded),
    else 'mnist-small' (bundled); with the reason."""
    sys.path.insert(0, str(ROOT))  # the checkout's tinydgl, installed or not
    try:
        from tinydgl.data.datasets import DATASETS, DatasetNotFoundError, locate_files
    except ImportError as err:  # NumPy not installed yet (a dry run before the install)
        return "mnist-small", f"could not look for Fashion-MNIST ({err}); the bundled mnist-small"
    finally:
        sys.path.pop(0)
    try:
        paths = locate_files(DATASETS["fashion-mnist"], download=False, progress=False)
    except DatasetNotFoundError:
        return "mnist-small", "Fashion-MNIST's files are not on this machine; the bundled mnist-small instead"
    return "fashion-mnist", f"Fashion-MNIST from {paths[0].parent}"


def train_command(args, trainer, dataset, metrics):
    cmd = python(
        "-m",
        "tinydgl",
        "train",
        "--trainer",
        trainer,
        "--backend",
        "cupy",
        "--dataset",
        dataset,
        *TRAIN_RECIPE,
        "--metrics-json",
        metrics,
    )
    if args.limit_train:
        cmd += ["--limit-train", args.limit_train]
    if args.limit_test:
        cmd += ["--limit-test", args.limit_test]
    return cmd


def dry_run(args):
    dataset, why = choose_dataset()
    scratch = "<temporary folder>"
    print("gpu_check --dry-run: the commands a run would make, in order (nothing is run)\n")
    if args.standin:
        print(
            f"   --standin: every command below runs with `import cupy` giving the CuPy stand-in "
            f"(PYTHONPATH={STANDIN_SHIM}, {STANDIN_GPUS} simulated GPUs)"
        )
    print(f"0. look for a GPU: nvidia-smi -L (else /proc/driver/nvidia/gpus/, else CuPy); none: exit {NO_GPU}")
    install = python("-m", "pip", "install", "-e", ".[gpu]", "pytest")
    print(
        "1. install: nothing if CuPy imports and pytest is there; "
        + (
            "else nothing (--no-install)"
            if args.no_install or args.standin
            else "else, what is missing of: " + show(install)
        )
    )
    print("2. gpu: " + show(python("-c", "<CuPy probe: name, memory, CUDA versions of device 0; a kernel, a matmul>")))
    print("        nvidia-smi -L")
    print(
        "3. steps: "
        + show(python("benchmarks/gpu_check.py", "--child", "steps", "--step-batch", args.step_batch))
        + "   (every trainer on cnn and smallconv; VGG8, MobileNet)"
    )
    print("4. tests: " + show(tests_command(f"--junitxml={scratch}/gpu-tests.xml")))
    print(
        "5. devices (two GPUs or more): "
        + show(
            python(
                "-m",
                "tinydgl",
                "train",
                "--backend",
                "cupy",
                "--trainer",
                "dgl",
                "--model",
                "smallconv",
                "--parallel",
                "module",
                "--workers",
                "2",
                "--devices",
                "0,1",
                *short_run(args),
            )
        )
    )
    print(
        "6. mpi (mpiexec and mpi4py installed): mpiexec -n 2 "
        + show(
            python(
                "-m",
                "mpi4py",
                "-m",
                "tinydgl",
                "train",
                "--parallel",
                "module",
                "--transport",
                "mpi",
                "--backend",
                "cupy",
                "--trainer",
                "dgl",
                "--model",
                "smallconv",
                *short_run(args),
            )
        )
    )
    print(f"7. train, on {dataset} ({why}):")
    for trainer in ("bp", "lls"):
        print("   " + show(train_command(args, trainer, dataset, f"{scratch}/train-{trainer}.json")))
    print("8. step: " + show(python("-c", "import torch; ...")) + "   (if torch is installed: does it see a GPU?)")
    print(
        f"   then {args.rounds} round(s), alternated, of (--path fused / composed: the child sets "
        "TINYDGL_FUSED_KERNELS=1 / 0):"
    )
    for case in step_timing.step_cases(args, with_torch=True):
        note = "   (only where torch sees a GPU)" if case.library == "torch" else ""
        print("   " + show(python(*step_timing.child_command("benchmarks/gpu_check.py", args, case))) + note)
    print(
        f"9. the table, written to {args.out}; time limits per command (s): {LIMITS}, all together --budget "
        f"{args.budget:g} s"
    )
    return 0


# --- running the checks ----------------------------------------------------------------------------------
class Run:
    """The checks made so far: each a row of (check, status, detail, seconds); and the run's deadline."""

    def __init__(self, budget):
        self.rows = []
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.budget = budget

    def time_left(self, limit):
        return max(0.0, min(limit, self.deadline - time.monotonic()))

    def add(self, check, status, detail, seconds, error=None):
        """One row; `error`: the text that explains a failure (a command's last output lines, a traceback)."""
        row = {"check": check, "status": status, "detail": detail, "seconds": round(seconds, 1)}
        if error:
            row["error"] = error[-4000:]
        self.rows.append(row)
        print(f"--> {check}: {status.upper()} {detail} ({seconds:.1f} s)\n", flush=True)

    def failed(self):
        return any(r["status"] == "fail" for r in self.rows)


def banner(text):
    print(f"\n=== {text} " + "=" * max(3, 100 - len(text)), flush=True)


def run_command(cmd, limit, run, capture=False, label=None):
    """Run `cmd` in the repository root within min(limit, the budget left); (exit code, output, seconds).

    Its output (stdout and stderr together) goes to ours as it comes, unless `capture`; either way it is
    returned, so that a failure's text can go into the report (stdout only, when `capture`). Exit code None:
    stopped at the time limit."""
    timeout = run.time_left(limit)
    print(f"$ {label or show(cmd)}", flush=True)
    t0 = time.monotonic()
    if timeout <= 0:
        return None, "", 0.0
    try:
        proc = subprocess.Popen(
            list(map(str, cmd)),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=None if capture else subprocess.STDOUT,
        )
    except OSError as err:
        return 127, str(err), time.monotonic() - t0
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = collections.deque(maxlen=400)
    try:
        for line in proc.stdout:
            lines.append(line)
            if not capture:
                print(line, end="", flush=True)
        code = proc.wait()
    finally:
        timer.cancel()
    if time.monotonic() - t0 >= timeout and code != 0:
        return None, "".join(lines), time.monotonic() - t0
    return code, "".join(lines), time.monotonic() - t0


def stopped(run, limit, seconds):
    """Why a command has no result: the whole run's --budget ran out (before it or during it), or its own limit."""
    if run.deadline - time.monotonic() <= 0:
        return f"{'stopped' if seconds > 0.05 else 'not run'}: the --budget of {run.budget:g} s was spent"
    return f"stopped at its time limit ({limit} s)"


IMPORT_PROBE = (
    "import importlib.util as u, json; c = u.find_spec('cupy') is not None; v = None\n"
    "if c:\n    import cupy; v = cupy.__version__\n"
    "print(json.dumps({'cupy': v, 'pytest': u.find_spec('pytest') is not None}))"
)


def what_is_installed():
    """{'cupy': its version or None, 'pytest': bool}, asked of a child (this process never imports CuPy)."""
    try:
        proc = subprocess.run(python("-c", IMPORT_PROBE), capture_output=True, text=True, timeout=120, cwd=ROOT)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, ValueError) as err:
        return {"cupy": None, "pytest": False, "error": f"{type(err).__name__}: {err}"}


def check_install(run, args):
    """Install only what is missing: CuPy (the gpu extra) if it does not import, pytest if it is absent."""
    banner("1. install what is missing")
    t0 = time.monotonic()
    have = what_is_installed()
    missing = ([] if have["cupy"] else ['-e ".[gpu]"']) + ([] if have["pytest"] else ["pytest"])
    found = f"CuPy {have['cupy'] or 'missing'}, pytest {'found' if have['pytest'] else 'missing'}"
    if not missing:
        return run.add("install", "pass", f"nothing to install ({found})", time.monotonic() - t0)
    if args.no_install:
        return run.add(
            "install",
            "skip" if have["cupy"] else "fail",
            f"{found}; --no-install: not installing {', '.join(missing)}",
            time.monotonic() - t0,
        )
    cmd = python(
        "-m", "pip", "install", *([] if have["cupy"] else ["-e", ".[gpu]"]), *([] if have["pytest"] else ["pytest"])
    )
    code, out, seconds = run_command(cmd, LIMITS["install"], run)
    if code == 0:
        run.add("install", "pass", f"{found}: {show(cmd)}", seconds)
    elif code is None:
        run.add("install", "fail", stopped(run, LIMITS["install"], seconds), seconds, error=out)
    else:
        run.add(
            "install",
            "fail",
            f"pip exited with code {code} ({found}; offline? install CuPy by hand: "
            "pip install 'cupy-cuda12x[ctk]>=14', or cupy-cuda13x for CUDA 13)",
            seconds,
            error=out,
        )


def check_gpu(run):
    """CuPy's description of device 0; with an "error" key when there is none or it cannot compute (the
    caller stops: "no-gpu" when CUDA sees no device, "no-cupy", "no-kernel" or "probe" otherwise)."""
    banner("2. the GPU, as CuPy sees it")
    t0 = time.monotonic()
    print(f"$ {show(python('-c', '<CuPy probe>'))}", flush=True)
    try:
        info = run_probe(run.time_left(LIMITS["gpu"]) or 1)
    except subprocess.TimeoutExpired:
        info = {"error": "probe", "message": f"the probe did not finish within {LIMITS['gpu']} s"}
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = proc.stdout.strip().splitlines()
        print("$ nvidia-smi -L\n" + proc.stdout.strip())
    seconds = time.monotonic() - t0
    error = info.get("error")
    if error == "no-gpu":
        run.add("gpu", "fail", f"CuPy sees no GPU: {info['message']}", seconds)
        return info
    if error == "no-cupy":
        run.add(
            "gpu",
            "fail",
            f"CuPy is not installed ({info['message']}): run without --no-install, or pip install -e '.[gpu]'",
            seconds,
        )
        return info
    if error:
        hint = (
            (
                " (CuPy needs the CUDA libraries, NVRTC and cuBLAS: install the CUDA Toolkit 12, or with "
                "CuPy 14 or later pip install 'cupy-cuda12x[ctk]')"
            )
            if error == "no-kernel"
            else ""
        )
        run.add("gpu", "fail", f"{info['message']}{hint}", seconds)
        return info
    run.add("gpu", "pass", gpu_line(info), seconds)
    return info


def gpu_line(info):
    cc = info["compute_capability"]
    return (
        f"{info['name']} (compute capability {cc[:-1]}.{cc[-1]}), {info['memory_total_gib']} GiB "
        f"({info['memory_free_gib']} free), CUDA runtime {info['cuda_runtime']} / driver {info['cuda_driver']}, "
        f"CuPy {info['cupy']}" + (f"; {info['count']} GPUs, device 0 used" if info["count"] > 1 else "")
    )


def check_tests(run, scratch):
    banner("4. the tests marked gpu")
    report = scratch / "gpu-tests.xml"
    code, out, seconds = run_command(tests_command(f"--junitxml={report}"), LIMITS["tests"], run)
    if code is None:
        return run.add("tests", "fail", stopped(run, LIMITS["tests"], seconds), seconds, error=out)
    try:
        suites = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return run.add("tests", "fail", f"pytest exited with code {code} and wrote no report", seconds, error=out)
    suites = [suites] if suites.tag == "testsuite" else list(suites.iter("testsuite"))
    count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    detail = f"{passed} passed, {count['failures']} failed, {count['errors']} errors, {count['skipped']} skipped"
    reasons = sorted({s.get("message", "") for s in suites[0].iter("skipped")} if suites else set())
    if reasons:
        detail += f" (skipped: {'; '.join(r[:120] for r in reasons[:3])})"
    ok = code == 0 and passed > 0 and not count["failures"] and not count["errors"]
    if passed == 0 and not (count["failures"] or count["errors"]):
        detail += ": none ran, so pytest did not use the GPU"
    failures = [
        f"{case.get('classname')}.{case.get('name')}: {(bad.get('message') or '')[:500]}"
        for case in (suites[0].iter("testcase") if suites else [])
        for bad in case
        if bad.tag in ("failure", "error")
    ]
    run.add(
        "tests",
        "pass" if ok else "fail",
        detail,
        seconds,
        error=None if ok else "\n".join(failures) + "\n--- pytest's output ---\n" + out[-2000:],
    )
    return count


def tests_command(*extra):
    return python("-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *extra, *GPU_TEST_FILES)


def check_train(run, args, trainer, dataset, scratch):
    banner(f"7. train {trainer}: one epoch of SmallConv on CuPy, {dataset}")
    metrics = scratch / f"train-{trainer}.json"
    code, out, seconds = run_command(train_command(args, trainer, dataset, metrics), LIMITS["train"], run)
    name = f"train {trainer}"
    if code is None:
        return run.add(name, "fail", stopped(run, LIMITS["train"], seconds), seconds, error=out)
    if code != 0 or not metrics.exists():
        return run.add(name, "fail", f"tinydgl train exited with code {code}", seconds, error=out)
    summary = json.loads(metrics.read_text())
    acc, backend = summary["test_accuracy"], summary["environment"]["backend"]
    cfg = summary["config"]
    detail = (
        f"test acc {acc:.4f}, {summary['train_seconds']:.1f} s training "
        f"({summary['samples_per_second'] or 0:,.0f} samples/s); {dataset}, "
        f"limit-train {cfg['limit_train'] or 'none'}, limit-test {cfg['limit_test'] or 'none'}"
    )
    status = "pass"
    full_fmnist = dataset == "fashion-mnist" and not cfg["limit_train"] and not cfg["limit_test"]
    if backend != "cupy":
        status, detail = "fail", f"ran on backend {backend!r}, not cupy; " + detail
    elif (not cfg["limit_train"] or cfg["limit_train"] >= 2000) and (acc or 0) < 0.2:
        status, detail = "fail", "learned nothing (10 classes: chance is 0.1); " + detail
    elif full_fmnist and trainer in CPU_ACCURACY:
        ref = CPU_ACCURACY[trainer]
        detail += f"; CPU seed 0: {ref:.4f} ({100 * (acc - ref):+.2f} points)"
        if abs(acc - ref) > ACCURACY_TOLERANCE:
            status = "fail"
    run.add(name, status, detail, seconds)
    return summary


def probe_torch(run):
    """(PyTorch's version, CUDA build and whether it sees a GPU, or None; why PyTorch is not timed, or None)."""
    torch_info = None
    if procs.torch_version() is not None:
        code, out, _ = run_command(
            python("-c", TORCH_PROBE),
            120,
            run,
            capture=True,
            label="python -c '<torch probe: version, CUDA build, sees a GPU?>'",
        )
        torch_info = json.loads(out.strip().splitlines()[-1]) if code == 0 and out.strip() else None
    if torch_info and torch_info["available"]:
        why_not = None
    elif torch_info:
        why_not = f"PyTorch {torch_info['torch']} sees no CUDA GPU (CUDA build: {torch_info['cuda']})"
    elif procs.torch_version() is not None:
        why_not = "PyTorch is installed but could not be imported (its error is above)"
    else:
        why_not = "PyTorch is not installed (pip install torch, a CUDA build)"
    print(f"torch: {torch_info or why_not}", flush=True)
    return torch_info, why_not


def time_step_cases(run, args, cases):
    """{case: [one child's result per round]}, the children alternated over --rounds rounds. A child that fails,
    or that the --budget leaves no time for, gives {"error": why}; a fused child that cannot launch the kernel
    gives {"skipped": why}, which later rounds repeat without starting another process."""
    threads = procs.parse_threads("all")[0]
    skipped = {}

    def run_case(case):
        if case in skipped:
            return skipped[case]
        timeout = run.time_left(LIMITS["step"])
        if timeout <= 0:
            return {"error": stopped(run, LIMITS["step"], 0.0)}
        try:
            result = procs.child_result(step_timing.child_command(__file__, args, case), threads, timeout)
        except procs.ChildFailed as err:  # its own error went to our stderr as it ran
            why = str(err)
            if "ran past" in why:  # procs' timeout message names bench_step's --timeout: say which limit it was
                why = stopped(run, LIMITS["step"], timeout)
            return {"error": why}
        if "skipped" in result:
            skipped[case] = result
        return result

    return procs.alternate(cases, args.rounds, run_case, step_timing.describe)


def check_steps(run, args):
    """Step 8: each trainer's step timed on each model and path, against PyTorch's where there is one (rows)."""
    banner("8. one training step: bp, lls (fused and composed) and dgl on CuPy; bp on PyTorch CUDA")
    torch_info, why_no_torch = probe_torch(run)
    cases = step_timing.step_cases(args, with_torch=why_no_torch is None)
    t0 = time.monotonic()
    results = time_step_cases(run, args, cases)
    rows = step_timing.step_rows(cases, results, why_no_torch)
    share = (time.monotonic() - t0) / max(1, len(rows))
    for row in rows:
        run.add(
            f"step {row['trainer']} {row['model']} {row['input']} {row['path']}",
            row["status"],
            step_timing.row_detail(row),
            share,
            error=row.get("error"),
        )
    per_process = {
        "/".join(case): [r["step_seconds"] for r in got if "step_seconds" in r] for case, got in results.items()
    }
    return torch_info, rows, per_process


def check_trainer_steps(run, args):
    """One step of every trainer on cnn and smallconv, one VGG8 and one MobileNet step (`--child steps`)."""
    banner("3. one step of every trainer on cnn and smallconv; one VGG8 and one MobileNet step")
    code, out, seconds = run_command(
        python(__file__, "--child", "steps", "--step-batch", args.step_batch),
        LIMITS["steps"],
        run,
        capture=True,
        label=show(python("benchmarks/gpu_check.py", "--child", "steps", "--step-batch", args.step_batch)),
    )
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code is None or code != 0 or not lines:
        why = stopped(run, LIMITS["steps"], seconds) if code is None else f"the child exited with code {code}"
        return run.add("steps", "fail", why, seconds, error=out), None
    cases = json.loads(lines[-1])["cases"]
    for case in cases:
        said = f"loss {case['loss']:.4f}" if case.get("loss") is not None else case["error"].splitlines()[-1]
        print(f"  {case['trainer']:<13} {case['model']:<13} {said}  ({case['seconds']:.2f} s)")
    by_group = collections.defaultdict(list)
    for case in cases:
        by_group[
            "every trainer on " + case["model"]
            if case["model"] in ("cnn", "smallconv")
            else f"{case['trainer']} on {case['model']}"
        ].append(case)
    share = seconds / max(1, len(by_group))
    for group, members in by_group.items():
        bad = [c for c in members if c.get("error")]
        detail = f"{len(members) - len(bad)} of {len(members)} stepped" + (
            f"; failed: {', '.join(c['trainer'] for c in bad)}"
            if bad
            else f" (losses {min(c['loss'] for c in members):.3f}-{max(c['loss'] for c in members):.3f})"
        )
        run.add(
            f"steps: {group}",
            "fail" if bad else "pass",
            detail,
            share,
            error="\n\n".join(f"{c['trainer']} on {c['model']}:\n{c['error']}" for c in bad) or None,
        )
    return cases


def check_devices(run, args, gpus, scratch):
    banner("5. two GPUs: --workers 2 --devices 0,1")
    if gpus < 2:
        return run.add("devices", "skip", f"one GPU ({gpus} seen): --devices 0,1 needs two", 0.0)
    metrics = scratch / "devices.json"
    cmd = python(
        "-m",
        "tinydgl",
        "train",
        "--backend",
        "cupy",
        "--trainer",
        "dgl",
        "--model",
        "smallconv",
        "--parallel",
        "module",
        "--workers",
        "2",
        "--devices",
        "0,1",
        *short_run(args),
        "--metrics-json",
        metrics,
    )
    code, out, seconds = run_command(cmd, LIMITS["devices"], run)
    if code == 0 and metrics.exists():
        acc = json.loads(metrics.read_text())["test_accuracy"]
        return run.add("devices", "pass", f"dgl, 2 workers on GPUs 0 and 1: test acc {acc:.4f}", seconds)
    why = stopped(run, LIMITS["devices"], seconds) if code is None else f"tinydgl train exited with code {code}"
    run.add("devices", "fail", why, seconds, error=out)


def find_mpiexec():
    """mpiexec beside this Python (the mpich wheel's) or on PATH, if mpi4py is installed; else None."""
    if importlib.util.find_spec("mpi4py") is None:
        return None
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def check_mpi(run, args, scratch):
    banner("6. MPI with CuPy: mpiexec -n 2 ... --transport mpi")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        return run.add("mpi", "skip", "no mpiexec with mpi4py here (pip install 'tinydgl[mpi]' to check it)", 0.0)
    metrics = scratch / "mpi.json"
    cmd = [
        mpiexec,
        "-n",
        "2",
        *python(
            "-m",
            "mpi4py",
            "-m",
            "tinydgl",
            "train",
            "--parallel",
            "module",
            "--transport",
            "mpi",
            "--backend",
            "cupy",
            "--trainer",
            "dgl",
            "--model",
            "smallconv",
            *short_run(args),
            "--metrics-json",
            metrics,
        ),
    ]
    code, out, seconds = run_command(cmd, LIMITS["mpi"], run)
    choice = next((line for line in out.splitlines() if line.startswith("GPUs for the MPI ranks")), None)
    if code == 0 and metrics.exists() and choice:
        acc = json.loads(metrics.read_text())["test_accuracy"]
        return run.add("mpi", "pass", f"dgl on 2 ranks: test acc {acc:.4f}; {choice}", seconds)
    why = (
        stopped(run, LIMITS["mpi"], seconds)
        if code is None
        else f"mpiexec exited with code {code}" + ("" if choice or code else "; no rank said which GPU it took")
    )
    run.add("mpi", "fail", why, seconds, error=out)


def print_table(run):
    print("\n| check | result | seconds |\n|---|---|---|")
    for r in run.rows:
        detail = r["detail"].replace("|", "/")  # a Markdown table: no bars inside a cell
        print(f"| {r['check']} | {r['status'].upper()}: {detail} | {r['seconds']:.1f} |")
    print(f"| all | {'FAIL' if run.failed() else 'PASS'} | {time.monotonic() - run.started:.1f} |")
    for r in run.rows:
        if r.get("error"):  # the whole text is in the JSON report; its end here
            print(f"\n--- {r['check']}: its error (the last lines; all of it is in the report) ---")
            print("\n".join(r["error"].rstrip().splitlines()[-15:]))


def git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def full_run(args):
    found, how = find_gpu(args.standin)
    if not found:
        print(
            f"gpu_check: no GPU found: {how}.\nThis check needs one NVIDIA GPU with its driver (`nvidia-smi -L` "
            "lists it); nothing was installed or measured.",
            file=sys.stderr,
        )
        return NO_GPU
    print(f"gpu_check: {how}")
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"command : python {' '.join(sys.argv)}  (commit {git_commit()}, {now:%Y-%m-%d %H:%M} UTC)")
    run = Run(args.budget)
    if args.standin:
        run.add("install", "skip", "--standin: nothing to install (the stand-in needs only NumPy)", 0.0)
    else:
        check_install(run, args)
    gpu = check_gpu(run)
    extra = {"standin": args.standin}
    if gpu.get("error"):
        print_table(run)
        write_report(args, run, gpu, extra)
        print(
            "gpu_check: "
            + ("no GPU found by CuPy" if gpu["error"] == "no-gpu" else "CuPy cannot compute here")
            + "; the checks that need it were not run.",
            file=sys.stderr,
        )
        return NO_GPU if gpu["error"] == "no-gpu" else 1
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        scratch = Path(tmp)
        extra["steps"] = check_trainer_steps(run, args)
        extra["tests"] = check_tests(run, scratch)
        check_devices(run, args, gpu.get("count", 1), scratch)
        check_mpi(run, args, scratch)
        dataset, why = choose_dataset()
        print(
            f"\ntraining data: {why}; --limit-train {args.limit_train or 'none (all)'}, "
            f"--limit-test {args.limit_test or 'none (all)'}"
        )
        extra["dataset"] = dataset
        for trainer in ("bp", "lls"):
            extra[f"train_{trainer}"] = check_train(run, args, trainer, dataset, scratch)
    extra["torch"], extra["step_table"], extra["step_seconds"] = check_steps(run, args)
    print(f"\ngpu     : {gpu_line(gpu)}")
    if extra["torch"]:
        t = extra["torch"]
        print(f"torch   : {t['torch']} (CUDA {t['cuda']}, {'sees ' + t['device'] if t['available'] else 'no GPU'})")
    print_table(run)
    step_timing.print_step_table(extra["step_table"], args.batch)
    write_report(args, run, gpu, extra)
    return 1 if run.failed() else 0


def write_report(args, run, gpu, extra):
    report = {
        "command": "python " + " ".join(sys.argv),
        "commit": git_commit(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "gpu": gpu,
        "checks": run.rows,
        "passed": not run.failed(),
        "seconds": round(time.monotonic() - run.started, 1),
        **extra,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out}")


# --- the children ------------------------------------------------------------------------------------------
STEP_CASES = [
    (trainer, model)
    for model in ("cnn", "smallconv")
    for trainer in (
        "bp",
        "dni",
        "cdni",
        "greedy",
        "dgl",
        "async-dgl",
        "lls",
        "lls-m",
        "lls-mxm",
        "local-losses",
        "fa",
        "dfa",
        "sdfa",
        "drtp",
        "shallow",
        "fg",
    )
] + [("ff", "mlp"), ("pepita", "mlp"), ("bp", "vgg8"), ("bp", "mobilenet_v1")]
# pepita follows the official fully connected code: Linear -> activation blocks, without batch norm
STEP_MODEL_OPTIONS = {"pepita": {"batchnorm": False}}


def run_steps_child(args):
    """One train_step per STEP_CASES entry on CuPy (random data: 1x28x28 for cnn, smallconv and mlp, 3x32x32
    for VGG8 and MobileNet); print one JSON line with each case's loss, seconds and error text."""
    sys.path.insert(0, str(ROOT))  # the checkout's tinydgl, installed or not
    import numpy as np

    import tinydgl
    from tinydgl.models import build_model
    from tinydgl.optim import Adam
    from tinydgl.trainers import TRAINERS, build_trainer

    tinydgl.set_backend("cupy")
    missing = sorted(set(TRAINERS) - {t for t, _ in STEP_CASES})
    assert not missing, f"gpu_check's STEP_CASES lack the trainers {missing}"
    sync = __import__("cupy").cuda.Device().synchronize
    rng = np.random.default_rng(0)
    cases = []
    for trainer_name, model_name in STEP_CASES:
        channels, size = (3, 32) if model_name in ("vgg8", "mobilenet_v1") else (1, 28)
        t0 = time.perf_counter()
        case = {"trainer": trainer_name, "model": model_name}
        try:
            model = build_model(model_name, channels, size, 10, seed=0, **STEP_MODEL_OPTIONS.get(trainer_name, {}))
            trainer = build_trainer(trainer_name, model, lambda p: Adam(p, lr=LR))
            x = rng.standard_normal((args.step_batch, channels, size, size)).astype(np.float32)
            y = rng.integers(0, 10, args.step_batch)
            case["loss"] = float(trainer.train_step(tinydgl.backend.asarray(x), tinydgl.backend.asarray(y)))
            sync()
        except Exception:
            case["error"] = traceback.format_exc()[-3000:]
        case["seconds"] = time.perf_counter() - t0
        cases.append(case)
    print(json.dumps({"cases": cases}))


def run_child(args):
    """A child process: every trainer's step (`--child steps`), or one timed case (`--child tinydgl|torch`)."""
    sys.path.insert(0, str(ROOT))  # the checkout's tinydgl, installed or not
    if args.child == "steps":
        return run_steps_child(args)
    return step_timing.timed_child(args)


def use_standin():
    """--standin: this process's children import the CuPy stand-in as `cupy`, with STANDIN_GPUS GPUs."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(STANDIN_SHIM), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    )
    os.environ["CUPY_STANDIN_DEVICES"] = str(STANDIN_GPUS)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-install", action="store_true", help="never run pip (CuPy and pytest must be there)")
    parser.add_argument(
        "--standin",
        action="store_true",
        help="run everything on the CuPy stand-in of tests/cupy_standin/ (CPU, no GPU): for CI",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands it would run; run nothing")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report (default: gpu_check.json)")
    parser.add_argument("--limit-train", type=int, default=None, help="train on this many images (default: all)")
    parser.add_argument("--limit-test", type=int, default=None, help="test on this many images (default: all)")
    parser.add_argument(
        "--trainers",
        default=None,
        help=f"timed steps: of these trainers, comma-separated (default: {DEFAULTS['trainers']})",
    )
    parser.add_argument("--models", default=None, help=f"timed steps: on these models (default: {DEFAULTS['models']})")
    parser.add_argument(
        "--sizes",
        default=None,
        help="timed steps: every model at these inputs, CxS, comma-separated "
        "(default: each model's own, smallconv 1x28, vgg8 3x32)",
    )
    parser.add_argument("--batch", type=int, default=None, help="batch of the timed steps (default: 128)")
    parser.add_argument("--rounds", type=int, default=None, help="processes per timed case, alternated (default: 2)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per process (CuPy compiles kernels then)"
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed steps per process (default: 20)")
    parser.add_argument("--step-batch", type=int, default=None, help="batch of the every-trainer steps (default: 32)")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole run (default: 450)")
    parser.add_argument("--child", choices=["tinydgl", "torch", "steps"], help=argparse.SUPPRESS)
    parser.add_argument("--size", default="1x28", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smallconv", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", default="bp", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="composed", choices=["fused", "composed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {**DEFAULTS, **(STANDIN_DEFAULTS if args.standin else {})}
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return parser, args


def check_options(parser, args):
    """Usage errors (exit 2, argparse's way) for options that cannot work, before anything runs."""
    for size in args.sizes.split(",") if args.sizes else []:
        parts = size.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            parser.error(f"--sizes takes CxS sizes such as 1x28,3x32; got {size!r}")
    for option, known in (("trainers", step_timing.STEP_TRAINERS), ("models", step_timing.STEP_MODELS)):
        unknown = sorted(set(getattr(args, option).split(",")) - set(known))
        if unknown:
            parser.error(f"--{option} takes some of {', '.join(known)} (comma-separated); not {', '.join(unknown)}")
    if (
        min(args.rounds, args.repeat, args.step_batch, args.batch) < 1
        or args.warmup < 0
        or any(v is not None and v < 1 for v in (args.limit_train, args.limit_test))
    ):
        parser.error(
            "--rounds, --repeat, --batch, --step-batch, --limit-train and --limit-test must be at least 1, "
            "--warmup at least 0"
        )


def main():
    parser, args = parse_args()
    if args.standin:
        use_standin()
    if args.child:
        return run_child(args)
    check_options(parser, args)
    if args.dry_run:
        return dry_run(args)
    return full_run(args)


if __name__ == "__main__":
    sys.exit(main())
