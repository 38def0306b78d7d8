"""Local learning trainers (greedy, DGL, LLS, LLS-M, LLS-MxM): isolation, the LLS basis and local loss,
and learning on real digits."""

import copy

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.gradcheck import numerical_gradient, rel_error
from tinydgl.models import build_model
from tinydgl.optim import SGD, Adam
from tinydgl.train import fit
from tinydgl.trainers import build_trainer
from tinydgl.trainers.lls import lls_basis, lls_head
from tinydgl.trainers.local import split_blocks

LOCAL = ["greedy", "dgl", "lls", "lls-m", "lls-mxm"]


def _batch(n=8, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, size, size)).astype(np.float32), rng.integers(0, 10, n)


def _trainer(name, model_name="smallconv", size=12, dtype="float32", lr=1e-2, **options):
    model = build_model(model_name, 1, size, 10, seed=0, dtype=dtype)
    return build_trainer(name, model, lambda p: Adam(p, lr=lr), **options)


def _snapshot(trainer):
    return [(copy.deepcopy(m.optimizer.state), [p.data.copy() for p in m.parameters()]) for m in trainer.modules]


@pytest.mark.parametrize("name", LOCAL)
def test_a_module_step_touches_only_that_module(name):
    trainer = _trainer(name)
    x, y = _batch()
    trainer.train_step(x, y)  # give every optimizer some state first
    before = _snapshot(trainer)
    j = 1
    inp = x
    for module in trainer.modules[:j]:
        inp = module.forward(inp)
    trainer.modules[j].step(inp, y)
    after = _snapshot(trainer)
    for k, ((state0, params0), (state1, params1)) in enumerate(zip(before, after)):
        changed = any(not np.array_equal(a, b) for a, b in zip(params0, params1))
        assert changed == (k == j), f"module {k} {'changed' if changed else 'did not change'}"
        if k != j:
            assert all(
                np.array_equal(state0[i].get("m"), state1[i].get("m")) for i in range(len(state0)) if "m" in state0[i]
            )


