"""Models: parameter counts from the papers' code, output shapes, and end-to-end gradient checks."""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.gradcheck import rel_error
from tinydgl.models import MODELS, build_model
from tinydgl.nn import Sequential


@pytest.mark.parametrize(
    "name, channels, size, expected",
    [
        ("smallconv", 3, 32, 362_506),  # stated in the LLS spec / official code
        ("vgg8", 3, 32, 7_133_194),  # "7.13 M parameters for C=10"
        ("cnn", 1, 28, (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 7 * 7 * 10 + 10)),
        ("mlp", 1, 28, (784 * 256 + 256 + 512) + (256 * 256 + 256 + 512) + (256 * 10 + 10)),
        ("dni_cnn", 3, 32, (3 * 128 * 25 + 128 + 256) + 2 * (128 * 128 * 25 + 128 + 256) + (128 * 10 + 10)),
    ],
)
def test_parameter_counts(name, channels, size, expected):
    assert build_model(name, channels, size, 10).num_parameters() == expected


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_output_shapes_and_blocks(name, channels, size):
    model = build_model(name, channels, size, num_classes=7, seed=0)
    assert isinstance(model, Sequential) and all(isinstance(b, Sequential) for b in model.layers)
    x = np.random.default_rng(0).standard_normal((2, channels, size, size)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (2, 7) and out.dtype == np.float32
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape


def test_same_seed_same_model_different_seed_different_model():
    a, b, c = (build_model("cnn", seed=s).state_dict() for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.0.weight"], c["0.0.weight"])


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="smallconv"):
        build_model("resnet9000")


@pytest.mark.parametrize("name, channels, size", [("mlp", 1, 5), ("cnn", 1, 8), ("smallconv", 2, 8)])
def test_whole_model_gradients(name, channels, size):
    """End-to-end float64 gradient check of loss(model(x)) w.r.t. the input and sampled parameter entries."""
    rng = np.random.default_rng(0)
    model = build_model(name, channels, size, num_classes=3, seed=0, dtype="float64")
    x = rng.standard_normal((4, channels, size, size))
    y = np.array([0, 1, 2, 1])

    def loss_of(inp):
        return F.softmax_cross_entropy(model.forward(inp), y)[0]

    _, dlogits = F.softmax_cross_entropy(model.forward(x), y)
    dx = model.backward(dlogits)
    analytic = {name: p.grad.copy() for name, p in model.named_parameters()}

    def numeric_at(flat, positions, h=1e-6):
        """Central differences of the loss w.r.t. a few entries of `flat` (a view into x or a parameter)."""
        grads = []
        for j in positions:
            old = flat[j]
            flat[j] = old + h
            plus = loss_of(x)
            flat[j] = old - h
            minus = loss_of(x)
            flat[j] = old
            grads.append((plus - minus) / (2 * h))
        return np.array(grads)

    picks = rng.choice(x.size, size=8, replace=False)
    assert rel_error(dx.reshape(-1)[picks], numeric_at(x.reshape(-1), picks)) < 1e-5

    for pname, p in model.named_parameters():
        flat = p.data.reshape(-1)
        picks = rng.choice(flat.size, size=min(6, flat.size), replace=False)
        numeric = numeric_at(flat, picks)
        got = analytic[pname].reshape(-1)[picks]
        # conv biases before batch norm have an exactly-zero gradient: compare absolutely there
        if np.abs(numeric).max() < 1e-9:
            assert np.abs(got).max() < 1e-9, pname
        else:
            assert rel_error(got, np.array(numeric)) < 1e-5, pname
