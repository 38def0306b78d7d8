"""Optimizers against their update formulas (and PyTorch when installed), and the schedules."""

import math

import numpy as np
import pytest

from tinydgl.nn import Parameter
from tinydgl.optim import SGD, Adam, AdamW, CosineLR, StepLR, build_optimizer


def _run(opt_cls, grads, **kw):
    p = Parameter(np.array([1.0, -2.0]))
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = np.array(g)
        opt.step()
    return p.data


GRADS = [[0.5, -1.0], [0.2, 0.3], [-0.4, 0.1]]


def test_sgd_momentum_nesterov_weight_decay_formula():
    lr, mu, wd = 0.1, 0.9, 0.01
    p, v = np.array([1.0, -2.0]), np.zeros(2)
    for g in GRADS:
        g = np.array(g) + wd * p
        v = mu * v + g
        p = p - lr * (g + mu * v)
    np.testing.assert_allclose(_run(SGD, GRADS, lr=lr, momentum=mu, nesterov=True, weight_decay=wd), p)


def test_adam_and_adamw_formula():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    for decoupled in (False, True):
        p, m, v = np.array([1.0, -2.0]), 0, 0
        for t, g in enumerate(GRADS, start=1):
            g = np.array(g)
            if decoupled:
                p = p * (1 - lr * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        got = _run(AdamW if decoupled else Adam, GRADS, lr=lr, weight_decay=wd)
        np.testing.assert_allclose(got, p, rtol=1e-12)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-2)),
        ("adam", dict(weight_decay=1e-2)),
        ("adamw", dict(weight_decay=1e-2)),
    ],
)
def test_torch_oracle(name, kw):
    torch = pytest.importorskip("torch")
    t = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    topt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]([t], lr=0.05, **kw)
    for g in GRADS:
        t.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
    p = Parameter(np.array([1.0, -2.0]))
    opt = build_optimizer(name, [p], lr=0.05, **kw)
    for g in GRADS:
        p.grad = np.array(g)
        opt.step()
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12)


def test_adam_minimises_a_quadratic():
    p = Parameter(np.array([3.0, -4.0]))
    opt = Adam([p], lr=0.1)
    for _ in range(500):
        p.grad = 2 * p.data
        opt.step()
    assert np.abs(p.data).max() < 1e-2


def test_parameters_without_gradient_are_left_alone():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert not np.array_equal(a.data, np.ones(2))


def test_state_dict_round_trip_continues_identically():
    def fresh():
        p = Parameter(np.array([1.0, -2.0]))
        return p, Adam([p], lr=0.05)

    p1, o1 = fresh()
    p2, o2 = fresh()
    for g in GRADS[:2]:
        p1.grad = p2.grad = np.array(g)
        o1.step()
        o2.step()
    p3, o3 = fresh()
    p3.data = p2.data.copy()
    o3.load_state_dict(o2.state_dict())
    p1.grad = p3.grad = np.array(GRADS[2])
    o1.step()
    o3.step()
    np.testing.assert_array_equal(p1.data, p3.data)


def test_schedules():
    opt = SGD([Parameter(np.ones(1))], lr=1.0)
    step = StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        step.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt.lr = 1.0
    cos = CosineLR(opt, total=4, min_lr=0.1)
    assert cos.lr_at(0) == 1.0 and cos.lr_at(4) == pytest.approx(0.1)
    assert cos.lr_at(2) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="no parameters"):
        Adam([], lr=0.1)
    with pytest.raises(ValueError, match="positive"):
        SGD([Parameter(np.ones(1))], lr=0)
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer("rmsprop", [Parameter(np.ones(1))], lr=0.1)


def test_cooldown_schedule_is_forward_forwards_and_resumes_exactly(tmp_path):
    """loeweX/Forward-Forward src/utils.py with its 0-based epoch e: 1 while e <= E // 2, then 2 (1 + E - e) / E;
    set from the epoch alone, so a run resumed after epoch 2 of 5 trains at the rates of one never stopped (a
    2-epoch run trains at 1, 1 too)."""
    from tinydgl.data import DataLoader, load_dataset
    from tinydgl.models import build_model
    from tinydgl.optim import LR_SCHEDULES, build_optimizer, scheduled_lr
    from tinydgl.train import fit
    from tinydgl.trainers import build_trainer

    assert [LR_SCHEDULES["cooldown"](e, 4) for e in (1, 2, 3, 4)] == [1.0, 1.0, 1.0, 1.0]
    assert [LR_SCHEDULES["cooldown"](e, 10) for e in (6, 7, 8, 10)] == pytest.approx([1.0, 1.0, 0.8, 0.4])
    ds = load_dataset("mnist-small", limit_train=256, limit_test=100)

    def run(epochs, directory=None, resume=False):
        train = DataLoader(ds.x_train, ds.y_train, 64, seed=0, mean=ds.mean, std=ds.std, dtype="float64")
        test = DataLoader(ds.x_test, ds.y_test, 100, shuffle=False, mean=ds.mean, std=ds.std, dtype="float64")
        trainer = build_trainer(
            "dgl",
            build_model("mlp", 1, 28, 10, dtype="float64"),
            lambda p: build_optimizer("sgd", p, lr=0.1, momentum=0.9),
        )
        seen = []
        fit(
            trainer,
            train,
            test,
            epochs,
            checkpoint_dir=directory,
            resume=resume,
            progress=False,
            log=lambda *_: None,
            lr_schedule="cooldown",
            on_epoch_end=lambda e: seen.append(trainer.optimizers()[0].lr),
        )
        return trainer, seen

    straight, rates = run(5)
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.12, 0.08])
    run(2, str(tmp_path))
    resumed, rest = run(5, str(tmp_path), resume=True)
    assert rest == pytest.approx([0.1, 0.12, 0.08])
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="constant, cooldown"):
        scheduled_lr(straight.optimizers(), "warmup", 1, 4)
