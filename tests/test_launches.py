"""Fewer kernel launches per step on CuPy: the fused kernels (tinydgl/kernels/elementwise.py: the optimizers'
updates, batch norm's passes, max pooling, LeakyReLU) against their readable NumPy form, and the launch counts.

On CuPy each SGD / momentum / NAG / Adam / AdamW update is one `ElementwiseKernel` launch per parameter.
No GPU here: the CuPy stand-in (tests/cupy_standin/) runs each kernel's Python twin, so these tests check
the twin and the code that calls it (arguments, in-place state), not the CUDA source, which compiles only
on a GPU.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinydgl
from cupy_standin import STATS, standin_cupy
from tinydgl.backend import asarray, to_numpy
from tinydgl.nn import Parameter
from tinydgl.optim import SGD, NAG, Adam, AdamW

CONFIGS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd-decay": lambda ps: SGD(ps, lr=0.1, weight_decay=0.01),
    "momentum": lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda ps: NAG(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: Adam(ps, lr=1e-2),
    "adam-l2": lambda ps: Adam(ps, lr=1e-2, weight_decay=0.1),
    "adamw": lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
}
SHAPES = [(3, 5), (7,), (2, 3, 3, 3)]


def _run(config, dtype, steps=3):
    """Parameters and optimizer state (host arrays) after `steps` updates with fixed random gradients."""
    rng = np.random.default_rng(0)
    params = [Parameter(asarray(rng.standard_normal(s).astype(dtype))) for s in SHAPES]
    optimizer = CONFIGS[config](params)
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    launches = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = asarray(g)
        STATS.reset()
        optimizer.step()
        launches.append(STATS.total_launches())
    state = {k: to_numpy(v) for s in optimizer.state for k, v in s.items() if not isinstance(v, int)}
    return [to_numpy(p.data) for p in params], state, launches


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fused_update_equals_the_readable_form_in_one_launch_per_parameter(config, monkeypatch):
    with tinydgl.use_backend("numpy"):
        want_params, want_state, _ = _run(config, np.float64)
    with standin_cupy():
        tinydgl.set_backend("cupy")
        params, state, launches = _run(config, np.float64)
    # after the first step (which creates the state with zeros_like), one launch per parameter
    assert launches[1:] == [len(SHAPES)] * (len(launches) - 1), launches
    for got, want in zip(params, want_params):
        np.testing.assert_array_equal(got, want)  # float64: the twin repeats the readable form term by term
    assert state.keys() == want_state.keys()
    for key in state:
        np.testing.assert_array_equal(state[key], want_state[key], err_msg=key)


@pytest.mark.parametrize("config", ["momentum", "adamw"])
def test_fused_float32_and_the_switch_back_to_the_readable_form(config, monkeypatch):
    """float32 agrees with the readable form on CuPy to rounding; TINYDGL_FUSED_KERNELS=0 turns fusion off."""
    with standin_cupy():
        tinydgl.set_backend("cupy")
        fused, _, fused_launches = _run(config, np.float32)
        monkeypatch.setenv("TINYDGL_FUSED_KERNELS", "0")
        readable, _, readable_launches = _run(config, np.float32)
    assert fused_launches[-1] == len(SHAPES) < readable_launches[-1]
    for got, want in zip(fused, readable):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_standin_elementwise_kernel_checks_its_arguments():
    with standin_cupy() as cupy:
        kernel = cupy.ElementwiseKernel("T g, T lr", "T p", "p = p - lr * g;", "tinydgl_sgd")
        with pytest.raises(TypeError, match="Wrong number of arguments"):
            kernel(cupy.ones(3), 0.1)
        with pytest.raises(TypeError, match="Unsupported type"):
            kernel(np.ones(3), 0.1, cupy.ones(3))
        with pytest.raises(NotImplementedError, match="Python twin"):
            cupy.ElementwiseKernel("T x", "T y", "y = x;", "no_such_kernel")(cupy.ones(2), cupy.ones(2))


def _three_ways(run, monkeypatch):
    """run() on NumPy (the readable form), on the CuPy stand-in with the fused kernels, and on the stand-in
    with them switched off (TINYDGL_FUSED_KERNELS=0): (want, got, written_out)."""
    with tinydgl.use_backend("numpy"):
        want = run()
    with standin_cupy():
        tinydgl.set_backend("cupy")
        got = run()
        monkeypatch.setenv("TINYDGL_FUSED_KERNELS", "0")
        written_out = run()
    return want, got, written_out


def _same_as_readable(fused, readable, numpy):
    """Fused equals the readable form on the same backend to the last bit (the twin repeats its terms), and
    NumPy's to rounding (on CuPy a column sum is one reduction, summing in another order than NumPy's BLAS)."""
    for f, r, n in zip(fused, readable, numpy):
        np.testing.assert_array_equal(f, r)
        np.testing.assert_allclose(f, n, rtol=1e-12, atol=1e-14)


def test_batchnorm_running_statistics_in_one_launch_as_the_readable_form(monkeypatch):
    """ops/norm.py: both running statistics in one fused launch on CuPy (nine array calls written out),
    equal to NumPy's readable form in float64."""
    from tinydgl.ops.norm import batchnorm_forward

    def run():
        rng = np.random.default_rng(1)
        x = asarray(rng.standard_normal((6, 3, 4, 5)))
        gamma, beta = asarray(rng.standard_normal(3)), asarray(rng.standard_normal(3))
        running_mean, running_var = asarray(rng.standard_normal(3)), asarray(rng.random(3) + 0.5)
        STATS.reset()
        out, _ = batchnorm_forward(x, gamma, beta, running_mean, running_var, True, momentum=0.3)
        in_update = sum(n for (_, site), n in STATS.launches.items() if "_update_running_stats" in site)
        return to_numpy(out), to_numpy(running_mean), to_numpy(running_var), in_update

    want, got, written_out = _three_ways(run, monkeypatch)
    assert got[3] == 1, f"{got[3]} launches to update the running statistics"
    _same_as_readable(got[:3], written_out[:3], want[:3])


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (7, 5)])
def test_batchnorm_passes_fused_as_the_readable_form(shape, monkeypatch):
    """ops/norm.py on CuPy: centring, scale-and-shift and the training-mode dx are one launch each, reading
    the per-channel vectors at i % C instead of tiling them; equal to NumPy's readable form in float64, in
    training and evaluation mode, for (N, C, H, W) and (N, C) inputs."""
    from tinydgl.ops.norm import batchnorm_backward, batchnorm_forward

    def run():
        rng = np.random.default_rng(2)
        c = shape[1]
        x, dout = asarray(rng.standard_normal(shape)), asarray(rng.standard_normal(shape))
        gamma, beta = asarray(rng.standard_normal(c)), asarray(rng.standard_normal(c))
        running_mean, running_var = asarray(rng.standard_normal(c)), asarray(rng.random(c) + 0.5)
        results = []
        for training in (True, False):
            STATS.reset()
            out, cache = batchnorm_forward(x, gamma, beta, running_mean, running_var, training)
            grads = batchnorm_backward(dout, cache)
            results += [to_numpy(out), *(to_numpy(g) for g in grads), STATS.total_launches()]
        return results

    want, got, written_out = _three_ways(run, monkeypatch)
    _same_as_readable(
        [g for g in got if not isinstance(g, int)],
        [g for g in written_out if not isinstance(g, int)],
        [w for w in want if not isinstance(w, int)],
    )
    # forward + backward in training mode; fused saves 8 launches on the running statistics, 1 on centring
    # (no tile), 3 on scale-and-shift (two tiles, an add) and 10 on dx (three tiles, seven ops in one)
    assert got[4] <= written_out[4] - 22, (got[4], written_out[4])


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2)])
def test_maxpool_fused_as_the_readable_form(kernel, stride, monkeypatch):
    """ops/pool.py on CuPy: one launch per window offset forward, and backward where windows do not overlap;
    equal to NumPy's readable form (ties included: the first offset wins), on odd image sizes."""
    from tinydgl.ops.pool import maxpool2d_backward, maxpool2d_forward

    def run():
        rng = np.random.default_rng(3)
        x = asarray(rng.integers(0, 4, (3, 2, 7, 5)).astype(np.float64))  # few values: many ties
        STATS.reset()
        out, cache = maxpool2d_forward(x, kernel, stride)
        dx = maxpool2d_backward(asarray(rng.standard_normal(out.shape)), cache)
        return to_numpy(out), to_numpy(dx), STATS.total_launches()

    want, got, written_out = _three_ways(run, monkeypatch)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # forward: 4 launches per offset saved, less one copy; backward (windows apart) 3 per offset
    saved = 4 * (kernel * kernel - 1) - 1 + (3 * kernel * kernel if stride >= kernel else 0)
    assert got[2] <= written_out[2] - saved, (got[2], written_out[2])


