"""Forward-mode derivatives (`*_jvp`) of every op, in float64, on NumPy, the strict array-API backend and the CuPy
stand-in.

Two checks per op, along random directions v (inputs and parameters together) and u (output):
- a central finite difference, (f(theta + eps v) - f(theta - eps v)) / (2 eps), matches J v;
- the JVP is the transpose of the existing backward: <J v, u> = <v, J^T u> to ~1e-10 relative.
"""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.backend import default_rng, to_numpy

BACKENDS = pytest.mark.parametrize("backend_case", ["numpy-float64", "strict-device1", "cupy-standin"], indirect=True)


def _dot(a, b):
    return float(np.sum(to_numpy(a) * to_numpy(b)))


def check_op(case, forward, jvp, backward, inputs, seed=0, eps=1e-6):
    """forward(**arrays) -> (out, cache); jvp(cache, **tangents) -> dout; backward(dout, cache) -> {name: grad}.

    inputs: {name: NumPy array}, the differentiable inputs and parameters."""
    rng = np.random.default_rng(seed)
    put = {k: case.put(v) for k, v in inputs.items()}
    directions = {k: rng.standard_normal(v.shape) for k, v in inputs.items()}
    with case.use():
        out, cache = forward(**put)
        dout = jvp(cache, **{k: case.put(v) for k, v in directions.items()})
        case.check_device(dout)
        assert tuple(dout.shape) == tuple(out.shape)
        plus = forward(**{k: case.put(inputs[k] + eps * directions[k]) for k in inputs})[0]
        minus = forward(**{k: case.put(inputs[k] - eps * directions[k]) for k in inputs})[0]
        finite_difference = (to_numpy(plus) - to_numpy(minus)) / (2 * eps)
        np.testing.assert_allclose(to_numpy(dout), finite_difference, rtol=1e-5, atol=1e-7)
        u = rng.standard_normal(tuple(out.shape))
        grads = backward(case.put(u), cache)
        forward_side = _dot(dout, u)
        backward_side = sum(_dot(grads[k], directions[k]) for k in inputs)
        assert abs(forward_side - backward_side) <= 1e-10 * (abs(forward_side) + abs(backward_side) + 1e-12)


@BACKENDS
@pytest.mark.parametrize("bias", [True, False])
def test_linear_jvp(backend_case, bias):
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((5, 7)), "w": rng.standard_normal((7, 3))}
    if bias:
        inputs["b"] = rng.standard_normal(3)

    def backward(dout, cache):
        dx, dw, db = F.linear_backward(dout, cache)
        return {"x": dx, "w": dw, "b": db}

    check_op(
        backend_case,
        lambda x, w, b=None: F.linear_forward(x, w, b),
        lambda cache, x, w, b=None: F.linear_jvp(cache, x, w, b),
        backward,
        inputs,
    )


