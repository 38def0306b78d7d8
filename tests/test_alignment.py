"""The gradient-alignment probe: backprop reads 1, the probe does not change training, feedback alignment
aligns on an MLP, and every trainer it applies to gets a value per block."""

import math

import numpy as np
import pytest

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.train import fit
from tinydgl.train.alignment import AlignmentProbe, block_cosines, handed_gradients, true_gradients
from tinydgl.trainers import build_trainer

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _loaders(ds, n=None):
    n = n or len(ds.y_train)
    train = DataLoader(ds.x_train[:n], ds.y_train[:n], 64, seed=0, mean=ds.mean, std=ds.std, dtype="float64")
    test = DataLoader(ds.x_test[:200], ds.y_test[:200], 200, shuffle=False, mean=ds.mean, std=ds.std, dtype="float64")
    return train, test


def _trainer(name, model="mlp", **options):
    return build_trainer(
        name,
        build_model(model, 1, 28, 10, seed=0, dtype="float64"),
        lambda p: build_optimizer("adam", p, lr=1e-3),
        **options,
    )


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_backprop_reads_one_at_every_block(model, digits):
    train, test = _loaders(digits, 256)
    probe = AlignmentProbe(every=2)
    fit(_trainer("bp", model), train, test, 1, alignment=probe, **QUIET)
    summary = probe.summary()
    assert summary["steps"] == [1, 3]
    for block in summary["blocks"]:
        assert block == pytest.approx([1.0, 1.0], abs=1e-12)


def test_the_probe_does_not_change_training(digits):
    """Weights after a probed run equal an unprobed one's bit for bit: the reference gradient is computed
    on a copy, and catching the handed gradients leaves every optimizer as it was."""
    train, test = _loaders(digits, 256)
    plain, probed = _trainer("dfa"), _trainer("dfa")
    fit(plain, train, test, 1, **QUIET)
    fit(probed, train, test, 1, alignment=AlignmentProbe(every=1), **QUIET)
    a, b = plain.model.state_dict(), probed.model.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert all("step" not in vars(o) for o in probed.optimizers())


def test_handed_gradients_are_what_the_method_computes_and_unrelated_ones_read_about_zero(digits):
    train, _ = _loaders(digits, 64)
    x, y = next(iter(train))
    trainer = _trainer("dfa")
    true = true_gradients(trainer, x, y)
    _, handed = handed_gradients(trainer, x, y)
    cos = block_cosines(trainer.model, handed, true)
    assert cos[-1] == pytest.approx(1.0, abs=1e-12)  # DFA's output layer learns from the true gradient
    assert abs(cos[0]) < 0.2 and abs(cos[1]) < 0.2  # untrained: DFA's random feedback is unrelated yet
    rng = np.random.default_rng(0)
    noise = {k: rng.normal(size=v.shape) for k, v in true.items()}
    assert all(abs(c) < 0.05 for c in block_cosines(trainer.model, noise, true))


@pytest.mark.parametrize("name", ["fa", "dfa"])
def test_feedback_alignment_aligns_as_it_trains(name, digits):
    """Lillicrap 2016, Nokland 2016: the hidden blocks' gradients turn towards backprop's as the forward
    weights adapt to the fixed feedback. Measured (2026-12-03, mlp, 1 epoch of 4,000 digits, every 10th
    step): fa 0.0 -> 0.39 / 0.40, dfa 0.0 -> 0.48 / 0.41 (block 0 / block 1)."""
    train, test = _loaders(digits)
    probe = AlignmentProbe(every=10)
    fit(_trainer(name), train, test, 1, alignment=probe, **QUIET)
    for block in probe.summary()["blocks"][:2]:
        assert abs(block[0]) < 0.15, block
        assert np.mean(block[-2:]) > 0.25, block