@pytest.mark.parametrize("name", ["dgl", "lls"])
def test_what_a_later_module_does_cannot_change_an_earlier_update(name):
    """Module 0's update must not depend on anything above it: sabotage every later module and compare."""
    x, y = _batch()
    reference, sabotaged = _trainer(name), _trainer(name)
    for module in sabotaged.modules[1:]:
        module.step = lambda inp, lbl: (float("nan"), inp * 1e6)  # garbage upstream of module 0
    reference.train_step(x, y)
    sabotaged.train_step(x, y)
    for p, q in zip(reference.modules[0].parameters(), sabotaged.modules[0].parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_no_gradient_reaches_the_module_input():
    """The block below gets nothing: backward stops at the first parametrised layer (dx is never computed)."""
    trainer = _trainer("lls")
    x, y = _batch()
    module = trainer.modules[1]  # starts with a max-pool, then the conv
    calls = []
    pool = module.body.layers[0].layers[0]
    pool.backward = lambda *a, **k: calls.append(1)
    module.step(trainer.modules[0].forward(x), y)
    assert calls == []


def test_split_blocks():
    assert split_blocks(5, modules=2) == [[0, 1, 2], [3, 4]]
    assert split_blocks(4) == [[0], [1], [2], [3]]
    assert split_blocks(4, boundaries=[1, 3]) == [[0], [1, 2], [3]]
    with pytest.raises(ValueError, match="between 1 and 4"):
        split_blocks(4, modules=9)


def test_lls_basis_matches_the_formulas():
    d, c = 37, 10
    t = np.arange(d)
    f = np.linspace(50, 512, c)
    np.testing.assert_allclose(lls_basis(c, d, "sin")[3], np.sin(f[3] * t))
    np.testing.assert_array_equal(lls_basis(c, d, "square"), np.sign(np.sin(f[:, None] * t)))
    f_cos = np.linspace(100, 512, c)
    np.testing.assert_allclose(lls_basis(c, d, "cosine")[9], np.cos(np.pi * f_cos[9] * (t + 0.5) / d))
    rnd = lls_basis(c, d, "random", np.random.default_rng(0))
    assert rnd.shape == (c, d) and 0.05 < rnd.std() < 0.15
    with pytest.raises(ValueError, match="sin, square, cosine, random"):
        lls_basis(c, d, "triangle")


def test_lls_basis_is_built_once_not_per_step():
    trainer = _trainer("lls")
    basis = trainer.modules[0].head.layers[3].buffers["matrix"]
    x, y = _batch()
    trainer.train_step(x, y)
    trainer.train_step(x, y)
    assert trainer.modules[0].head.layers[3].buffers["matrix"] is basis


@pytest.mark.parametrize("modulation", [None, "m", "mxm"])
@pytest.mark.parametrize("waveform", ["sin", "random"])
def test_lls_local_loss_gradient(modulation, waveform):
    """Numerical check (float64) of d local_loss / d block output, through pool, normalisation, basis, m/M, 1/T."""
    head = lls_head((3, 5, 5), 2, 10, waveform, 0.5, modulation, seed=1, dtype="float64")
    rng = np.random.default_rng(0)
    a, y = rng.standard_normal((4, 3, 5, 5)), np.array([1, 7, 3, 3])

    def loss(a_):
        return F.softmax_cross_entropy(head.forward(a_), y)[0]

    _, dlogits = F.softmax_cross_entropy(head.forward(a), y)
    analytic = head.backward(dlogits)
    assert rel_error(analytic, numerical_gradient(lambda v: np.array(loss(v)), a.copy(), None)) < 1e-6
    for p in head.parameters():  # m or M
        numeric = numerical_gradient(lambda v, p=p: (setattr(p, "data", v), np.array(loss(a)))[1], p.data.copy(), None)
        assert rel_error(p.grad, numeric) < 1e-6


def test_lls_head_matches_the_spec_by_hand():
    """logits = normalise(adaptive_pool(a)) @ B.T / T, computed here without the layer library."""
    head = lls_head((2, 7, 7), 2, 10, "sin", 0.5, None, dtype="float64")
    a = np.random.default_rng(0).standard_normal((3, 2, 7, 7))
    pooled = np.stack(
        [
            a[:, :, 0:4, 0:4].mean((2, 3)),
            a[:, :, 0:4, 3:7].mean((2, 3)),
            a[:, :, 3:7, 0:4].mean((2, 3)),
            a[:, :, 3:7, 3:7].mean((2, 3)),
        ],
        axis=2,
    ).reshape(3, -1)
    z = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(head.forward(a), z @ lls_basis(10, 8, "sin").T / 0.5, rtol=1e-12)


@pytest.mark.parametrize("name, learnable", [("lls", False), ("lls-m", True), ("lls-mxm", True)])
def test_lls_modulation_parameters(name, learnable):
    trainer = _trainer(name)
    head_params = [p for m in trainer.modules if m.head is not None for p in m.head.parameters()]
    assert bool(head_params) == learnable
    before = [p.data.copy() for p in head_params]
    trainer.train_step(*_batch())
    assert all(not np.array_equal(b, p.data) for b, p in zip(before, head_params))


def test_greedy_trains_one_stage_at_a_time():
    trainer = _trainer("greedy", epochs_per_module=2, modules=2)
    x, y = _batch()
    trainer.start_epoch(3)  # epochs 2-3: stage 1
    assert trainer.stage == 1
    frozen = [p.data.copy() for p in trainer.modules[0].parameters()]
    running = trainer.modules[0].body.layers[0].layers[1].buffers["running_mean"].copy()
    trainer.train_step(x, y)
    assert all(np.array_equal(a, p.data) for a, p in zip(frozen, trainer.modules[0].parameters()))
    np.testing.assert_array_equal(running, trainer.modules[0].body.layers[0].layers[1].buffers["running_mean"])
    trainer.start_epoch(99)
    assert trainer.stage == len(trainer.modules) - 1


def test_dgl_with_one_module_is_backprop():
    """One module holding every block, no auxiliary head: DGL's update is exactly backprop's."""
    x, y = _batch()
    model_a = build_model("smallconv", 1, 12, 10, seed=0, dtype="float64")
    model_b = build_model("smallconv", 1, 12, 10, seed=0, dtype="float64")
    dgl = build_trainer("dgl", model_a, lambda p: SGD(p, lr=0.1), modules=1)
    bp = build_trainer("bp", model_b, lambda p: SGD(p, lr=0.1))
    dgl.train_step(x.astype(np.float64), y)
    bp.train_step(x.astype(np.float64), y)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["bp"] + LOCAL)