def test_leaky_relu_fused_as_the_readable_form(monkeypatch):
    """ops/activation.py on CuPy: LeakyReLU forward (output and mask) and backward in one launch each."""
    from tinydgl.ops.activation import leaky_relu_backward, leaky_relu_forward

    def run():
        rng = np.random.default_rng(4)
        x = rng.standard_normal((5, 3, 4))
        x[0, 0, :2] = 0.0, -0.0
        STATS.reset()
        out, cache = leaky_relu_forward(asarray(x), 0.01)
        dx = leaky_relu_backward(asarray(rng.standard_normal(x.shape)), cache)
        return to_numpy(out), to_numpy(cache[0]), to_numpy(dx), STATS.total_launches()

    want, got, written_out = _three_ways(run, monkeypatch)
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(g, w)
    assert got[3] == 2 < written_out[3], (got[3], written_out[3])


def test_matmul_into_its_output_and_column_sums_are_one_launch_each():
    """threads.py on CuPy: matmul writes into `out` (not a product then a copy), column sums are one
    reduction (not a ones vector and a product)."""
    from tinydgl.threads import column_sums, matmul

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    with standin_cupy() as cupy:
        tinydgl.set_backend("cupy")
        out = cupy.empty((6, 3))
        STATS.reset()
        result = matmul(asarray(a), asarray(b), out=out)
        sums = column_sums(asarray(a))
        launches = STATS.total_launches()
        assert result is out
        result, sums = to_numpy(result), to_numpy(sums)
    assert launches == 2, STATS.launches
    np.testing.assert_allclose(result, a @ b, rtol=1e-12)
    np.testing.assert_allclose(sums, a.sum(axis=0), rtol=1e-12)


