"""The fused local-loss kernel (tinydgl/kernels/): equal to the composed layers, picked where it should be.

1. Numerics, in numba's CUDA simulator: tests/kernels_cudasim_checks.py runs in a subprocess (the simulator
   must be switched on before numba.cuda is imported, and then replaces it for the whole process, so it
   never runs in pytest's own process) and compares the kernel with the composed float64 NumPy reference,
   forward and backward, for LLS, LLS-M, LLS-MxM (also reduced), the random basis and local-losses, and
   two training steps of a tiny mlp with every local loss fused against the same steps composed.
2. The switch, in this process: which heads fuse, and that LocalModule's local loss takes the fused path
   on CuPy (the stand-in) only when numba-cuda sees a GPU and TINYDGL_FUSED_KERNELS is not 0.
3. PTX for sm_80 and sm_90 (`cuda.compile_ptx`), which the simulator cannot vouch for: skipped unless NVRTC
   and libNVVM are installed (about 130 MB of wheels, so not in default CI). To run it:
       pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12
       LD_LIBRARY_PATH=$(python -c "import nvidia.cuda_nvrtc as r, nvidia.cuda_nvcc as c; \
print(r.__path__[0] + '/lib:' + c.__path__[0] + '/nvvm/lib64')") python -m pytest -q tests/test_kernels.py -k ptx
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tinydgl
from cupy_standin import standin_cupy
from tinydgl import kernels
from tinydgl.backend import asarray
from tinydgl.trainers.heads import aux_head
from tinydgl.trainers.lls import lls_head
from tinydgl.trainers.local import LocalModule

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "tests" / "kernels_cudasim_checks.py"
CASES = [
    "lls-conv-7x5-pool2",
    "lls-m-conv-7x5-pool2",
    "lls-mxm-conv-5x7-pool3",
    "lls-mxm-reduced-flat-11",
    "lls-square-pool1-threads32",
    "lls-random-width13",
    "local-losses-width9",
    "lls-zero-example",
    "lls-float32",
    "steps-lls",
    "steps-lls-mxm",
]
# learned head parameters compared (the steps-* cases compare every parameter of the mlp and its heads instead)
PARAMETER_COUNTS = {
    "lls-m-conv-7x5-pool2": 1,
    "lls-mxm-conv-5x7-pool3": 1,
    "lls-mxm-reduced-flat-11": 1,
    "local-losses-width9": 1,
    "lls-float32": 1,
    "steps-lls": 10,
    "steps-lls-mxm": 12,
}


@pytest.fixture(scope="module")
def simulated():
    """{case: differences} from one simulator subprocess (about 10 s for all cases)."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(CHECKS)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"the simulator checks failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["case"]: row for row in rows}


@pytest.mark.parametrize("case", CASES)
def test_fused_kernel_matches_the_composed_float64_reference(simulated, case):
    row = simulated[case]
    tolerance = 1e-6 if row["dtype"] == "float32" else 1e-12
    assert row["dout_dtype"] == row["dtype"]
    assert row["loss"] < tolerance, row
    assert row["dout"] < tolerance, row
    assert row["n_params"] == PARAMETER_COUNTS.get(case, 0), row  # every learned parameter got a gradient
    assert all(g < tolerance for g in row["grads"]), row


