"""The tests that grade the assignments, task by task (see tinydgl/course/ and assignments/*.md).

Each test is marked with its task, `@task("a1-relu-backward")` -> marker `task_a1_relu_backward`, so
`python -m pytest -m task_a1_relu_backward` checks one task. A test fails on the task's stub and passes on
the solution; where it can, it calls only the task's own code, and references come from code no task
stubs (the fast ops, hand-written NumPy), so one task's mistake does not fail another task's tests.
"""

import copy

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.course import TASKS_BY_ID, assignment_marker, marker_name
from tinydgl.gradcheck import check_gradients, numerical_gradient, rel_error
from tinydgl.models import build_model
from tinydgl.nn import Sequential
from tinydgl.optim import SGD
from tinydgl.trainers import build_trainer
from tinydgl.trainers.backprop import BackpropTrainer
from tinydgl.trainers.dni import DNITrainer
from tinydgl.trainers.heads import aux_head
from tinydgl.trainers.lls import lls_basis
from tinydgl.trainers.local import LocalModule, split_blocks
from trainer_checks import RecordGradients as _RecordGradients

TOL = 1e-7


def task(task_id):
    """Mark a test as grading `task_id` (and its assignment)."""
    assert task_id in TASKS_BY_ID, f"unknown task {task_id!r}"

    def mark(test):
        test = getattr(pytest.mark, marker_name(task_id))(test)
        return getattr(pytest.mark, assignment_marker(TASKS_BY_ID[task_id].assignment))(test)

    return mark


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- assignment 1: layers and their gradients ----------------------------------------------------------


@task("a1-linear-backward")
@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_matches_numerical_gradients(bias):
    rng = _rng(1)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    if bias:
        errors = check_gradients(F.linear_forward, F.linear_backward, [x, w, b])
    else:
        errors = check_gradients(
            lambda x, w: F.linear_forward(x, w, None), lambda d, c: F.linear_backward(d, c)[:2], [x, w]
        )
    assert max(errors) < TOL, errors


@task("a1-linear-backward")
def test_linear_backward_shapes_and_options():
    rng = _rng(2)
    x, w = rng.standard_normal((6, 4)), rng.standard_normal((4, 2))
    _, cache = F.linear_forward(x, w, None)
    dout = rng.standard_normal((6, 2))
    dx, dw, db = F.linear_backward(dout, cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db is None
    dx_none, dw_again, _ = F.linear_backward(dout, cache, compute_dx=False)
    assert dx_none is None
    np.testing.assert_allclose(dw_again, dw)


@task("a1-relu-backward")
def test_relu_backward_matches_numerical_gradient():
    x = _rng(3).standard_normal((3, 4, 5))
    x = np.where(np.abs(x) < 1e-2, 0.5, x)  # away from the kink at 0
    assert max(check_gradients(F.relu_forward, F.relu_backward, [x])) < TOL


@task("a1-relu-backward")
def test_relu_backward_at_zero_and_dtype():
    x = np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)
    _, cache = F.relu_forward(x)
    dx = F.relu_backward(np.array([[5.0, 5.0, 5.0]], dtype=np.float32), cache)
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 5.0]])