def test_a_step_on_every_backend(backend_case, name):
    x, y = _batch(size=8)
    with backend_case.use():
        trainer = _trainer(name, size=8, dtype=backend_case.dtype)
        loss = trainer.train_step(backend_case.put(x), backend_case.put(y))
        logits = trainer.predict(backend_case.put(x))
    assert np.isfinite(float(loss))  # a float64 scalar on the backend's device
    backend_case.check_device(logits)
    for p in trainer.model.parameters():
        backend_case.check_device(p.data)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _head_accuracy(trainer, j, loader):
    """Test accuracy of module j's own local head (auxiliary head or LLS projection), in evaluation mode."""
    correct = 0
    trainer.model.eval()
    head = trainer.modules[j].head
    head.eval()
    for x, y in loader:
        for module in trainer.modules[: j + 1]:
            x = module.forward(x)
        correct += int(np.sum(np.argmax(head.forward(x), axis=1) == y))
    head.train()
    trainer.model.train()
    return correct / len(loader.y)


# Why these checks can fail: on 4,000 digits even *frozen random* hidden layers feed a classifier that
# reaches 0.91 (smallconv) or 0.95 (cnn), so the final accuracy alone cannot tell a working local rule from
# one whose blocks never learn. A local head can: measured (seed 0, Adam 2e-3, 2 epochs) with frozen
# hidden blocks the heads stay at chance (0.09-0.15), while trained they reach LLS 0.87, LLS-M 0.88,
# LLS-MxM 0.87 (best block), DGL 0.90 (module 0's auxiliary head). Final accuracies measured: LLS 0.81,
# LLS-M 0.86, LLS-MxM 0.83 (batch-norm running statistics still lag the fast-moving blocks after 2 short
# epochs), DGL 0.95.
LEARNING = [
    ("lls", "smallconv", 0.65, 0.7),
    ("lls-m", "smallconv", 0.65, 0.7),
    ("lls-mxm", "smallconv", 0.65, 0.7),
    ("dgl", "cnn", 0.8, 0.93),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, model_name, head_threshold, final_threshold", LEARNING)
def test_learns_real_digits(digits, name, model_name, head_threshold, final_threshold):
    ds = digits
    train = DataLoader(ds.x_train, ds.y_train, 128, seed=0, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    trainer = build_trainer(name, build_model(model_name, 1, 28, 10, seed=0), lambda p: Adam(p, lr=2e-3))
    history = fit(trainer, train, test, 2, progress=False, log=lambda *_: None)
    best_head = max(_head_accuracy(trainer, j, test) for j in range(len(trainer.modules) - 1))
    assert best_head > head_threshold, best_head
    assert history[-1]["test_accuracy"] > final_threshold, history


@pytest.mark.slow
def test_greedy_learns_stage_by_stage(digits):
    """Epochs 1-2 train module 0 alone and are scored by its auxiliary head (chance 0.10 if it did not learn);
    epochs 3-4 train the rest on module 0's frozen features. Measured: 0.32, 0.90, 0.89, 0.95 (after a single
    epoch the head's batch-norm statistics still lag, hence two epochs per module)."""
    ds = digits
    train = DataLoader(ds.x_train, ds.y_train, 128, seed=0, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    trainer = build_trainer(
        "greedy", build_model("cnn", 1, 28, 10, seed=0), lambda p: Adam(p, lr=2e-3), epochs_per_module=2, modules=2
    )
    history = fit(trainer, train, test, 4, progress=False, log=lambda *_: None)
    assert history[1]["test_accuracy"] > 0.85 and history[-1]["test_accuracy"] > 0.92, history
