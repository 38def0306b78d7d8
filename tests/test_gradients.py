"""Numerical gradient checks (float64) of every differentiable input of every op.

Inputs are kept away from kinks: ReLU/LeakyReLU inputs are at least 1e-2 from zero, and max-pool inputs
are distinct by at least 1e-2, so a central difference with h = 1e-6 never crosses one.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydgl import functional as F
from tinydgl.gradcheck import check_gradients, numerical_gradient, rel_error

TOL = 1e-6
FAST = settings(max_examples=12, deadline=None)


def away_from_zero(rng, shape, margin=1e-2):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin * 2, x)


def distinct_values(rng, shape):
    """Values with pairwise gaps of 0.01 in random order: no ties and no kink within h."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.5


def test_numerical_gradient_of_known_function():
    x = np.array([1.0, -2.0, 3.0])
    grad = numerical_gradient(lambda v: np.sum(v**3), x, None)
    assert rel_error(grad, 3 * x**2) < 1e-8


def test_rel_error_detects_a_wrong_gradient():
    a = np.array([1.0, 2.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, a * 1.01) > 1e-3


@FAST
@given(n=st.integers(1, 4), d=st.integers(1, 5), m=st.integers(1, 4), bias=st.booleans(), seed=st.integers(0, 999))
def test_linear(n, d, m, bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((d, m)), rng.standard_normal(m)
    if bias:
        errors = check_gradients(F.linear_forward, F.linear_backward, [x, w, b])
    else:
        errors = check_gradients(
            lambda x, w: F.linear_forward(x, w, None), lambda d, c: F.linear_backward(d, c)[:2], [x, w]
        )
    assert max(errors) < TOL, errors


@FAST
@given(
    n=st.integers(1, 2),
    groups=st.sampled_from([1, 2, 3]),
    cpg=st.integers(1, 2),
    fpg=st.integers(1, 2),
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    k=st.sampled_from([1, 2, 3]),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    bias=st.booleans(),
    seed=st.integers(0, 999),
)
def test_conv2d(n, groups, cpg, fpg, h, w, k, stride, padding, bias, seed):
    rng = np.random.default_rng(seed)
    c, f = groups * cpg, groups * fpg
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((f, cpg, k, k))
    b = rng.standard_normal(f) if bias else None

    def forward(x, wt, *maybe_b):
        return F.conv2d_forward(x, wt, maybe_b[0] if maybe_b else None, stride, padding, groups)

    def backward(dout, cache):
        grads = F.conv2d_backward(dout, cache)
        return grads if bias else grads[:2]

    errors = check_gradients(forward, backward, [x, wt] + ([b] if bias else []))
    assert max(errors) < TOL, errors


@FAST
@given(shape=st.sampled_from([(5, 3), (3, 2, 4, 5), (4, 3, 2, 2)]), training=st.booleans(), seed=st.integers(0, 999))
def test_batchnorm(shape, training, seed):
    # (With only 2 values per channel, training-mode BN outputs are always +-1: dx is exactly 0 and
    # a relative error would measure only rounding noise, so every shape here has >= 3.)
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.random(c) + 0.5

    def forward(x, gamma, beta):
        # fresh copies: the running statistics are updated in place on every call
        return F.batchnorm_forward(x, gamma, beta, mean.copy(), var.copy(), training)

    errors = check_gradients(forward, F.batchnorm_backward, [x, gamma, beta])
    assert max(errors) < TOL, errors


@pytest.mark.parametrize("op", ["relu", "leaky_relu", "tanh"])
def test_activations(op, rng):
    x = away_from_zero(rng, (3, 4, 5))
    if op == "relu":
        errors = check_gradients(F.relu_forward, F.relu_backward, [x])
    elif op == "tanh":
        errors = check_gradients(F.tanh_forward, F.tanh_backward, [x * 2])
    else:
        errors = check_gradients(lambda x: F.leaky_relu_forward(x, 0.2), F.leaky_relu_backward, [x])
    assert max(errors) < TOL


@FAST
@given(
    h=st.integers(3, 8),
    w=st.integers(3, 8),
    k=st.integers(1, 3),
    stride=st.sampled_from([None, 1, 2, 3]),
    seed=st.integers(0, 999),
)
def test_pools(h, w, k, stride, seed):
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, (2, 2, h, w))
    for fwd, bwd in [(F.maxpool2d_forward, F.maxpool2d_backward), (F.avgpool2d_forward, F.avgpool2d_backward)]:
        errors = check_gradients(lambda x: fwd(x, k, stride), bwd, [x])
        assert max(errors) < TOL, (fwd.__name__, errors)


@FAST
@given(h=st.integers(1, 9), w=st.integers(1, 9), oh=st.integers(1, 4), ow=st.integers(1, 4), seed=st.integers(0, 999))
def test_adaptive_avgpool(h, w, oh, ow, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, h, w))
    errors = check_gradients(lambda x: F.adaptive_avgpool2d_forward(x, (oh, ow)), F.adaptive_avgpool2d_backward, [x])
    assert max(errors) < TOL, errors


def test_flatten_and_dropout(rng):
    x = rng.standard_normal((3, 2, 2, 2))
    assert max(check_gradients(F.flatten_forward, F.flatten_backward, [x])) < TOL
    # a fresh generator with the same seed per call gives the same mask, so the op is a fixed function
    errors = check_gradients(
        lambda x: F.dropout_forward(x, 0.4, True, np.random.default_rng(7)), F.dropout_backward, [x]
    )
    assert max(errors) < TOL


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(smoothing, rng):
    logits = rng.standard_normal((5, 4)) * 3
    y = np.array([0, 3, 1, 1, 2])

    def forward(z):
        loss, dz = F.softmax_cross_entropy(z, y, smoothing)
        return np.array(loss), dz

    errors = check_gradients(forward, lambda dout, dz: dz * dout, [logits])
    assert max(errors) < TOL


def test_mse_loss(rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, dpred = F.mse_loss(pred, target)
    numeric = numerical_gradient(lambda p: np.array(F.mse_loss(p, target)[0]), pred.copy(), None)
    assert rel_error(dpred, numeric) < TOL
    assert loss == pytest.approx(np.mean((pred - target) ** 2))


def test_sigmoid_binary_cross_entropy(rng):
    """Against the formula written out, and numerically; stable for large logits."""
    logits = rng.standard_normal((5, 4)) * 3
    y = np.array([0, 3, 1, 1, 2])
    loss, dz = F.sigmoid_binary_cross_entropy(logits, y)
    p, t = 1 / (1 + np.exp(-logits)), np.eye(4)[y]
    assert loss == pytest.approx(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)), rel=1e-12)
    numeric = numerical_gradient(lambda z: np.array(F.sigmoid_binary_cross_entropy(z, y)[0]), logits.copy(), None)
    assert rel_error(dz, numeric) < TOL
    big, _ = F.sigmoid_binary_cross_entropy(np.array([[800.0, -800.0]]), np.array([1]))
    assert big == pytest.approx(800.0)  # (800 on the wrong class + 800 on the right one) / 2 elements