@task("a1-softmax-ce")
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_cross_entropy_value_and_gradient(smoothing):
    rng = _rng(4)
    logits, y = rng.standard_normal((5, 4)) * 3, np.array([0, 3, 1, 1, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = np.eye(4)[y] * (1 - smoothing) + smoothing / 4
    loss, dlogits = F.softmax_cross_entropy(logits, y, smoothing)
    assert isinstance(loss, float)
    assert loss == pytest.approx(-np.mean(np.sum(target * np.log(p), axis=1)), rel=1e-10)
    np.testing.assert_allclose(dlogits, (p - target) / 5, atol=1e-12)
    numeric = numerical_gradient(lambda z: np.array(F.softmax_cross_entropy(z, y, smoothing)[0]), logits.copy(), None)
    assert rel_error(dlogits, numeric) < TOL


@task("a1-softmax-ce")
def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss, d = F.softmax_cross_entropy(np.array([[1000.0, 0.0, -1000.0], [3e4, 3e4, 0.0]]), np.array([2, 0]))
    assert np.isfinite(loss) and loss == pytest.approx((2000 + np.log(2)) / 2)
    assert np.all(np.isfinite(d))


CONV_CASES = [  # (n, c, f, h, w, k, stride, padding, groups, bias)
    (2, 3, 4, 5, 5, 3, 1, 1, 1, True),
    (1, 4, 6, 6, 7, 3, 2, 0, 2, False),
    (2, 2, 2, 4, 4, 2, 1, 2, 2, True),
    (1, 1, 3, 5, 4, 1, 3, 1, 1, True),
]


def _conv_inputs(case, seed):
    n, c, f, h, w, k, stride, padding, groups, bias = case
    rng = _rng(seed)
    x, wt = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c // groups, k, k))
    return x, wt, (rng.standard_normal(f) if bias else None), stride, padding, groups


@task("a1-conv-naive-forward")
@pytest.mark.parametrize("case", CONV_CASES)
def test_naive_conv_forward_matches_the_fast_conv(case):
    x, w, b, stride, padding, groups = _conv_inputs(case, 5)
    out, cache = F.conv2d_forward_naive(x, w, b, stride, padding, groups)
    ref, _ = F.conv2d_forward(x, w, b, stride, padding, groups)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    assert cache[0] is x and cache[1] is w and tuple(cache[3:]) == (stride, padding, groups)


@task("a1-conv-naive-backward")
@pytest.mark.parametrize("case", CONV_CASES)
def test_naive_conv_backward_matches_the_fast_conv(case):
    x, w, b, stride, padding, groups = _conv_inputs(case, 6)
    ref, ref_cache = F.conv2d_forward(x, w, b, stride, padding, groups)
    dout = _rng(7).standard_normal(ref.shape)
    got = F.conv2d_backward_naive(dout, (x, w, b, stride, padding, groups))  # the naive forward's cache
    want = F.conv2d_backward(dout, ref_cache)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        if r is None:
            assert g is None, name
        else:
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=name)


@task("a1-maxpool-naive-backward")
@pytest.mark.parametrize("k, stride", [(2, None), (3, 1), (2, 3)])
def test_naive_maxpool_backward_matches_the_fast_pool(k, stride):
    # small integers: many ties, and both versions must send the gradient to the *first* maximum
    x = _rng(8).integers(0, 4, size=(2, 3, 7, 6)).astype(np.float64)
    out, cache = F.maxpool2d_forward(x, k, stride)
    dout = _rng(9).standard_normal(out.shape)
    got = F.maxpool2d_backward_naive(dout, (x, k, stride or k))
    np.testing.assert_allclose(got, F.maxpool2d_backward(dout, cache), atol=1e-12)


@task("a1-batchnorm-backward")
@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4, 5)])
def test_batchnorm_backward_in_training_mode(shape):
    rng = _rng(10)
    c = shape[1]
    x, gamma, beta = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c)

    def forward(x, gamma, beta):
        return F.batchnorm_forward(x, gamma, beta, np.zeros(c), np.ones(c), training=True)

    errors = check_gradients(forward, F.batchnorm_backward, [x, gamma, beta])
    assert max(errors) < 1e-6, errors


# --- assignment 2: backprop versus synthetic gradients --------------------------------------------------


def _tiny_mlp(seed=3):
    return build_model("mlp", 1, 8, num_classes=5, seed=seed, dtype="float64", hidden=(16, 12))


def _batch(n=8, seed=0):
    rng = _rng(seed)
    return rng.standard_normal((n, 1, 8, 8)), np.arange(n) % 5


def _params(model):
    return [p.data.copy() for p in model.parameters()]


def _backprop_by_hand(model, x, y):
    """Loss and dL/d(output of each block), by the layers' own forward/backward; fills every parameter's grad."""
    h = x
    for block in model.layers:
        h = block.forward(h)
    loss, grad = F.softmax_cross_entropy(h, y)
    output_grads = [grad]
    for block in reversed(model.layers[1:]):
        grad = block.backward(grad)
        output_grads.insert(0, grad)
    model.layers[0].backward(grad, need_input_grad=False)
    return loss, output_grads


def _sgd_step_by_hand(model, lr):
    for p in model.parameters():
        p.data = p.data - lr * p.grad


