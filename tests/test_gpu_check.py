"""benchmarks/gpu_check.py without a GPU: its --dry-run, and the clear stop (exit 2) when no GPU is found.

The real check needs an NVIDIA GPU; these tests only make sure that the one command a person with a GPU will
run parses its options, plans the right commands, and says "no GPU" instead of a traceback elsewhere.
"""
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
    assert "pip install -e '.[gpu]'" in text
    assert "-m pytest -q -m gpu" in text
    for trainer in ("bp", "lls"):
        assert f"-m tinydgl train --trainer {trainer} --backend cupy" in text
    assert text.count("--model smallconv") == 2 and text.count("--limit-train 1000") == 2
    assert "fashion-mnist" in text or "mnist-small" in text
    for library in ("tinydgl", "torch"):
        assert f"gpu_check.py --child {library} --size 1x28" in text
        assert f"gpu_check.py --child {library} --size 3x32" in text
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "a dry run writes no report"


def test_dry_run_without_install(tmp_path):
    proc, _ = run_check("--dry-run", "--no-install", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped (--no-install)" in proc.stdout and "pip install" not in proc.stdout


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
