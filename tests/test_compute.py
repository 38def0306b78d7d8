"""MAC counts of one training step (tinydgl/train/compute.py) against counts written out by hand."""

import numpy as np
import pytest

from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.train.compute import step_macs
from tinydgl.trainers import build_trainer


def _trainer(name, model="mlp", **kwargs):
    m = build_model(model, 1, 28, 10, seed=0, dtype="float64", **kwargs)
    return build_trainer(name, m, lambda p: build_optimizer("adam", p, lr=1e-3))


def _batch(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 1, 28, 28)), rng.integers(0, 10, size=n)


# the mlp's three linear layers: 784 -> 32 -> 16 -> 10
FORWARD = 784 * 32 + 32 * 16 + 16 * 10


def test_backprop_on_an_mlp_costs_forward_twice_plus_the_input_gradients_above_the_first_layer():
    macs = step_macs(_trainer("bp", hidden=(32, 16)), *_batch())
    assert macs["forward"] == FORWARD and macs["weight_gradients"] == FORWARD
    assert macs["signal"] == 32 * 16 + 16 * 10  # the first layer's input needs no gradient
    assert macs["total"] == 2 * FORWARD + 32 * 16 + 16 * 10


def test_dfa_pays_one_projection_per_hidden_block_and_lls_a_fixed_basis():
    dfa = step_macs(_trainer("dfa", hidden=(32, 16)), *_batch())
    assert dfa["signal"] == 10 * 32 + 10 * 16  # e (N, 10) @ B_l (10, width_l) per sample
    lls = step_macs(_trainer("lls", hidden=(32, 16)), *_batch())
    assert lls["signal"] == 2 * (10 * 32 + 10 * 16)  # each head's z @ B^T forward, and dlogits @ B back into z


def test_conv_layers_are_counted_from_their_output_shape():
    """smallconv's first conv: 1 -> 32 channels, 3x3, 28x28 output: 32*28*28*9 MACs per sample."""
    macs = step_macs(_trainer("shallow", "smallconv"), *_batch(2))
    # conv 1->32 at 28x28, conv 32->64 and 64->128 after 2x2 max-pools (14x14, 7x7), linear 512->512, 512->10
    forward = 32 * 28 * 28 * 9 * 1 + 64 * 14 * 14 * 9 * 32 + 128 * 7 * 7 * 9 * 64 + 512 * 512 + 512 * 10
    assert macs["forward"] == forward
    assert macs["weight_gradients"] == 512 * 10  # shallow: only the output layer's weights learn
    assert macs["signal"] == 0


def test_counting_changes_nothing():
    trainer = _trainer("dgl", hidden=(32, 16))
    before = trainer.state_dict()
    step_macs(trainer, *_batch())
    after = trainer.state_dict()
    for key in before["model"]:
        np.testing.assert_array_equal(before["model"][key], after["model"][key])
    assert [o["steps"] for o in after["optimizers"]] == [0] * len(after["optimizers"])
    from tinydgl.nn import Linear

    assert Linear.forward.__qualname__ == "Linear.forward"  # the counting wrappers are gone


def test_lls_costs_fewer_macs_than_backprop_on_smallconv():
    x, y = _batch(4)
    bp, lls = step_macs(_trainer("bp", "smallconv"), x, y), step_macs(_trainer("lls", "smallconv"), x, y)
    assert lls["forward"] == pytest.approx(bp["forward"]) and lls["weight_gradients"] == pytest.approx(
        bp["weight_gradients"]
    )
    assert lls["total"] < 0.7 * bp["total"]  # measured 15.47 vs 22.93 MMAC per sample


def test_compare_reports_macs_next_to_accuracy(tmp_path, capsys):
    import json

    from tinydgl.cli import main

    metrics = tmp_path / "m.json"
    assert (
        main(
            [
                "compare",
                "--trainers",
                "bp,dfa",
                "--model",
                "mlp",
                "--limit-train",
                "128",
                "--limit-test",
                "50",
                "--no-progress",
                "--metrics-json",
                str(metrics),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MMAC/sample" in out and "of it signal" in out
    runs = {r["trainer"]: r["macs_per_sample"] for r in json.loads(metrics.read_text())["runs"]}
    forward = 784 * 256 + 256 * 256 + 256 * 10
    assert runs["bp"]["forward"] == runs["dfa"]["forward"] == forward
    assert runs["dfa"]["signal"] == 10 * 512 and runs["bp"]["signal"] == 256 * 256 + 256 * 10