@task("a2-bp-train-step")
def test_backprop_step_equals_a_step_by_hand():
    x, y = _batch()
    model = _tiny_mlp()
    reference = copy.deepcopy(model)
    loss_ref, _ = _backprop_by_hand(reference, x, y)
    _sgd_step_by_hand(reference, 0.1)
    trainer = BackpropTrainer(model, lambda p: SGD(p, lr=0.1))
    loss = trainer.train_step(x, y)
    assert loss == pytest.approx(loss_ref, abs=1e-12)
    for got, want in zip(_params(model), _params(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@task("a2-bp-train-step")
def test_backprop_step_asks_no_gradient_of_the_data():
    x, y = _batch()
    trainer = BackpropTrainer(_tiny_mlp(), lambda p: SGD(p, lr=0.1))
    asked = []
    for i, block in enumerate(trainer.model.layers):

        def spy(dout, need_input_grad=True, _i=i, _backward=block.backward):
            asked.append((_i, need_input_grad))
            return _backward(dout, need_input_grad=need_input_grad)

        block.backward = spy
    trainer.train_step(x, y)
    assert asked == [(2, True), (1, True), (0, False)], asked


@task("a2-bp-train-step")
def test_backprop_step_takes_the_trainers_output_loss():
    """The loss at the top is `self.output_loss`: feedback alignment's trainers take this step, some with
    sigmoid + binary cross-entropy there."""
    x, y = _batch()
    model = _tiny_mlp()
    h = x
    for block in copy.deepcopy(model).layers:
        h = block.forward(h)
    loss_ref, _ = F.sigmoid_binary_cross_entropy(h, y)
    trainer = BackpropTrainer(model, lambda p: SGD(p, lr=0.1))
    trainer.output_loss = F.sigmoid_binary_cross_entropy
    assert trainer.train_step(x, y) == pytest.approx(loss_ref, abs=1e-12)


@task("a2-mse-loss")
def test_mse_loss_value_and_gradient():
    rng = _rng(11)
    pred, target = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    loss, dpred = F.mse_loss(pred, target)
    assert isinstance(loss, float) and loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-12)
    numeric = numerical_gradient(lambda p: np.array(F.mse_loss(p, target)[0]), pred.copy(), None)
    assert dpred.shape == pred.shape and rel_error(dpred, numeric) < TOL


class _Oracle:
    """A synthesizer that returns the true gradient, in the synthesizers' per-example units (N * dL/dh)."""

    def __init__(self, gradient):
        self.gradient = gradient.shape[0] * gradient

    def forward(self, h, label=None):
        return self.gradient

    def backward(self, dout):
        pass


def _reference_gradient(trainer, i, from_above):
    """DNITrainer._gradient, written again here so that the target task is tested on its own."""
    if i == len(trainer.groups) - 1:
        return trainer._true_gradient
    synthetic = trainer._synthetic[i]
    if from_above is not None:
        synthetic = (1.0 - trainer.bp_lambda) * synthetic + trainer.bp_lambda * from_above
    return (trainer.sg_scale / trainer._batch_size) * synthetic


@task("a2-dni-gradient")
def test_dni_gradient_comes_from_the_loss_at_the_top_and_the_synthesizer_below():
    trainer = DNITrainer(_tiny_mlp(), lambda p: SGD(p, lr=0.1), synthesizer="linear", sg_scale=0.5, bp_lambda=0.25)
    rng = _rng(12)
    true, s0, s1, above = (
        rng.standard_normal((8, 5)),
        rng.standard_normal((8, 16)),
        rng.standard_normal((8, 12)),
        rng.standard_normal((8, 12)),
    )
    trainer._true_gradient, trainer._synthetic, trainer._batch_size = true, [s0, s1], 8
    np.testing.assert_array_equal(trainer._gradient(2, None), true)
    np.testing.assert_allclose(trainer._gradient(0, None), 0.5 / 8 * s0)
    np.testing.assert_allclose(trainer._gradient(1, above), 0.5 / 8 * (0.75 * s1 + 0.25 * above))


@task("a2-dni-gradient")
@task("a2-dni-synthesizer-target")
def test_dni_step_with_oracle_synthesizers_is_a_backprop_step():
    """With synthesizers that know the true gradient, DNI updates every block exactly as backprop does, and
    every synthesizer's target is that true gradient (regression loss zero)."""
    x, y = _batch()
    model = _tiny_mlp()
    reference = copy.deepcopy(model)
    _, output_grads = _backprop_by_hand(copy.deepcopy(model), x, y)
    _backprop_by_hand(reference, x, y)
    _sgd_step_by_hand(reference, 0.1)
    trainer = DNITrainer(model, lambda p: SGD(p, lr=0.1))
    trainer.synthesizers = [_Oracle(g) for g in output_grads[:-1]]
    trainer.train_step(x, y)
    for got, want in zip(_params(model), _params(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert all(loss < 1e-25 for loss in trainer.synthesizer_losses), trainer.synthesizer_losses


@task("a2-dni-synthesizer-target")
@pytest.mark.parametrize("sg_scale", [1.0, 0.5])
def test_dni_targets_are_true_gradients_in_per_example_units(sg_scale):
    x, y = _batch()
    model = _tiny_mlp()
    _, output_grads = _backprop_by_hand(copy.deepcopy(model), x, y)
    trainer = DNITrainer(model, lambda p: SGD(p, lr=1e-30), sg_scale=sg_scale)  # blocks barely move
    trainer._gradient = lambda i, from_above: _reference_gradient(trainer, i, from_above)
    trainer.synthesizers = [_Oracle(g) for g in output_grads[:-1]]
    targets = {}
    trainer._train_synthesizer = lambda i, target: targets.__setitem__(i, target)
    trainer.train_step(x, y)
    assert sorted(targets) == [0, 1]
    np.testing.assert_allclose(targets[1], 8 * output_grads[1], rtol=1e-9, atol=1e-12)  # from the true gradient
    assert rel_error(targets[0], trainer.synthesizers[0].gradient) < 1e-9  # bootstrapped, undone of sg_scale


@task("a2-dni-synthesizer-target")
def test_dni_synthesizers_are_trained_every_step():
    x, y = _batch()
    trainer = DNITrainer(_tiny_mlp(), lambda p: SGD(p, lr=0.1), synthesizer="linear")
    trainer._gradient = lambda i, from_above: _reference_gradient(trainer, i, from_above)
    before = [_params(s) for s in trainer.synthesizers]
    trainer.train_step(x, y)
    assert [o.steps for o in trainer.synth_optimizers] == [1, 1]
    # the lower target is bootstrapped from the top synthesizer, which starts at zero: a zero loss, but a loss
    assert trainer.synthesizer_losses[0] == 0.0 and trainer.synthesizer_losses[1] > 0, trainer.synthesizer_losses
    assert not all(np.array_equal(a, b) for a, b in zip(before[1], _params(trainer.synthesizers[1])))


# --- assignment 3: local learning -------------------------------------------------------------------------


@task("a3-split-blocks")
def test_split_blocks_groups():
    assert split_blocks(5, modules=2) == [[0, 1, 2], [3, 4]]
    assert split_blocks(7, modules=3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_blocks(4) == [[0], [1], [2], [3]]
    assert split_blocks(4, modules=1) == [[0, 1, 2, 3]]
    assert split_blocks(4, boundaries=[1, 3]) == [[0], [1, 2], [3]]
    assert split_blocks(5, boundaries=[4, 2, 2]) == [[0, 1], [2, 3], [4]]


@task("a3-split-blocks")
@pytest.mark.parametrize("options", [{"modules": 9}, {"modules": 0}, {"boundaries": [0, 2]}, {"boundaries": [4]}])
def test_split_blocks_rejects_impossible_requests(options):
    with pytest.raises(ValueError):
        split_blocks(4, **options)
    assert split_blocks(4, boundaries=[2]) == [[0, 1], [2, 3]]  # (and still answers possible ones)


def _local_module(with_head):
    model = _tiny_mlp()
    body = Sequential(*model.layers[:2]) if with_head else Sequential(*model.layers)
    head = aux_head("linear", (12,), 5, seed=1, dtype="float64") if with_head else None
    return LocalModule(body, head, lambda p: SGD(p, lr=0.1))


@task("a3-local-step")
@pytest.mark.parametrize("with_head", [True, False])
def test_local_step_is_a_backprop_step_on_body_and_head(with_head):
    x, y = _batch()
    module = _local_module(with_head)
    reference = copy.deepcopy(module)
    blocks = list(reference.body.layers) + (list(reference.head.layers) if with_head else [])
    h = x
    for block in blocks:
        h = block.forward(h)
    out_ref = reference.body.forward(x) if with_head else h
    loss_ref, grad = F.softmax_cross_entropy(h, y)
    for block in reversed(blocks):
        grad = block.backward(grad)
    params_ref = reference.parameters()
    for p in params_ref:
        p.data = p.data - 0.1 * p.grad
    loss, out = module.step(x, y)
    assert loss == pytest.approx(loss_ref, abs=1e-12)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12)
    for p, q in zip(module.parameters(), params_ref):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-10, atol=1e-12)


@task("a3-local-step")
def test_local_step_sends_no_gradient_to_its_input():
    module = _local_module(with_head=True)
    asked = []
    backward = module.body.backward
    module.body.backward = lambda dout, need_input_grad=True: (
        asked.append(need_input_grad) or backward(dout, need_input_grad)
    )
    module.step(*_batch())
    assert asked == [False]


@task("a3-l2-normalize-backward")
def test_l2_normalize_backward_matches_numerical_gradient():
    x = _rng(13).standard_normal((4, 6))
    assert max(check_gradients(F.l2_normalize_forward, F.l2_normalize_backward, [x])) < TOL


@task("a3-l2-normalize-backward")
def test_l2_normalize_backward_of_a_zero_row():
    x = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    _, cache = F.l2_normalize_forward(x, eps=1e-3)
    dx = F.l2_normalize_backward(np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]), cache)
    np.testing.assert_allclose(dx[0], [1e3, 2e3, 3e3])  # the norm was clipped to eps: a constant denominator
    np.testing.assert_allclose(dx[1], (np.array([1.0, 0, 0]) - 0.6 * np.array([0.6, 0.8, 0])) / 5)


