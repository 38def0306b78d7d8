"""Fast ops against the naive loop versions (and, for conv, the portable im2col against the strided one)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydgl import functional as F
from tinydgl.ops.conv import _pad_channels_last

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 4]),
    cpg=st.integers(1, 3),
    fpg=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    seed=st.integers(0, 9999),
)
def test_conv2d_matches_naive(n, groups, cpg, fpg, h, w, k, stride, padding, seed):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, groups * cpg, h, w))
    wt = rng.standard_normal((groups * fpg, cpg, k, k))
    b = rng.standard_normal(groups * fpg)
    out, cache = F.conv2d_forward(x, wt, b, stride, padding, groups)
    ref, ref_cache = F.conv2d_forward_naive(x, wt, b, stride, padding, groups)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(F.conv2d_backward(dout, cache), F.conv2d_backward_naive(dout, ref_cache)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(
    groups=st.sampled_from([1, 3]),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    seed=st.integers(0, 999),
)
def test_im2col_portable_equals_strided(groups, k, stride, padding, seed):
    x = np.random.default_rng(seed).standard_normal((2, 6, 5, 7))
    x_pad = _pad_channels_last(x, padding)
    fast = F.im2col(x_pad, k, k, stride, groups, portable=False)
    portable = F.im2col(x_pad, k, k, stride, groups, portable=True)
    np.testing.assert_array_equal(fast, portable)


def test_conv_forward_portable_flag_gives_same_result(rng):
    x, w, b = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    a, _ = F.conv2d_forward(x, w, b, 2, 1, 2, portable=True)
    c, _ = F.conv2d_forward(x, w, b, 2, 1, 2, portable=False)
    np.testing.assert_array_equal(a, c)


def test_col2im_is_the_adjoint_of_im2col(rng):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: the defining property of the backward pass."""
    x_pad = rng.standard_normal((2, 7, 6, 4))
    cols = F.im2col(x_pad, 3, 2, 2, groups=2)
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x_pad * F.col2im(c, x_pad.shape, 3, 2, 2, groups=2))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@SETTINGS
@given(
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    k=st.integers(1, 3),
    stride=st.sampled_from([None, 1, 2, 3]),
    seed=st.integers(0, 999),
)
def test_pools_match_naive(h, w, k, stride, seed):
    if k > min(h, w):
        return
    rng = np.random.default_rng(seed)
    # integer values make ties common: both versions must send the gradient to the *first* max
    x = rng.integers(0, 4, size=(2, 3, h, w)).astype(np.float64)
    out, cache = F.maxpool2d_forward(x, k, stride)
    ref, ref_cache = F.maxpool2d_forward_naive(x, k, stride)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        F.maxpool2d_backward(dout, cache), F.maxpool2d_backward_naive(dout, ref_cache), atol=1e-12
    )
    out, cache = F.avgpool2d_forward(x, k, stride)
    ref, ref_cache = F.avgpool2d_forward_naive(x, k, stride)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    np.testing.assert_allclose(
        F.avgpool2d_backward(dout, cache), F.avgpool2d_backward_naive(dout, ref_cache), atol=1e-12
    )


@SETTINGS
@given(h=st.integers(1, 12), w=st.integers(1, 12), oh=st.integers(1, 6), ow=st.integers(1, 6), seed=st.integers(0, 999))
def test_adaptive_avgpool_matches_naive(h, w, oh, ow, seed):
    x = np.random.default_rng(seed).standard_normal((2, 2, h, w))
    out, _ = F.adaptive_avgpool2d_forward(x, (oh, ow))
    np.testing.assert_allclose(out, F.adaptive_avgpool2d_forward_naive(x, (oh, ow)), atol=1e-12)


def test_adaptive_windows_follow_pytorch_rule():
    assert F.adaptive_windows(7, 2) == [(0, 4), (3, 7)]  # the spec's example: overlapping windows
    assert F.adaptive_windows(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert F.adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]


