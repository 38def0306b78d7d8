"""benchmarks/gpu_check.py without a GPU: its --dry-run, the clear stop (exit 2) when no GPU is found, and the
whole check end to end on the CuPy stand-in (`--standin`), so the script itself is tested before a GPU sees it.

The real check needs an NVIDIA GPU; these tests make sure that the one command a person with a GPU will
run parses its options, plans the right commands, runs every check (on the stand-in), keeps every error's
text in its report, and says "no GPU" instead of a traceback elsewhere.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_check(*args, tmp_path, timeout=60, **env):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    return proc, out


def import_benchmark(name):
    """A module of benchmarks/ (gpu_check, _step_timing), imported as its scripts import each other."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_dry_run_prints_every_command_and_runs_none(tmp_path):
    proc, out = run_check("--dry-run", "--limit-train", "1000", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "pip install -e '.[gpu]' pytest" in text and "nothing if CuPy imports" in text
    assert "-m pytest -q -m gpu" in text and "tests/test_portability.py" in text  # the files, named
    for trainer in ("bp", "lls"):
        assert f"-m tinydgl train --trainer {trainer} --backend cupy" in text
    assert "--child steps" in text and "--devices 0,1" in text and "mpiexec -n 2" in text
    assert text.count("--limit-train 1000") == 2
    assert "fashion-mnist" in text or "mnist-small" in text
    for library in ("tinydgl", "torch"):  # each model at its own input size
        assert f"gpu_check.py --child {library} --size 1x28 --model smallconv --trainer bp" in text
        assert f"gpu_check.py --child {library} --size 3x32 --model vgg8 --trainer bp" in text
    for model in ("smallconv", "vgg8"):
        for trainer, path in (("lls", "fused"), ("lls", "composed"), ("dgl", "composed")):
            assert f"--model {model} --trainer {trainer} --path {path} --batch 128" in text
    assert (
        "--trainer dgl --path fused" not in text
        and "--child torch --size 1x28 --model smallconv --trainer lls" not in text
    )  # DGL's heads are not fusable; no PyTorch LLS here
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "a dry run writes no report"


def test_dry_run_without_install(tmp_path):
    proc, _ = run_check("--dry-run", "--no-install", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "else nothing (--no-install)" in proc.stdout and "pip install" not in proc.stdout


def test_hidden_gpus_stop_early_with_exit_2(tmp_path):
    # CUDA_VISIBLE_DEVICES='' hides every GPU, so this path is the same with or without one
    proc, out = run_check(tmp_path=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no GPU found" in proc.stderr and "CUDA_VISIBLE_DEVICES" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install" not in proc.stdout, "nothing is installed without a GPU"
    assert not out.exists()


def test_no_gpu_on_this_machine_stops_early_with_exit_2(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    found, how = gpu_check.find_gpu()
    if found:
        pytest.skip(f"this machine has a GPU ({how}): run benchmarks/gpu_check.py itself")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no GPU found" in proc.stderr and how in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_option_is_a_usage_error(tmp_path):
    proc, _ = run_check("--dry-run", "--sizes", "28", tmp_path=tmp_path)
    assert proc.returncode == 2 and "--sizes" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = run_check("--dry-run", "--trainers", "lls,dni", tmp_path=tmp_path)
    assert proc.returncode == 2 and "--trainers" in proc.stderr and "dni" in proc.stderr


def test_trainers_and_models_restrict_the_timed_steps(tmp_path):
    proc, _ = run_check("--dry-run", "--trainers", "lls", "--models", "vgg8", "--sizes", "3x16", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    children = [line for line in proc.stdout.splitlines() if "--child tinydgl" in line or "--child torch" in line]
    assert len(children) == 2 and all("--size 3x16 --model vgg8 --trainer lls" in line for line in children)


def test_the_whole_check_passes_on_the_cupy_standin(tmp_path):
    """`gpu_check.py --standin`: every check runs (two simulated GPUs, so --devices and MPI too) and passes."""
    proc, out = run_check("--standin", tmp_path=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    status = {row["check"]: row["status"] for row in report["checks"]}
    assert report["passed"] and report["standin"], status
    for check in (
        "gpu",
        "steps: every trainer on cnn",
        "steps: every trainer on smallconv",
        "steps: ff on mlp",
        "steps: pepita on mlp",
        "steps: bp on vgg8",
        "steps: bp on mobilenet_v1",
        "tests",
        "devices",
        "train bp",
        "train lls",
    ):
        assert status.get(check) == "pass", (check, status)
    assert status["mpi"] in ("pass", "skip")  # skip: no mpiexec with mpi4py on this machine
    stepped = {(c["trainer"], c["model"]) for c in report["steps"] if "loss" in c}
    from tinydgl.trainers import TRAINERS

    # every trainer on cnn and smallconv but ff and pepita (on mlp only), and bp on vgg8 and mobilenet_v1
    assert len(stepped) == 2 * (len(TRAINERS) - 2) + 2 + 2, report["steps"]
    assert "-m pip install" not in proc.stdout, "nothing is installed"
    check_the_timed_steps(report, proc.stdout)


def check_the_timed_steps(report, printed):
    """Step 8 on the stand-in: bp, lls and dgl on SmallConv and VGG8 timed, lls's fused path skipped with its
    reason (the stand-in cannot launch numba kernels), no PyTorch time (no CUDA here) and none for lls and dgl."""
    rows = {(r["trainer"], r["model"], r["path"]): r for r in report["step_table"]}
    expected = {
        (t, m, p)
        for m in ("smallconv", "vgg8")
        for t, p in (("bp", "composed"), ("lls", "fused"), ("lls", "composed"), ("dgl", "composed"))
    }
    assert set(rows) == expected, sorted(rows)
    for (trainer, model, path), row in rows.items():
        if path == "fused":
            assert row["status"] == "skip" and row["tinydgl_ms"] is None and "stand-in" in row["note"], row
        else:
            assert row["status"] == "pass" and row["tinydgl_ms"]["median"] > 0, row
            assert row["fused_launches_per_step"] == 0, row
        assert row["torch_ms"] is None and row["tinydgl_vs_torch"] is None
        assert ("PyTorch" in row["torch_note"]) if trainer == "bp" else row["torch_note"] == "no PyTorch reference here"
        assert f"| {trainer} | {model} | 3x16 | {path} |" in printed


def test_a_failed_check_keeps_its_error_text_in_the_report(tmp_path, monkeypatch):
    """A command that fails (here: `tinydgl train --backend cupy` in a process with no GPU and no stand-in)
    is a failed row whose "error" holds what the command said."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.delenv("CUPY_STANDIN_DEVICES", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the checkout's tinydgl; `import cupy`: the real one, or none
    run = gpu_check.Run(budget=120)
    args = argparse.Namespace(standin=True, out=str(tmp_path / "report.json"))
    gpu_check.check_devices(run, args, 2, tmp_path)
    gpu_check.write_report(args, run, {}, {})
    row = json.loads((tmp_path / "report.json").read_text())["checks"][0]
    assert row["status"] == "fail" and "exited with code 1" in row["detail"]
    assert "tinydgl: error:" in row["error"] and "cupy" in row["error"].lower(), row


def test_step_rows_give_fused_against_composed_and_tinydgl_against_pytorch():
    steps = import_benchmark("_step_timing")
    args = argparse.Namespace(models="smallconv", sizes=None, trainers="bp,lls")
    cases = steps.step_cases(args, with_torch=True)
    timed = {
        ("bp", "tinydgl"): [[0.02, 0.03, 0.02], [0.03]],
        ("bp", "torch"): [[0.01], [0.01]],
        ("lls", "tinydgl", "fused"): [[0.01]],
        ("lls", "tinydgl", "composed"): [[0.04]],
    }

    def results_of(case):
        key = (case.trainer, case.library, case.path) if case.trainer == "lls" else (case.trainer, case.library)
        return [{"step_seconds": samples} for samples in timed[key]]

    rows = steps.step_rows(cases, {case: results_of(case) for case in cases}, None)
    by_path = {(r["trainer"], r["path"]): r for r in rows}
    assert set(by_path) == {("bp", "composed"), ("lls", "fused"), ("lls", "composed")}
    bp = by_path["bp", "composed"]
    assert bp["tinydgl_ms"] == {"median": 25.0, "low": 20.0, "high": 30.0, "processes": 2}
    assert bp["tinydgl_vs_torch"] == 2.5 and bp["torch_note"] is None and bp["status"] == "pass"
    assert by_path["lls", "fused"]["fused_vs_composed"] == 0.25
    assert by_path["lls", "composed"]["fused_vs_composed"] is None
    assert by_path["lls", "fused"]["torch_note"] == steps.NO_TORCH_REFERENCE


def test_a_failed_or_skipped_child_is_a_failed_or_skipped_row():
    steps = import_benchmark("_step_timing")
    args = argparse.Namespace(models="vgg8", sizes="3x16", trainers="lls,bp")
    cases = steps.step_cases(args, with_torch=True)
    results = {case: [{"step_seconds": [0.1]}] for case in cases}
    fused = steps.StepCase("lls", "vgg8", "3x16", "fused", "tinydgl")
    results[fused] = [{"skipped": "numba-cuda is not installed"}]
    results[steps.StepCase("bp", "vgg8", "3x16", "autograd", "torch")] = [{"error": "PyTorch ran out of memory"}]
    rows = {(r["trainer"], r["path"]): r for r in steps.step_rows(cases, results, None)}
    assert rows["lls", "fused"]["status"] == "skip" and rows["lls", "fused"]["note"] == "numba-cuda is not installed"
    assert rows["lls", "fused"]["tinydgl_ms"] is None and rows["lls", "fused"]["fused_vs_composed"] is None
    assert rows["bp", "composed"]["status"] == "fail" and "out of memory" in rows["bp", "composed"]["error"]
    assert rows["bp", "composed"]["torch_note"] == "failed: PyTorch ran out of memory"


@pytest.mark.parametrize("path, launches", [("fused", 0), ("composed", 3)])
def test_a_fused_time_is_never_a_composed_one(monkeypatch, path, launches):
    """The child counts the fused kernel's launches: a fused child in which none ran (or a composed one in which
    some did) stops with an error instead of reporting a time under the wrong name."""
    steps = import_benchmark("_step_timing")
    count = [0]

    def fake_setup(args, channels, size, x, y):
        def step():
            count[0] += launches

        return step, lambda: None, {"device": "none", "version": "none", "launches": count}

    monkeypatch.setattr(steps, "tinydgl_step", fake_setup)
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the child reads its data maker from bench_step.py
    args = argparse.Namespace(
        child="tinydgl", size="1x8", model="smallconv", trainer="lls", path=path, batch=2, warmup=0, repeat=1
    )
    with pytest.raises(SystemExit, match="fused kernel ran"):
        steps.timed_child(args)


@pytest.mark.parametrize("name, shape", [("smallconv", (1, 28)), ("vgg8", (3, 32))])
def test_the_pytorch_models_are_tinydgls_layer_for_layer(name, shape):
    """torch_smallconv_fmnist.MODELS, which gpu_check times against tinydgl: with tinydgl's weights copied in,
    the same logits (batch-norm in training mode, as in a training step). Needs PyTorch (CPU is enough)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from tinydgl.models import build_model

    reference = import_benchmark("torch_smallconv_fmnist")
    ours, theirs = build_model(name, *shape, 10, seed=0), reference.MODELS[name](shape[0], 10).train()
    pairs = list(zip(theirs.parameters(), ours.parameters()))
    assert len(pairs) == len(ours.parameters()) == len(list(theirs.parameters()))
    with torch.no_grad():
        for t, o in pairs:  # tinydgl's Linear weight is (in, out), PyTorch's (out, in)
            t.copy_(torch.from_numpy(np.asarray(o.data.T if o.data.ndim == 2 else o.data)))
    x = np.random.default_rng(0).standard_normal((4, shape[0], shape[1], shape[1])).astype(np.float32)
    np.testing.assert_allclose(theirs(torch.from_numpy(x)).detach().numpy(), ours.forward(x), atol=1e-4)