@task("a3-lls-basis")
def test_lls_basis_matches_the_formulas():
    d, c = 37, 10
    t = np.arange(d)
    f = np.linspace(50, 512, c)[:, None]
    np.testing.assert_allclose(lls_basis(c, d, "sin"), np.sin(f * t))
    np.testing.assert_array_equal(lls_basis(c, d, "square"), np.sign(np.sin(f * t)))
    f_cos = np.linspace(100, 512, c)[:, None]
    np.testing.assert_allclose(lls_basis(c, d, "cosine"), np.cos(np.pi * f_cos * (t + 0.5) / d))
    assert lls_basis(c, d).shape == (c, d) and lls_basis(c, d).dtype == np.float64


@task("a3-lls-basis")
def test_lls_random_basis_uses_the_generator():
    a = lls_basis(10, 64, "random", np.random.default_rng(0))
    b = lls_basis(10, 64, "random", np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 64) and 0.07 < a.std() < 0.13
    assert not np.array_equal(a, lls_basis(10, 64, "random", np.random.default_rng(1)))


# --- assignment 4: feedback alignment ---------------------------------------------------------------------


def _tiny_feedback_net(name):
    """A 9-5-6-4 ReLU MLP without batch norm, in float64, and a trainer of the feedback-alignment family for it.
    Blocks: (Flatten, Linear, ReLU), (Linear, ReLU), (Linear)."""
    model = build_model("mlp", 1, 3, 4, seed=0, dtype="float64", hidden=(5, 6), batchnorm=False)
    return model, build_trainer(name, model, _RecordGradients, seed=0)


