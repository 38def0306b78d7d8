"""Every op, every model's forward/backward and an optimizer step on every backend case (see conftest):
NumPy float64 / float32 and array_api_strict on a non-default device. Results must match NumPy float64
and stay on the case's device."""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.backend import to_numpy
from tinydgl.models import MODELS, build_model
from tinydgl.optim import build_optimizer


def _ops(rng):
    """(name, numpy inputs, forward(*inputs) -> (out, cache), backward(dout, cache) -> grads)."""
    x4 = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    g, be = rng.standard_normal(4), rng.standard_normal(4)
    return [
        (
            "linear",
            [rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)],
            F.linear_forward,
            F.linear_backward,
        ),
        (
            "conv2d",
            [x4, w, b],
            lambda x, w, b: F.conv2d_forward(x, w, b, stride=2, padding=1, groups=2),
            F.conv2d_backward,
        ),
        (
            "conv2d_1x1",
            [x4, rng.standard_normal((3, 4, 1, 1)), rng.standard_normal(3)],
            F.conv2d_forward,
            F.conv2d_backward,
        ),
        ("maxpool", [x4], lambda x: F.maxpool2d_forward(x, 3, 2), F.maxpool2d_backward),
        ("avgpool", [x4], lambda x: F.avgpool2d_forward(x, 2), F.avgpool2d_backward),
        (
            "adaptive_avgpool",
            [x4[:, :, :5, :]],
            lambda x: F.adaptive_avgpool2d_forward(x, (2, 3)),
            F.adaptive_avgpool2d_backward,
        ),
        ("relu", [x4], F.relu_forward, F.relu_backward),
        ("leaky_relu", [x4], F.leaky_relu_forward, F.leaky_relu_backward),
        ("flatten", [x4], F.flatten_forward, F.flatten_backward),
        (
            "batchnorm2d",
            [x4, g, be],
            lambda x, g, b: F.batchnorm_forward(x, g, b, None, None, True),
            F.batchnorm_backward,
        ),
        ("dropout", [x4], lambda x: F.dropout_forward(x, 0.5, True, np.random.default_rng(0)), F.dropout_backward),
    ]


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


@pytest.mark.parametrize("index", range(11))
def test_op_on_backend(backend_case, index):
    rng = np.random.default_rng(index)
    name, inputs, forward, backward = _ops(rng)[index]
    ref_out, ref_cache = forward(*inputs)
    dout = rng.standard_normal(ref_out.shape)
    ref_grads = _as_tuple(backward(dout, ref_cache))

    out, cache = forward(*[backend_case.put(a) for a in inputs])
    grads = _as_tuple(backward(backend_case.put(dout), cache))
    backend_case.check_device(out)
    np.testing.assert_allclose(to_numpy(out), ref_out, rtol=backend_case.rtol, atol=backend_case.rtol, err_msg=name)
    for got, want in zip(grads, ref_grads):
        backend_case.check_device(got)
        np.testing.assert_allclose(
            to_numpy(got), want, rtol=backend_case.rtol, atol=backend_case.rtol * 10, err_msg=name
        )


def test_losses_on_backend(backend_case, rng):
    logits, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    ref_loss, ref_d = F.softmax_cross_entropy(logits, y, 0.1)
    loss, d = F.softmax_cross_entropy(backend_case.put(logits), backend_case.put(y), 0.1)
    backend_case.check_device(d)
    assert float(loss) == pytest.approx(ref_loss, rel=backend_case.rtol * 10)
    np.testing.assert_allclose(to_numpy(d), ref_d, rtol=backend_case.rtol, atol=backend_case.rtol)
    np.testing.assert_allclose(to_numpy(F.softmax(backend_case.put(logits))), F.softmax(logits), rtol=backend_case.rtol)
    mse, dm = F.mse_loss(backend_case.put(logits), backend_case.put(logits * 0))
    assert float(mse) == pytest.approx(np.mean(logits**2), rel=backend_case.rtol * 10)


# Small inputs keep the deep models quick; mobilenet and vgg8 need a few pixels to survive their strides.
# MobileNet halves the image five times: at 32x32 its last blocks see 1x1 maps, so batch norm normalises
# 4 numbers per channel (batch 4), an ill-conditioned step that magnified float32 rounding past the test's
# tolerance on OpenBLAS's Haswell kernel (AMD EPYC) though not on SkylakeX. 64x64 leaves 2x2 maps.
MODEL_INPUTS = {
    "mlp": (1, 8),
    "cnn": (1, 8),
    "smallconv": (1, 8),
    "smallconvl": (1, 8),
    "vgg8": (3, 8),
    "mobilenet_v1": (3, 64),
    "dni_cnn": (3, 27),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_step_on_backend(backend_case, name):
    """A full training step (forward, loss, backward, optimizer step) matches NumPy float64."""
    # SGD with momentum, not Adam: Adam's first step is lr * g / |g|, so for a gradient that is rounding
    # noise around 0 (a conv bias followed by batch norm has exactly zero gradient) it amplifies the noise
    # into a full step of either sign. Adam itself is checked in test_optim.
    optimizer = "sgd"
    channels, size = MODEL_INPUTS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, channels, size, size))
    y = np.array([0, 1, 2, 3])

    def step(put, dtype):
        model = build_model(name, channels, size, num_classes=5, seed=3, dtype=dtype)
        opt = build_optimizer(optimizer, model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-3)
        logits = model.forward(put(x))
        loss, dlogits = F.softmax_cross_entropy(logits, put(y))
        dx = model.backward(dlogits)
        opt.step()
        return logits, dx, model

    ref_logits, ref_dx, ref_model = step(lambda a: a, "float64")
    with backend_case.use():
        logits, dx, model = step(backend_case.put, backend_case.dtype)
    backend_case.check_device(logits)
    backend_case.check_device(dx)
    tol = backend_case.rtol * (50 if backend_case.dtype == "float32" else 1)
    np.testing.assert_allclose(to_numpy(logits), ref_logits, rtol=tol, atol=tol)
    scale = np.abs(to_numpy(ref_dx)).max()
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=tol, atol=tol * scale)
    ref_state, state = ref_model.state_dict(), model.state_dict()
    for key in ref_state:
        np.testing.assert_allclose(state[key], ref_state[key], rtol=tol, atol=tol, err_msg=key)
    for p in model.parameters():
        backend_case.check_device(p.data)


@pytest.mark.gpu
def test_ops_on_gpu(gpu_case):
    rng = np.random.default_rng(0)
    for name, inputs, forward, backward in _ops(rng):
        ref_out, ref_cache = forward(*inputs)
        dout = rng.standard_normal(ref_out.shape)
        out, cache = forward(*[gpu_case.put(a) for a in inputs])
        grads = _as_tuple(backward(gpu_case.put(dout), cache))
        np.testing.assert_allclose(to_numpy(out), ref_out, rtol=1e-3, atol=1e-3, err_msg=name)
        for got, want in zip(grads, _as_tuple(backward(dout, ref_cache))):
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-3, atol=1e-3, err_msg=name)


@pytest.mark.gpu
def test_model_step_on_gpu(gpu_case):
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28))
    with gpu_case.use():
        model = build_model("smallconv", 1, 28, seed=0)
        logits = model.forward(gpu_case.put(x))
        _, d = F.softmax_cross_entropy(logits, gpu_case.put(np.arange(4)))
        model.backward(d)
        build_optimizer("adam", model.parameters(), lr=1e-3).step()
    ref = build_model("smallconv", 1, 28, seed=0).forward(x.astype(np.float32))
    np.testing.assert_allclose(to_numpy(logits), ref, rtol=1e-3, atol=1e-3)
