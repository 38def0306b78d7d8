"""Layer objects: parameters and gradients, train/eval, state dicts, and skipping the input gradient."""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl import nn
from tinydgl.models import build_model


def test_linear_layer_matches_functional(rng):
    layer = nn.Linear(4, 3, rng=np.random.default_rng(0), dtype="float64")
    x = rng.standard_normal((5, 4))
    out = layer.forward(x)
    ref, cache = F.linear_forward(x, layer.weight.data, layer.bias.data)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal((5, 3))
    dx = layer.backward(dout)
    rdx, rdw, rdb = F.linear_backward(dout, cache)
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(layer.weight.grad, rdw)
    np.testing.assert_array_equal(layer.bias.grad, rdb)


def test_init_bounds_follow_pytorch_default():
    conv = nn.Conv2d(8, 4, 3, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(8 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound


def test_batchnorm_layer_train_and_eval(rng):
    bn = nn.BatchNorm2d(3, dtype="float64")
    x = rng.standard_normal((8, 3, 4, 4)) * 2 + 5
    bn.forward(x)
    assert not np.allclose(bn.buffers["running_mean"], 0)
    bn.eval()
    frozen = bn.buffers["running_mean"].copy()
    bn.forward(x)
    np.testing.assert_array_equal(bn.buffers["running_mean"], frozen)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        bn.forward(rng.standard_normal((2, 4, 3, 3)))


def test_state_dict_round_trip_and_errors():
    a = build_model("smallconv", 1, 8, seed=0)
    a.forward(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))  # move BN stats
    state = a.state_dict()
    assert "0.1.running_mean" in state and "0.0.weight" in state
    b = build_model("smallconv", 1, 8, seed=1).load_state_dict(state)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    bad = dict(state)
    bad.pop("0.0.weight")
    with pytest.raises(KeyError, match="0.0.weight"):
        b.load_state_dict(bad)
    bad = dict(state, **{"0.0.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="0.0.weight"):
        b.load_state_dict(bad)


def test_sequential_skips_work_when_no_input_gradient_is_needed(rng):
    """A block whose input is a constant stops at its first parametrised layer and computes no dx there."""
    block = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.ReLU())
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    out = block.forward(x)
    dout = np.ones_like(out)
    calls = []
    original = block.layers[0].backward
    block.layers[0].backward = lambda *a, **k: calls.append(1) or original(*a, **k)
    assert block.backward(dout, need_input_grad=False) is None
    assert calls == []  # the max-pool in front of the conv never ran backward
    assert block.layers[1].weight.grad is not None
    assert all(getattr(layer, "_cache", None) is None for layer in block.layers)  # activations freed
    block.forward(x)
    full = block.backward(dout)
    assert full.shape == x.shape and calls == [1]


def test_backward_needs_a_training_forward_and_runs_once(rng):
    layer = nn.Conv2d(2, 3, 3, rng=rng)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    dout = np.ones((2, 3, 3, 3), np.float32)
    layer.forward(x)
    layer.backward(dout)
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        layer.backward(dout)
    layer.eval()
    layer.forward(x)  # evaluation keeps no activations
    assert layer._cache is None


def test_zero_grad_train_eval_recurse():
    model = build_model("cnn", 1, 8)
    model.forward(np.zeros((2, 1, 8, 8), np.float32))
    model.backward(np.ones((2, 10), np.float32))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    assert not any(m.training for block in model.layers for m in block.layers)


def test_dropout_layer_uses_its_generator():
    a, b = nn.Dropout(0.5, rng=np.random.default_rng(3)), nn.Dropout(0.5, rng=np.random.default_rng(3))
    x = np.ones((4, 10))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    a.eval()
    np.testing.assert_array_equal(a.forward(x), x)