def _feedback_reference(model, signal_of, feedback):
    """The parameter gradients [dW1, db1, dW2, db2, dW3, db3] when hidden block l is handed signal @ B_l,
    written out in NumPy; `signal_of(e, onehot)` gives the signal from the output error and the labels."""
    rng = _rng(14)
    x, y = rng.standard_normal((7, 1, 3, 3)), np.array([0, 3, 1, 1, 2, 0, 3])
    (w1, b1), (w2, b2), (w3, b3) = [(p[0].data, p[1].data) for p in (block.parameters() for block in model.layers)]
    flat = x.reshape(7, -1)
    a1 = flat @ w1 + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w2 + b2
    h2 = np.maximum(a2, 0)
    z = h2 @ w3 + b3
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(4)[y]
    e = (p - onehot) / 7
    signal = signal_of(e, onehot)
    da1, da2 = (signal @ feedback[0]) * (a1 > 0), (signal @ feedback[1]) * (a2 > 0)
    return (x, y), [flat.T @ da1, da1.sum(0), h1.T @ da2, da2.sum(0), h2.T @ e, e.sum(0)]


@task("a4-dfa-signal")
@pytest.mark.parametrize("name, signal_of", [("dfa", lambda e, onehot: e), ("sdfa", lambda e, onehot: np.sign(e) / 7)])
def test_dfa_step_hands_every_hidden_block_the_projected_error(name, signal_of):
    model, trainer = _tiny_feedback_net(name)
    (x, y), expected = _feedback_reference(model, signal_of, trainer.feedback)
    trainer.train_step(x, y)
    got = trainer.optimizer.grads
    assert len(got) == len(expected)
    for i, (g, want) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-13, err_msg=f"parameter {i}")


