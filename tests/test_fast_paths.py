"""The NumPy/CuPy fast paths in tinydgl.ops agree with the portable code, and keep activations channels-last.

Each op that takes a shortcut behind `is_numpy_like(xp)` (a strided im2col view, in-place `out=` updates,
einsum) is run twice: on NumPy arrays (fast path) and on array_api_strict arrays on a fake device
(portable path, the code CuPy-less GPUs and other libraries get). Both must give the same numbers.
The layout tests guard the speed work in benchmarks/bench_step.py: if an op starts returning NCHW-ordered
memory, the next layer pays for a transposing copy, which no value check would notice.
"""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.backend import to_numpy

xps = pytest.importorskip("array_api_strict")
DEVICE = xps.Device("device1")
RNG = np.random.default_rng(0)


def strict(a):
    return xps.asarray(a, device=DEVICE)


def channels_last(a):
    """The same values as NCHW array `a`, stored channels-last (as tinydgl's conv outputs are)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_channels_last(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


def assert_same(fast, portable):
    fast = fast if isinstance(fast, tuple) else (fast,)
    portable = portable if isinstance(portable, tuple) else (portable,)
    for f, p in zip(fast, portable, strict=True):
        if f is None:
            assert p is None
            continue
        np.testing.assert_allclose(to_numpy(f), to_numpy(p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 4)])
def test_conv_fast_matches_portable(stride, padding, groups):
    x = channels_last(RNG.standard_normal((2, 4, 7, 6)))
    w = RNG.standard_normal((8, 4 // groups, 3, 3))
    b = RNG.standard_normal(8)
    out, cache = F.conv2d_forward(x, w, b, stride, padding, groups)
    out_sliced, _ = F.conv2d_forward(x, w, b, stride, padding, groups, portable=True)
    out_strict, cache_strict = F.conv2d_forward(strict(x), strict(w), strict(b), stride, padding, groups)
    assert_same(out, out_sliced)
    assert_same(out, out_strict)
    dout = channels_last(RNG.standard_normal(out.shape))
    assert_same(F.conv2d_backward(dout, cache), F.conv2d_backward(strict(dout), cache_strict))


@pytest.mark.parametrize("slope", [0.01, 0.0, 1.0, 2.0])
def test_leaky_relu_fast_matches_portable(slope):
    x = RNG.standard_normal((2, 3, 4, 5))
    x[0, 0, 0, :2] = 0.0
    dout = RNG.standard_normal(x.shape)
    out, cache = F.leaky_relu_forward(x, slope)
    out_strict, cache_strict = F.leaky_relu_forward(strict(x), slope)
    assert_same(out, out_strict)
    assert_same(out, np.where(x > 0, x, slope * x))
    dx = F.leaky_relu_backward(dout, cache)
    assert_same(dx, F.leaky_relu_backward(strict(dout), cache_strict))
    assert_same(dx, np.where(x > 0, dout, slope * dout))


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (3, 1), (2, 3)])
def test_maxpool_fast_matches_portable(kernel, stride):
    x = RNG.standard_normal((2, 3, 7, 8))
    x[0, 0, :3, :3] = 1.5  # ties: the first maximum must win on both paths
    out, cache = F.maxpool2d_forward(x, kernel, stride)
    out_strict, cache_strict = F.maxpool2d_forward(strict(x), kernel, stride)
    assert_same(out, out_strict)
    dout = RNG.standard_normal(out.shape)
    assert_same(F.maxpool2d_backward(dout, cache), F.maxpool2d_backward(strict(dout), cache_strict))
    assert_same(
        F.maxpool2d_backward(dout, cache),
        F.maxpool2d_backward_naive(dout, F.maxpool2d_forward_naive(x, kernel, stride)[1]),
    )


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_fast_matches_portable(shape, training):
    x = RNG.standard_normal(shape) * 2 + 3
    gamma, beta = RNG.standard_normal(shape[1]), RNG.standard_normal(shape[1])
    stats = (RNG.standard_normal(shape[1]), RNG.uniform(0.5, 2, shape[1]))
    running = [s.copy() for s in stats]
    running_strict = [strict(s) for s in stats]
    out, cache = F.batchnorm_forward(x, gamma, beta, *running, training)
    out_strict, cache_strict = F.batchnorm_forward(strict(x), strict(gamma), strict(beta), *running_strict, training)
    assert_same(out, out_strict)
    assert_same(tuple(running), tuple(running_strict))
    dout = RNG.standard_normal(shape)
    assert_same(F.batchnorm_backward(dout, cache), F.batchnorm_backward(strict(dout), cache_strict))


def test_smallconv_block_keeps_channels_last():
    """conv -> BN -> LeakyReLU -> maxpool -> conv, forward and backward, never reorders memory to NCHW."""
    x = RNG.standard_normal((4, 3, 8, 8))
    w1, w2 = RNG.standard_normal((6, 3, 3, 3)), RNG.standard_normal((5, 6, 3, 3))
    gamma, beta = np.ones(6), np.zeros(6)
    h1, c1 = F.conv2d_forward(x, w1, None, 1, 1)
    h2, c2 = F.batchnorm_forward(h1, gamma, beta, None, None, True)
    h3, c3 = F.leaky_relu_forward(h2)
    h4, c4 = F.maxpool2d_forward(h3, 2)
    h5, c5 = F.conv2d_forward(h4, w2, None, 1, 1)
    assert all(is_channels_last(h) for h in (h1, h2, h3, h4, h5))
    d4, _, _ = F.conv2d_backward(channels_last(np.ones(h5.shape)), c5)
    d3 = F.maxpool2d_backward(d4, c4)
    d2 = F.leaky_relu_backward(d3, c3)
    d1, _, _ = F.batchnorm_backward(d2, c2)
    assert all(is_channels_last(d) for d in (d3, d2, d1))
