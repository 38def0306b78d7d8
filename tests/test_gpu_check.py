"""benchmarks/gpu_check.py without a GPU: its --dry-run, the clear stop (exit 2) when no GPU is found, and the
whole check end to end on the CuPy stand-in (`--standin`), so the script itself is tested before a GPU sees it.

The real check needs an NVIDIA GPU; these tests make sure that the one command a person with a GPU will
run parses its options, plans the right commands, runs every check (on the stand-in), keeps every error's
text in its report, and says "no GPU" instead of a traceback elsewhere.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_check(*args, tmp_path, **env):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    return proc, out


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
    for library in ("tinydgl", "torch"):
        assert f"gpu_check.py --child {library} --size 1x28" in text
        assert f"gpu_check.py --child {library} --size 3x32" in text
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
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no GPU found" in proc.stderr and how in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_option_is_a_usage_error(tmp_path):
    proc, _ = run_check("--dry-run", "--sizes", "28", tmp_path=tmp_path)
    assert proc.returncode == 2 and "--sizes" in proc.stderr and "Traceback" not in proc.stderr


def test_the_whole_check_passes_on_the_cupy_standin(tmp_path):
    """`gpu_check.py --standin`: every check runs (two simulated GPUs, so --devices and MPI too) and passes."""
    proc, out = run_check("--standin", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    status = {row["check"]: row["status"] for row in report["checks"]}
    assert report["passed"] and report["standin"], status
    for check in ("gpu", "steps: every trainer on cnn", "steps: every trainer on smallconv", "steps: ff on mlp",
                  "steps: pepita on mlp", "steps: bp on vgg8", "steps: bp on mobilenet_v1", "tests", "devices", "train bp", "train lls"):
        assert status.get(check) == "pass", (check, status)
    assert status["mpi"] in ("pass", "skip")  # skip: no mpiexec with mpi4py on this machine
    stepped = {(c["trainer"], c["model"]) for c in report["steps"] if "loss" in c}
    from tinydgl.trainers import TRAINERS
    # every trainer on cnn and smallconv but ff and pepita (on mlp only), and bp on vgg8 and mobilenet_v1
    assert len(stepped) == 2 * (len(TRAINERS) - 2) + 2 + 2, report["steps"]
    assert "-m pip install" not in proc.stdout, "nothing is installed"


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