@task("a4-dfa-signal")
def test_dfa_step_sends_nothing_to_the_block_below():
    """Each block runs backward once, the classifier first, none computing its input gradient; a hidden
    block's gradient is e @ B_l, with e what the classifier was handed."""
    model, trainer = _tiny_feedback_net("dfa")
    calls = []
    for i, block in enumerate(model.layers):

        def spy(dout, need_input_grad=True, _i=i, _backward=block.backward):
            calls.append((_i, need_input_grad, np.array(dout, copy=True)))
            return _backward(dout, need_input_grad=need_input_grad)

        block.backward = spy
    rng = _rng(15)
    trainer.train_step(rng.standard_normal((6, 1, 3, 3)), np.array([0, 1, 2, 3, 0, 1]))
    assert sorted((i, asked) for i, asked, _ in calls) == [(0, False), (1, False), (2, False)], calls
    assert calls[0][0] == 2  # the output layer's true gradient comes first: it is what gets projected
    e = calls[0][2]
    for i, _, delta in calls[1:]:
        np.testing.assert_allclose(delta, e @ trainer.feedback[i], rtol=1e-12)


@task("a4-drtp-target")
def test_drtp_target_is_the_projected_label_in_the_blocks_shape():
    from tinydgl.trainers.feedback_alignment import RandomTargetModule

    trainer = build_trainer("drtp", build_model("cnn", 1, 8, 4, seed=0), _RecordGradients, seed=0)
    module = trainer.modules[0]
    assert isinstance(module, RandomTargetModule)
    feedback = np.asarray(module.feedback)
    y = np.array([3, 0, 2, 2, 1])
    out = _rng(16).standard_normal((5, *feedback.shape[1:])).astype(np.float32)
    loss, delta = module.local_loss(out, y)
    assert np.isnan(loss)
    want = (np.eye(4)[y] @ feedback.reshape(4, -1)).reshape(out.shape) / 5
    assert delta.shape == out.shape and delta.dtype == np.float32
    np.testing.assert_allclose(delta, want, rtol=1e-5, atol=1e-7)


@task("a4-drtp-target")
def test_drtp_step_matches_the_numpy_reference():
    model, trainer = _tiny_feedback_net("drtp")
    feedback = [m.feedback for m in trainer.modules[:-1]]
    (x, y), expected = _feedback_reference(model, lambda e, onehot: onehot / 7, feedback)
    trainer.train_step(x, y)
    got = [g for optimizer in trainer.optimizers() for g in optimizer.grads]
    assert len(got) == len(expected)
    for i, (g, want) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-13, err_msg=f"parameter {i}")


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@task("a4-alignment-cosine")
def test_block_cosines_are_one_cosine_per_block_over_all_its_parameters():
    from tinydgl.train.alignment import block_cosines

    model = _tiny_mlp()
    rng = _rng(17)
    true = {name: rng.standard_normal(p.shape) for name, p in model.named_parameters()}
    handed = {
        name: g + rng.standard_normal(g.shape) * (3.0 if name.endswith("bias") else 0.3) for name, g in true.items()
    }
    cosines = block_cosines(model, handed, true)
    assert len(cosines) == 3 and all(isinstance(c, float) for c in cosines)
    for i, block in enumerate(model.layers):
        names = [f"{i}.{n}" for n, _ in block.named_parameters()]
        whole = _cosine(
            np.concatenate([np.ravel(handed[n]) for n in names]), np.concatenate([np.ravel(true[n]) for n in names])
        )
        per_parameter = np.mean([_cosine(handed[n], true[n]) for n in names])
        assert abs(whole - per_parameter) > 1e-3  # (the test can tell the two apart)
        assert cosines[i] == pytest.approx(whole, rel=1e-12)
    scaled = block_cosines(model, {n: 2.5 * g for n, g in true.items()}, true)
    flipped = block_cosines(model, {n: -g for n, g in true.items()}, true)
    assert scaled == pytest.approx([1.0] * 3, abs=1e-12) and flipped == pytest.approx([-1.0] * 3, abs=1e-12)