def test_benchmark_script_runs_in_the_simulator():
    """benchmarks/bench_local_loss_kernel.py is for a GPU; --simulator checks that it runs and agrees."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_local_loss_kernel.py"), "--simulator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("tiny")]
    assert [row[5] for row in rows] == ["lls", "lls-m", "lls-mxm", "local-losses"]
    assert all(float(row[-1]) < 1e-12 for row in rows), done.stdout


# --- the switch -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modulation", [None, "m", "mxm"])
def test_lls_heads_fuse_and_dgl_heads_do_not(modulation):
    plan = kernels.fusable(lls_head((8, 6, 6), 2, 10, modulation=modulation))
    assert plan is not None and plan["pool"] == 2 and plan["normalize"] and plan["scale"] == 2.0
    assert kernels.fusable(lls_head((8, 6, 6), 2, 10, waveform="random"))["normalize"] is False
    assert kernels.fusable(aux_head("linear", (8, 6, 6), 10)) is None  # batch norm: not a linear chain


def test_projection_matrix_is_the_head_applied_to_the_identity():
    head = lls_head((3, 4, 4), 2, 5, modulation="mxm", dtype="float64")
    for p in head.parameters():
        p.data = p.data * 50.0
    plan = kernels.fusable(head)
    w = kernels.projection_matrix(head, plan, 12, np, np.float64)
    chain_only = np.eye(12) @ head.layers[3].buffers["matrix"].T @ head.layers[4].weight.data
    np.testing.assert_allclose(w, chain_only, rtol=1e-13)


class Spy:
    def __init__(self):
        self.calls = 0

    def __call__(self, head, out, y, label_smoothing=0.0):
        self.calls += 1
        return kernels.composed_local_loss(head, out, y, label_smoothing)


@pytest.mark.parametrize("ready, switch, expect_fused", [(True, "1", True), (True, "0", False), (False, "1", False)])
def test_local_module_fuses_on_cupy_only_with_a_gpu_and_the_switch_on(monkeypatch, ready, switch, expect_fused):
    spy = Spy()
    monkeypatch.setattr(kernels, "fused_local_loss", spy)
    monkeypatch.setattr(kernels, "numba_cuda_ready", lambda: ready)
    monkeypatch.setenv("TINYDGL_FUSED_KERNELS", switch)
    with standin_cupy():
        tinydgl.set_backend("cupy")
        head = lls_head((3, 4, 4), 2, 5)
        module = LocalModule(head, head, lambda params: None)
        out = asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), dtype="float32")
        loss, dout = module.local_loss(out, asarray(np.array([0, 4])))
    assert spy.calls == (1 if expect_fused else 0)
    assert np.isfinite(float(loss)) and tuple(dout.shape) == (2, 3, 4, 4)


def test_numpy_arrays_never_take_the_fused_path_by_default(monkeypatch):
    monkeypatch.setattr(kernels, "fused_local_loss", lambda *a, **k: pytest.fail("fused on NumPy"))
    monkeypatch.setattr(kernels, "numba_cuda_ready", lambda: True)
    head = lls_head((3, 4, 4), 2, 5)
    kernels.local_loss(head, np.ones((2, 3, 4, 4), dtype=np.float32), np.array([0, 1]))


def test_cupy_arrays_reach_the_kernel_without_a_host_sync(monkeypatch):
    """numba's default for an array that names its stream is to synchronise that stream on the host before
    every launch; the kernel runs on CuPy's current stream, so launch asks for views with sync=False."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")
    from tinydgl.kernels import local_loss_cuda

    calls = []
    monkeypatch.setattr(local_loss_cuda.cuda, "as_cuda_array", lambda x, sync=True: calls.append(sync) or x)
    fake_cupy = types.SimpleNamespace(__name__="cupy")
    arrays = (np.zeros(2), np.ones(3))
    views = local_loss_cuda.device_arrays(fake_cupy, *arrays)
    assert all(v is a for v, a in zip(views, arrays)) and calls == [False, False]
    assert all(v is a for v, a in zip(local_loss_cuda.device_arrays(np, *arrays), arrays))  # NumPy: untouched
    assert calls == [False, False]


# --- PTX for the GPUs the simulator stands in for -----------------------------------------------------------------
def nvrtc_missing():
    try:
        from numba import cuda, types
    except ImportError:
        return "numba-cuda is not installed (pip install numba-cuda)"
    try:

        def probe(x):
            x[0] = 1.0

        cuda.compile_ptx(probe, (types.float32[::1],), cc=(8, 0))
    except Exception as err:  # DynamicLibNotFoundError (no libnvrtc / libnvvm), NvvmSupportError, ...
        return f"NVRTC/NVVM not found ({type(err).__name__}); see this file's docstring to install them"
    return None


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_compiles_to_ptx(cc, dtype):
    reason = nvrtc_missing()
    if reason:
        pytest.skip(reason)
    from numba import cuda, types

    from tinydgl.kernels import local_loss_cuda

    f = getattr(types, dtype)
    array2, array4 = f[:, ::1], f[:, :, :, ::1]
    signature = (
        array4,
        types.int64[::1],
        array2,
        types.float64,
        types.int64,
        types.boolean,
        types.float64,
        types.float64,
        array2,
        array2,
        array2,
        array2,
        f[::1],
        array4,
    )
    ptx, _ = cuda.compile_ptx(local_loss_cuda.make_kernel().py_func, signature, cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert "bar.sync" in ptx and ".shared" in ptx  # the reduction's barriers and shared buffer survived
