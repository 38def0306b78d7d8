"""Hidden tests: the instructor's extra checks of some tasks, kept by the autograder, left out of the student copy.

`tinydgl assignments build` does not copy this file, so students never see these tests, but `grade` and the
Gradescope autograder run them with the visible ones (their course is built with hidden tests kept): a task
earns its points only when both pass. They catch what a solution can get wrong while passing every visible
test. A student copy's handout says how many hidden tests each task has, not what they check. (GitHub
Classroom grades from the template repository, which students can read, so it runs the visible tests only.)
"""

import numpy as np

from tinydgl import functional as F
from test_assignments_tasks import task


@task("a1-relu-backward")
def test_relu_backward_leaves_dout_unchanged():
    """`dx = dout; dx *= mask` passes every visible test but overwrites the caller's gradient."""
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    before = dout.copy()
    _, cache = F.relu_forward(x)
    dx = F.relu_backward(dout, cache)
    np.testing.assert_array_equal(dout, before, err_msg="relu_backward changed its dout argument")
    np.testing.assert_array_equal(dx, np.where(x > 0, before, 0.0))


@task("a1-softmax-ce")
def test_softmax_cross_entropy_is_finite_for_huge_logits():
    """A softmax that does not subtract the row maximum overflows: exp(1000) is inf."""
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 1.0]])
    loss, dlogits = F.softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert abs(float(loss)) < 1e-6


@task("a5-linear-jvp")
def test_linear_jvp_with_only_the_bias_moving():
    """With db alone every row moves by db: a solution that only handles dx and dw returns None, or db of shape (M,)."""
    rng = np.random.default_rng(12)
    x, w, b, db = (rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (4, 2), (2,), (2,)])
    _, cache = F.linear_forward(x, w, b)
    dout = F.linear_jvp(cache, db=db)
    assert dout is not None and dout.shape == (3, 2) and dout.dtype == np.float32
    np.testing.assert_array_equal(dout, np.tile(db, (3, 1)))


@task("a5-forward-gradient")
def test_forward_gradient_averages_its_directions():
    """With K directions the estimate is the mean of the K (slope_k v_k), each slope along its own direction:
    a sum, or one slope reused, passes the one-direction visible tests."""
    from test_assignments_tasks import fg_trainer_recording_directions, slope_by_finite_differences

    trainer, module, drawn = fg_trainer_recording_directions(3)
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    params = module.parameters()
    trainer.estimate_gradients(x, y)
    directions = [drawn[k * len(params) : (k + 1) * len(params)] for k in range(3)]
    slopes = [slope_by_finite_differences(trainer.model, params, v, x, y) for v in directions]
    for i, p in enumerate(params):
        expected = sum(s * v[i] for s, v in zip(slopes, directions)) / 3
        np.testing.assert_allclose(p.grad, expected, rtol=1e-6, atol=1e-10)


@task("a5-pepita-update")
def test_pepita_on_a_deeper_tanh_network():
    """Two tanh hidden layers: each hidden layer learns from its *modulated* input and its own two outputs (a
    solution written for one ReLU hidden layer passes the visible test)."""
    from tinydgl.models import build_model
    from tinydgl.optim import SGD
    from tinydgl.trainers import build_trainer

    model = build_model(
        "mlp",
        in_channels=1,
        image_size=3,
        num_classes=4,
        hidden=(6, 5),
        batchnorm=False,
        activation="tanh",
        dtype="float64",
        seed=4,
    )
    trainer = build_trainer("pepita", model, lambda params: SGD(params, lr=0.1), pepita_f_scale=0.5)
    trainer.optimizer.step = lambda: None
    rng = np.random.default_rng(14)
    x, y = rng.standard_normal((5, 1, 3, 3)), rng.integers(0, 4, 5)
    weights = [(lin.weight.data, lin.bias.data) for lin in trainer.linears]
    onehot = np.eye(4)[y]

    def run(inputs):
        hs = [inputs.reshape(5, -1)]
        for j, (w, b) in enumerate(weights):
            z = hs[-1] @ w + b
            hs.append(z if j == len(weights) - 1 else np.tanh(z))
        p = np.exp(hs[-1] - hs[-1].max(axis=1, keepdims=True))
        return hs, p / p.sum(axis=1, keepdims=True) - onehot

    clean, e = run(x)
    modulated, e_mod = run(x + (e @ trainer.projection.reshape(4, -1)).reshape(x.shape))
    trainer.train_step(x, y)
    for j, lin in enumerate(trainer.linears):
        signal = e_mod if j == len(weights) - 1 else clean[j + 1] - modulated[j + 1]
        np.testing.assert_allclose(lin.weight.grad, modulated[j].T @ signal / 5, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, signal.sum(0) / 5, rtol=1e-10, atol=1e-14)