@task("a4-alignment-cosine")
def test_block_cosines_nan_for_a_zero_gradient_and_float64_for_float32_ones():
    from tinydgl.train.alignment import block_cosines

    model = _tiny_mlp()
    rng = _rng(18)
    true = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in model.named_parameters()}
    handed = dict(true)
    for name in ("0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "0.2.weight", "0.2.bias"):
        if name in handed:
            handed[name] = np.zeros_like(true[name])  # block 0 handed nothing but zeros
    cosines = block_cosines(model, handed, true)
    assert np.isnan(cosines[0]) and cosines[1:] == pytest.approx([1.0, 1.0], abs=1e-6)
    huge = {name: g * np.float32(1e20) for name, g in true.items()}  # |g|^2 overflows float32, not float64
    assert block_cosines(model, huge, huge) == pytest.approx([1.0] * 3, abs=1e-6)


@task("a4-alignment-cosine")
def test_the_probe_reads_one_for_backprop_and_one_at_dfas_classifier():
    from tinydgl.train.alignment import block_cosines, handed_gradients, true_gradients

    x, y = _batch()
    for name, expect_all in (("bp", True), ("dfa", False)):
        trainer = build_trainer(name, _tiny_mlp(), lambda p: SGD(p, lr=0.1))
        true = true_gradients(trainer, x, y)
        _, handed = handed_gradients(trainer, x, y)
        cosines = block_cosines(trainer.model, handed, true)
        assert cosines[-1] == pytest.approx(1.0, abs=1e-12), (name, cosines)
        if expect_all:
            assert cosines == pytest.approx([1.0] * 3, abs=1e-12)
        else:
            assert all(-1.0 <= c <= 1.0 for c in cosines[:-1])


# --- assignment 5: learning with forward passes only ----------------------------------------------------


def _numpy_cross_entropy(logits, y):
    """The mean softmax cross-entropy, by hand (the reference for tests that must not use a1-softmax-ce)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean()


@task("a5-linear-jvp")
@pytest.mark.parametrize("bias", [True, False])
def test_linear_jvp_matches_a_central_difference(bias):
    rng = _rng(31)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3) if bias else None
    dx, dw, db = rng.standard_normal(x.shape), rng.standard_normal(w.shape), rng.standard_normal(3) if bias else None
    _, cache = F.linear_forward(x, w, b)
    eps = 1e-6
    moved = [
        F.linear_forward(x + s * eps * dx, w + s * eps * dw, None if b is None else b + s * eps * db)[0]
        for s in (1, -1)
    ]
    np.testing.assert_allclose(F.linear_jvp(cache, dx, dw, db), (moved[0] - moved[1]) / (2 * eps), rtol=1e-7, atol=1e-9)


@task("a5-linear-jvp")
def test_linear_jvp_with_tangents_left_out():
    """A tangent left out (None) does not move: with dx alone the tangent is dx @ w, with dw alone x @ dw."""
    rng = _rng(32)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    dx, dw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    _, cache = F.linear_forward(x, w, b)
    np.testing.assert_allclose(F.linear_jvp(cache, dx=dx), dx @ w, rtol=1e-12)
    np.testing.assert_allclose(F.linear_jvp(cache, dw=dw), x @ dw, rtol=1e-12)
    assert F.linear_jvp(cache) is None


def fg_trainer_recording_directions(directions):
    """A float64 fg trainer (weight perturbation, the global loss) whose directions are drawn here and recorded."""
    model = build_model("mlp", in_channels=1, image_size=4, num_classes=3, hidden=(5,), dtype="float64", seed=2)
    trainer = build_trainer("fg", model, lambda params: SGD(params, lr=0.1), fg_directions=directions)
    (module,) = trainer.modules
    rng, drawn = _rng(33), []

    def random_direction(like):
        drawn.append(rng.standard_normal(like.shape))
        return drawn[-1]

    module.random_direction = random_direction
    return trainer, module, drawn


def slope_by_finite_differences(model, params, direction, x, y, eps=1e-6):
    """The loss's derivative along `direction` (one array per parameter), from two forward passes."""
    data = [p.data for p in params]
    losses = []
    for sign in (1, -1):
        for p, d, v in zip(params, data, direction):
            p.data = d + sign * eps * v
        losses.append(_numpy_cross_entropy(model.forward(x), y))
        model.forget()
    for p, d in zip(params, data):
        p.data = d
    return (losses[0] - losses[1]) / (2 * eps)


@task("a5-forward-gradient")
def test_forward_gradient_is_the_slope_times_the_direction():
    """With one direction v, each parameter's estimate is (grad L . v) v_p: the slope along v, times v."""
    trainer, module, drawn = fg_trainer_recording_directions(1)
    rng = _rng(34)
    x, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    params = module.parameters()
    before = [p.data.copy() for p in params]
    trainer.estimate_gradients(x, y)
    assert len(drawn) == len(params)
    slope = slope_by_finite_differences(trainer.model, params, drawn, x, y)
    for p, v, d in zip(params, drawn, before):
        np.testing.assert_allclose(p.grad, slope * v, rtol=1e-6, atol=1e-10)
        np.testing.assert_array_equal(p.data, d)  # an estimate, not a step


@task("a5-forward-gradient")
def test_forward_gradient_with_one_weight_perturbed_is_its_partial_derivative():
    """Perturb one weight alone (every other tangent zero): the estimate is that weight's true partial
    derivative, and zero for every other parameter."""
    trainer, module, drawn = fg_trainer_recording_directions(1)
    params = module.parameters()
    rng = _rng(35)
    x, y = rng.standard_normal((5, 1, 4, 4)), rng.integers(0, 3, 5)

    def one_weight(like):
        v = np.zeros(like.shape)
        if len(drawn) == 0:
            v[(1,) * v.ndim] = 1.0
        drawn.append(v)
        return v

    module.random_direction = one_weight
    trainer.estimate_gradients(x, y)
    partial = slope_by_finite_differences(trainer.model, params, drawn, x, y)
    index = (1,) * params[0].data.ndim
    assert params[0].grad[index] == pytest.approx(partial, rel=1e-6)
    assert np.count_nonzero(params[0].grad) == 1 and all(np.count_nonzero(p.grad) == 0 for p in params[1:])


def _pepita_by_hand(trainer, x, y):
    """PEPITA's gradients for a one-hidden-layer ReLU net, in NumPy: {parameter: gradient}, and the clean loss."""
    (w1, b1), (w2, b2) = [(lin.weight.data, lin.bias.data) for lin in trainer.linears]
    n, classes = len(y), w2.shape[1]
    onehot = np.eye(classes)[y]

    def run(inputs):
        flat = inputs.reshape(n, -1)
        hidden = np.maximum(flat @ w1 + b1, 0)
        logits = hidden @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return flat, hidden, logits, p / p.sum(axis=1, keepdims=True) - onehot

    _, h, logits, e = run(x)
    x_mod = x + (e @ trainer.projection.reshape(classes, -1)).reshape(x.shape)
    flat_mod, h_mod, _, e_mod = run(x_mod)
    grads = {
        "w1": flat_mod.T @ (h - h_mod) / n,
        "b1": (h - h_mod).sum(0) / n,
        "w2": h_mod.T @ e_mod / n,
        "b2": e_mod.sum(0) / n,
    }
    return grads, _numpy_cross_entropy(logits, y)


@task("a5-pepita-update")
def test_pepita_gradients_match_the_numpy_reference():
    model = build_model(
        "mlp", in_channels=1, image_size=4, num_classes=3, hidden=(7,), batchnorm=False, dtype="float64", seed=3
    )
    trainer = build_trainer("pepita", model, lambda params: SGD(params, lr=0.1), pepita_f_scale=0.5)
    trainer.optimizer.step = lambda: None  # keep the gradients to compare, leave the weights
    rng = _rng(36)
    x, y = rng.standard_normal((8, 1, 4, 4)), rng.integers(0, 3, 8)
    expected, clean_loss = _pepita_by_hand(trainer, x, y)
    loss = trainer.train_step(x, y)
    (lin1, lin2) = trainer.linears
    got = {"w1": lin1.weight.grad, "b1": lin1.bias.grad, "w2": lin2.weight.grad, "b2": lin2.bias.grad}
    for name, grad in expected.items():
        np.testing.assert_allclose(got[name], grad, rtol=1e-10, atol=1e-14, err_msg=name)
    assert float(loss) == pytest.approx(clean_loss, rel=1e-10)