def test_smallconv_bp_step_is_at_most_250_launches():
    """Issue 24's target, counted as benchmarks/count_launches.py counts it (SmallConv, batch 128, 28x28,
    Adam): 640 launching calls per step before the fused kernels, 238 after."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from count_launches import count
    finally:
        sys.path.pop(0)
    launches, syncs, by_source = count("bp")
    assert launches <= 250 and syncs <= 1, (launches, syncs, by_source.most_common(10))


def test_each_kernel_declaration_matches_its_twin_and_cupy_parses_it():
    """Each fused kernel's Python twin takes its parameters in the declared order (in_params then
    out_params); where the real CuPy is installed (no GPU needed), CuPy accepts the declarations. The CUDA
    bodies compile only on a GPU: not checked here."""
    import inspect

    from tinydgl.kernels.elementwise import KERNELS

    for kernel in KERNELS.values():
        declared = [p.split()[-1] for p in f"{kernel.in_params}, {kernel.out_params}".split(",")]
        assert list(inspect.signature(kernel.twin).parameters) == declared, kernel.name
    try:
        import cupy
    except ImportError:
        return
    if hasattr(cupy, "__cupy_standin__"):
        return
    for kernel in KERNELS.values():
        parsed = cupy.ElementwiseKernel(kernel.in_params, kernel.out_params, kernel.operation, kernel.name)
        assert (parsed.nin, parsed.nout) == (kernel.in_params.count(",") + 1, kernel.out_params.count(",") + 1)


def test_a_conv_on_the_gpu_takes_the_device_workspace(monkeypatch):
    """The patch matrix of a conv is cut into batch slices that fit the CPU's 32 MiB on NumPy, and the GPU's
    larger workspace on CuPy (each slice is its own launches): the same conv takes fewer slices there."""
    import tinydgl.ops.conv as conv

    asked = []
    original = conv._image_slices
    monkeypatch.setattr(conv, "_image_slices", lambda *a: asked.append(a[-1]) or original(*a))
    x, w = np.ones((2, 3, 6, 6), np.float32), np.ones((4, 3, 3, 3), np.float32)
    tinydgl.functional.conv2d_forward(x, w, None, 1, 1, portable=True)
    with standin_cupy():
        tinydgl.set_backend("cupy")
        tinydgl.functional.conv2d_forward(asarray(x), asarray(w), None, 1, 1)
    assert asked == [False, True]
    # 128 images of 32x32 outputs, 3x3 over 64 channels, float32: 302 MB of patches
    assert len(original(128, 32 * 32, 576, 4)) == 10 and len(original(128, 32 * 32, 576, 4, True)) == 1