@BACKENDS
@pytest.mark.parametrize("stride, padding, groups", [(1, 0, 1), (2, 1, 1), (1, 1, 3), (2, 2, 3)])
def test_conv2d_jvp(backend_case, stride, padding, groups):
    rng = np.random.default_rng(2)
    inputs = {
        "x": rng.standard_normal((2, 6, 7, 5)),
        "w": rng.standard_normal((9, 6 // groups, 3, 2)),
        "b": rng.standard_normal(9),
    }

    def forward(x, w, b):
        return F.conv2d_forward(x, w, b, stride, padding, groups)

    def backward(dout, cache):
        dx, dw, db = F.conv2d_backward(dout, cache)
        return {"x": dx, "w": dw, "b": db}

    check_op(backend_case, forward, lambda cache, x, w, b: F.conv2d_jvp(cache, x, w, b), backward, inputs)


@BACKENDS
@pytest.mark.parametrize("moving", ["x", "w", "b"])
def test_linear_and_conv_jvp_with_one_tangent(backend_case, moving):
    """Tangents left out (None) do not move: the JVP with one tangent is the sum's matching term."""
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    arrays = {"x": x, "w": w, "b": b}
    tangent = {k: rng.standard_normal(v.shape) for k, v in arrays.items()}
    with backend_case.use():
        put = {k: backend_case.put(v) for k, v in arrays.items()}
        _, cache = F.conv2d_forward(put["x"], put["w"], put["b"], 1, 1, 2)
        one = F.conv2d_jvp(cache, **{"d" + moving: backend_case.put(tangent[moving])})
        zero = {k: backend_case.put(v if k == moving else 0 * v) for k, v in tangent.items()}
        full = F.conv2d_jvp(cache, zero["x"], zero["w"], zero["b"])
        np.testing.assert_allclose(to_numpy(one), to_numpy(full), rtol=1e-12, atol=1e-12)
        assert F.conv2d_jvp(cache) is None
        xl, wl, dxl, dwl = (rng.standard_normal(shape) for shape in [(2, 4), (4, 6), (2, 4), (4, 6)])
        _, cache = F.linear_forward(backend_case.put(xl), backend_case.put(wl), put["b"])
        linear_tangent = {"x": dxl, "w": dwl, "b": tangent["b"]}[moving]
        one = F.linear_jvp(cache, **{"d" + moving: backend_case.put(linear_tangent)})
        expected = {"x": dxl @ wl, "w": xl @ dwl, "b": np.tile(tangent["b"], (2, 1))}[moving]
        np.testing.assert_allclose(to_numpy(one), expected, rtol=1e-12, atol=1e-12)
        assert F.linear_jvp(cache) is None


@BACKENDS
@pytest.mark.parametrize("training, shape", [(True, (6, 5)), (True, (3, 4, 5, 3)), (False, (3, 4, 5, 3))])
def test_batchnorm_jvp(backend_case, training, shape):
    rng = np.random.default_rng(4)
    c = shape[1]
    inputs = {"x": rng.standard_normal(shape) * 2 + 1, "gamma": rng.standard_normal(c), "beta": rng.standard_normal(c)}
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def forward(x, gamma, beta):
        stats = (None, None) if training else (backend_case.put(running_mean), backend_case.put(running_var))
        return F.batchnorm_forward(x, gamma, beta, *stats, training=training)

    def backward(dout, cache):
        dx, dgamma, dbeta = F.batchnorm_backward(dout, cache)
        return {"x": dx, "gamma": dgamma, "beta": dbeta}

    check_op(
        backend_case, forward, lambda cache, x, gamma, beta: F.batchnorm_jvp(cache, x, gamma, beta), backward, inputs
    )


ELEMENTWISE = {
    "relu": (F.relu_forward, F.relu_jvp, F.relu_backward),
    "leaky_relu": (lambda x: F.leaky_relu_forward(x, 0.1), F.leaky_relu_jvp, F.leaky_relu_backward),
    "leaky_relu_steep": (lambda x: F.leaky_relu_forward(x, 1.5), F.leaky_relu_jvp, F.leaky_relu_backward),
    "tanh": (F.tanh_forward, F.tanh_jvp, F.tanh_backward),
    "flatten": (F.flatten_forward, lambda cache, x: F.flatten_jvp(x), F.flatten_backward),
    "maxpool": (lambda x: F.maxpool2d_forward(x, 2), F.maxpool2d_jvp, F.maxpool2d_backward),
    "maxpool_overlap": (lambda x: F.maxpool2d_forward(x, 3, 2), F.maxpool2d_jvp, F.maxpool2d_backward),
    "avgpool": (lambda x: F.avgpool2d_forward(x, 2), F.avgpool2d_jvp, F.avgpool2d_backward),
    "avgpool_overlap": (lambda x: F.avgpool2d_forward(x, (3, 2), 1), F.avgpool2d_jvp, F.avgpool2d_backward),
    "adaptive_avgpool": (
        lambda x: F.adaptive_avgpool2d_forward(x, (2, 3)),
        F.adaptive_avgpool2d_jvp,
        F.adaptive_avgpool2d_backward,
    ),
    "dropout": (lambda x: F.dropout_forward(x, 0.4, True, default_rng(5)), F.dropout_jvp, F.dropout_backward),
    "dropout_eval": (lambda x: F.dropout_forward(x, 0.4, False, default_rng(5)), F.dropout_jvp, F.dropout_backward),
}
ROWS = {
    "l2_normalize": (F.l2_normalize_forward, F.l2_normalize_jvp, F.l2_normalize_backward),
    "length_normalize": (F.length_normalize_forward, F.length_normalize_jvp, F.length_normalize_backward),
}


@BACKENDS
@pytest.mark.parametrize("name", list(ELEMENTWISE) + list(ROWS))
def test_one_input_op_jvp(backend_case, name):
    """Ops with one input and no parameters: activations, pooling, dropout with its mask, flatten, and the
    local heads' normalisations."""
    forward, jvp, backward = {**ELEMENTWISE, **ROWS}[name]
    shape = (4, 9) if name in ROWS else (2, 3, 7, 5)
    x = np.random.default_rng(6).standard_normal(shape)
    check_op(
        backend_case,
        lambda x: forward(x),
        lambda cache, x: jvp(cache, x),
        lambda dout, cache: {"x": backward(dout, cache)},
        {"x": x},
    )


@BACKENDS
@pytest.mark.parametrize("shape", [(5, 7), (4, 5, 3, 3), (4, 3, 2, 2)], ids=["rows", "channel-std", "flattened"])
def test_similarity_matrix_jvp(backend_case, shape):
    """PredSim's cosine-similarity matrix: rows (N, D); feature maps summarised by each channel's std (C > 3,
    H > 1); other feature maps flattened."""
    x = np.random.default_rng(11).standard_normal(shape)
    check_op(
        backend_case,
        F.similarity_matrix_forward,
        lambda cache, x: F.similarity_matrix_jvp(cache, x),
        lambda dout, cache: {"x": F.similarity_matrix_backward(dout, cache)},
        {"x": x},
    )


LOSSES = {
    "softmax_cross_entropy": (lambda z, y: F.softmax_cross_entropy(z, y), F.softmax_cross_entropy_jvp),
    "smoothed_cross_entropy": (
        lambda z, y: F.softmax_cross_entropy(z, y, 0.1),
        lambda z, y, dz: F.softmax_cross_entropy_jvp(z, y, dz, 0.1),
    ),
    "sigmoid_bce": (F.sigmoid_binary_cross_entropy, F.sigmoid_binary_cross_entropy_jvp),
}


@BACKENDS
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_jvp(backend_case, name):
    """A loss's tangent along dlogits: its finite difference, and <dloss/dlogits, dlogits> from the loss's gradient."""
    loss_fn, jvp = LOSSES[name]
    rng = np.random.default_rng(7)
    logits, dlogits = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    y = backend_case.put(np.array([0, 3, 1, 1, 2]))
    eps = 1e-6
    with backend_case.use():
        # losses are device scalars (read back only where a number is needed): float() reads each here
        loss, dloss = (float(v) for v in jvp(backend_case.put(logits), y, backend_case.put(dlogits)))
        assert loss == float(loss_fn(backend_case.put(logits), y)[0])
        plus = float(loss_fn(backend_case.put(logits + eps * dlogits), y)[0])
        minus = float(loss_fn(backend_case.put(logits - eps * dlogits), y)[0])
        assert dloss == pytest.approx((plus - minus) / (2 * eps), rel=1e-6)
        gradient = loss_fn(backend_case.put(logits), y)[1]
        assert dloss == pytest.approx(_dot(gradient, dlogits), rel=1e-10)


@BACKENDS
def test_other_loss_and_softmax_jvps(backend_case):
    rng = np.random.default_rng(8)
    a, b, d = (rng.standard_normal((3, 4)) for _ in range(3))
    t = rng.uniform(0, 1, (3, 4))
    eps = 1e-6
    with backend_case.use():
        put = backend_case.put
        for loss_fn, jvp, target in [
            (F.mse_loss, F.mse_loss_jvp, b),
            (F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_jvp, t),
        ]:
            dloss = float(jvp(put(a), put(target), put(d))[1])
            fd = (loss_fn(put(a + eps * d), put(target))[0] - loss_fn(put(a - eps * d), put(target))[0]) / (2 * eps)
            assert dloss == pytest.approx(float(fd), rel=1e-6)
        for fn, jvp in [(F.softmax, F.softmax_jvp), (F.log_softmax, F.log_softmax_jvp)]:
            fd = (to_numpy(fn(put(a + eps * d))) - to_numpy(fn(put(a - eps * d)))) / (2 * eps)
            np.testing.assert_allclose(to_numpy(jvp(put(a), put(d))), fd, rtol=1e-6, atol=1e-9)


def _layer_stacks():
    """Small float64 networks covering every layer with a jvp: the models' blocks, a DGL head, an LLS head."""
    from tinydgl.models import build_model
    from tinydgl.nn import (
        AvgPool2d,
        ClassScale,
        Dropout,
        FixedLinear,
        L2Normalize,
        LeakyReLU,
        LengthNormalize,
        PooledLinear,
        Scale,
        Sequential,
        Tanh,
    )
    from tinydgl.trainers.heads import aux_head

    rng = np.random.default_rng(9)
    cnn = build_model("cnn", in_channels=2, image_size=8, num_classes=3, dtype="float64")
    mlp = build_model("mlp", in_channels=1, image_size=5, num_classes=4, hidden=(6, 5), dtype="float64")
    head = aux_head("mlp", (3, 5, 5), 4, dtype="float64")
    lls = Sequential(
        AvgPool2d(2, 1),
        *aux_head("linear", (3, 4, 4), 6, dtype="float64").layers,
        LeakyReLU(0.2),
        Tanh(),
        Dropout(0.3, rng=default_rng(1)),
        L2Normalize(),
        LengthNormalize(),
        FixedLinear(F.softmax(np.asarray(rng.standard_normal((5, 6)))) * 1.0),
        PooledLinear(rng.standard_normal((4, 7)), rng.uniform(0, 1, (7, 5))),
        ClassScale(rng.uniform(0.5, 2, 4)),
        Scale(0.5),
    )
    return {
        "cnn": (cnn, (3, 2, 8, 8)),
        "mlp": (mlp, (4, 1, 5, 5)),
        "dgl-head": (head, (4, 3, 5, 5)),
        "lls-head": (lls, (3, 3, 5, 5)),
    }


@pytest.mark.parametrize("name", ["cnn", "mlp", "dgl-head", "lls-head"])
def test_module_jvp_is_the_transpose_of_backward(name):
    """`Module.jvp` composes the ops' JVPs through a network: with every parameter and the input moving,
    <J v, u> equals <v, J^T u> from `backward`, and J v matches a finite difference of the forward."""
    model, shape = _layer_stacks()[name]
    rng = np.random.default_rng(10)
    params = model.parameters()
    x, dx = rng.standard_normal(shape), rng.standard_normal(shape)
    for p in params:
        p.tangent = rng.standard_normal(p.shape)
    out = model.forward(x)
    dout = model.jvp(dx)
    dout_again = model.jvp(dx)  # jvp leaves the cache for more directions and for backward
    np.testing.assert_array_equal(dout, dout_again)
    u = rng.standard_normal(out.shape)
    grad_x = model.backward(u)
    backward_side = np.sum(grad_x * dx) + sum(np.sum(p.grad * p.tangent) for p in params)
    assert np.sum(dout * u) == pytest.approx(backward_side, rel=1e-10)

    eps = 1e-6
    data = [p.data for p in params]
    outs = []
    for sign in (1, -1):
        for p, d in zip(params, data):
            p.data = d + sign * eps * p.tangent
        for layer in _walk(model):
            if hasattr(layer, "rng"):
                layer.rng = default_rng(1)  # the same dropout mask as the first pass
        outs.append(model.forward(x + sign * eps * dx))
        model.forget()
    np.testing.assert_allclose(dout, (outs[0] - outs[1]) / (2 * eps), rtol=1e-5, atol=1e-7)


def _walk(module):
    yield module
    for child in module.children():
        yield from _walk(child)