def test_batchnorm_running_statistics_and_eval_mode(rng):
    x = rng.standard_normal((6, 3, 2, 2)) * 3 + 2
    gamma, beta = np.ones(3), np.zeros(3)
    mean, var = np.zeros(3), np.ones(3)
    out, _ = F.batchnorm_forward(x, gamma, beta, mean, var, training=True, momentum=0.1)
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    before = mean.copy()
    out_eval, _ = F.batchnorm_forward(x, gamma, beta, mean, var, training=False)
    np.testing.assert_array_equal(mean, before)  # evaluation never changes the running statistics
    np.testing.assert_allclose(out_eval, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5))


def test_softmax_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [3e4, 3e4, 0.0]])
    p = F.softmax(logits)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-12)
    loss, d = F.softmax_cross_entropy(logits, np.array([2, 0]))
    assert np.isfinite(loss) and loss == pytest.approx((2000 + np.log(2)) / 2)
    assert np.all(np.isfinite(d))


def test_cross_entropy_matches_the_definition(rng):
    logits, y = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loss, d = F.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(4), y])))
    target = np.eye(5)[y] * 0.8 + 0.2 / 5
    loss_s, d_s = F.softmax_cross_entropy(logits, y, label_smoothing=0.2)
    assert loss_s == pytest.approx(-np.mean(np.sum(target * np.log(p), axis=1)))
    np.testing.assert_allclose(d_s, (p - target) / 4)


def test_relu_and_leaky_relu_values():
    x = np.array([-2.0, -0.0, 0.5])
    np.testing.assert_array_equal(F.relu_forward(x)[0], [0, 0, 0.5])
    out, cache = F.leaky_relu_forward(x, 0.1)
    np.testing.assert_allclose(out, [-0.2, 0, 0.5])
    np.testing.assert_allclose(F.leaky_relu_backward(np.ones(3), cache), [0.1, 0.1, 1])


def test_dropout_keeps_expectation_and_is_identity_in_eval(rng):
    x = np.ones((200, 100))
    out, cache = F.dropout_forward(x, 0.3, True, np.random.default_rng(0))
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert out.mean() == pytest.approx(1.0, abs=0.02)
    same, _ = F.dropout_forward(x, 0.3, False, np.random.default_rng(0))
    assert same is x


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: F.conv2d_forward(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3))), "input channels"),
        (lambda: F.conv2d_forward(np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3)), groups=3), "groups=3"),
        (lambda: F.conv2d_forward(np.zeros((1, 3, 2, 2)), np.zeros((4, 3, 3, 3))), "larger than"),
        (lambda: F.linear_forward(np.zeros((2, 3)), np.zeros((4, 5))), "linear_forward expects"),
        (lambda: F.maxpool2d_forward(np.zeros((1, 1, 2, 2)), 3), "does not fit"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(3, dtype=int)), "labels"),
        (lambda: F.batchnorm_forward(np.zeros((1, 3)), np.ones(3), np.zeros(3), None, None, True), "batch size"),
    ],
)
def test_bad_inputs_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_torch_oracle_conv_bn_pool():
    """Optional: the same ops in PyTorch (skipped when torch is not installed)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 7))
    w, b = rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    out, _ = F.conv2d_forward(x, w, b, stride=2, padding=1, groups=2)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=2, padding=1, groups=2)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-10)
    pooled, _ = F.adaptive_avgpool2d_forward(x, (2, 3))
    np.testing.assert_allclose(
        pooled, torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), (2, 3)).numpy(), atol=1e-12
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_in_workspace_slices_matches_naive(monkeypatch, groups, rng):
    """With a tiny workspace the batch is processed a few images at a time; results must not change."""
    import tinydgl.ops.conv as conv

    monkeypatch.setattr(conv, "WORKSPACE_BYTES", 2000)
    assert len(conv._image_slices(5, 49, 36, 8)) == 5  # one image per slice here
    x, w, b = rng.standard_normal((5, 4, 7, 7)), rng.standard_normal((6, 4 // groups, 3, 3)), rng.standard_normal(6)
    out, cache = F.conv2d_forward(x, w, b, 1, 1, groups)
    ref, ref_cache = F.conv2d_forward_naive(x, w, b, 1, 1, groups)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(F.conv2d_backward(dout, cache), F.conv2d_backward_naive(dout, ref_cache)):
        np.testing.assert_allclose(got, want, atol=1e-12)