@pytest.mark.parametrize(
    "name, options",
    [
        ("dni", {}),
        ("cdni", {"update_prob": 0.5}),
        ("dgl", {}),
        ("lls-mxm", {}),
        ("greedy", {"epochs_per_module": 1}),
        ("sdfa", {}),
        ("drtp", {}),
        ("shallow", {}),
    ],
)
def test_every_trainer_gets_a_value_per_block(name, options, digits):
    train, test = _loaders(digits, 256)
    probe = AlignmentProbe(every=1)
    fit(_trainer(name, **options), train, test, 1, alignment=probe, **QUIET)
    blocks = probe.summary()["blocks"]
    assert len(blocks) == 3 and len(blocks[0]) == 4
    if name == "greedy":  # epoch 1 trains module 0 only: the classifier has no gradient yet
        assert blocks[-1] == [None] * 4
    elif name == "cdni":  # update_prob 0.5: a group that skips its update at a step has no gradient then
        assert all(v is None or v == pytest.approx(1.0, abs=1e-10) for v in blocks[-1])
        assert None in [v for block in blocks for v in block]
    else:  # the classifier learns from the true loss in every method
        assert blocks[-1] == pytest.approx([1.0] * 4, abs=1e-10)
    values = [v for block in blocks for v in block if v is not None]
    assert values and all(-1.0 - 1e-12 <= v <= 1.0 + 1e-12 for v in values)
    if name == "shallow":  # hidden blocks never get a gradient
        assert blocks[0] == [None] * 4 and blocks[1] == [None] * 4


def test_async_dgl_measures_the_module_that_learns_from_the_batch_and_ff_is_refused(digits):
    """In async DGL only the first module learns from the batch train_step is given; the blocks of later
    modules learn from buffered activations of other steps and weights, so they read NaN (None)."""
    train, test = _loaders(digits, 256)
    probe = AlignmentProbe(every=1)
    fit(_trainer("async-dgl", modules=2), train, test, 1, alignment=probe, **QUIET)
    first, second, classifier = probe.summary()["blocks"]
    assert all(v is not None and -1 <= v <= 1 for v in first[1:])  # step 1 is warm-up: module 0 ran twice
    assert second == [None] * 4 and classifier == [None] * 4
    with pytest.raises(ValueError, match="goodness"):
        AlignmentProbe().check(
            build_trainer(
                "ff", build_model("mlp", 1, 28, 10), lambda p: build_optimizer("sgd", p, lr=1e-3), ff_hidden=(20, 20)
            )
        )
    with pytest.raises(ValueError, match="positive"):
        AlignmentProbe(every=0)
    assert math.isnan(block_cosines(_trainer("bp").model, {}, {})[0])


def test_compare_alignment_writes_it_per_run_and_plots_one_panel_per_method(tmp_path, capsys):
    import json

    from tinydgl.cli import main

    metrics, plot = tmp_path / "m.json", tmp_path / "curves.png"
    code = main(
        [
            "compare",
            "--trainers",
            "bp,dfa,async-dgl",
            "--model",
            "mlp",
            "--limit-train",
            "256",
            "--limit-test",
            "100",
            "--batch-size",
            "64",
            "--no-progress",
            "--alignment",
            "--alignment-every",
            "2",
            "--metrics-json",
            str(metrics),
            "--plot",
            str(plot),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    runs = {r["trainer"]: r for r in json.loads(metrics.read_text())["runs"]}
    assert runs["bp"]["alignment"]["every"] == 2 and runs["bp"]["alignment"]["steps"] == [1, 3]
    assert runs["bp"]["alignment"]["blocks"] == [pytest.approx([1.0, 1.0], abs=1e-6)] * 3  # float32 here
    assert len(runs["dfa"]["alignment"]["blocks"]) == 3
    assert runs["async-dgl"]["alignment"]["blocks"][1] == [None, None]  # its second module: buffered batches
    assert "mean of the last 3 records" in out
    assert (tmp_path / "curves-alignment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
