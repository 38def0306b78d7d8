"""Forward-Forward (`ff`, tinydgl/trainers/forward_forward.py; Hinton, arXiv 2212.13345):
the label embedding, the length normalisation op, each layer's gradient against a NumPy reference, no
gradient between layers, both predictions on a hand-checkable network, checkpoints and exact resume, and
learning on the bundled digits beyond what a broken signal reaches."""

import os
import signal

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.backend import to_numpy
from tinydgl.cli import main
from tinydgl.cli.checks import trainer_options
from tinydgl.cli.parser import build_parser
from tinydgl.data import DataLoader, load_dataset
from tinydgl.gradcheck import check_gradients, numerical_gradient, rel_error
from tinydgl.models import build_model
from tinydgl.nn import FullGradReLU, LengthNormalize, Linear, ReLU
from tinydgl.optim import SGD
from tinydgl.train import fit
from tinydgl.train.stopping import RunStopped
from tinydgl.trainers import TRAINERS, build_trainer
from tinydgl.trainers.forward_forward import FFTrainer
from trainer_checks import assert_same_trainer_state as _assert_same

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _tiny(hidden=(7, 5), lr=0.05, dtype="float64", seed=0, **options):
    """FF on 10x10 images (100 inputs, labels in pixels 0..9), plain SGD so a step's gradients stay readable."""
    model = build_model("mlp", 1, 10, 10, seed=0, dtype=dtype)
    return FFTrainer(model, lambda p: SGD(p, lr=lr), ff_hidden=hidden, seed=seed, **options)


def _linears(trainer):
    """Each FF layer's Linear (block 0 starts with a Flatten)."""
    return [next(layer for layer in block.layers if isinstance(layer, Linear)) for block in trainer.model.layers]


def _images(n, seed=0, size=10):
    return np.random.default_rng(seed).random((n, 1, size, size))


# --- data -----------------------------------------------------------------------------------------------
def test_positive_negative_and_neutral_samples_hold_the_label_pixels_exactly():
    trainer = _tiny()
    x, y = _images(50), np.arange(50) % 10
    flat = x.reshape(50, -1)
    positive = trainer.embed(x, F.one_hot(y, 10, x.dtype))
    wrong = trainer.wrong_labels(y)
    negative = trainer.embed(x, F.one_hot(wrong, 10, x.dtype))
    neutral = trainer.neutral(x)
    np.testing.assert_array_equal(positive[:, :10], np.eye(10)[y])
    np.testing.assert_array_equal(negative[:, :10], np.eye(10)[wrong])
    np.testing.assert_array_equal(neutral[:, :10], np.full((50, 10), 0.1))
    for sample in (positive, negative, neutral):  # every other pixel untouched
        np.testing.assert_array_equal(sample[:, 10:], flat[:, 10:])
    # the first 10 pixels are the first row of the image
    np.testing.assert_array_equal(positive.reshape(50, 1, 10, 10)[:, 0, 0, :], np.eye(10)[y])
    # in the input's units when they are known: the pixel values 1 / 0 / 0.1, normalised like the image
    scaled = _tiny(input_mean=0.1307, input_std=0.3081)
    np.testing.assert_allclose(scaled.embed(x, F.one_hot(y, 10, x.dtype))[:, :10], (np.eye(10)[y] - 0.1307) / 0.3081)


def test_negative_labels_are_never_the_true_one_uniform_and_reproducible_from_the_seed():
    y = np.arange(9000) % 10
    wrong = _tiny(seed=3).wrong_labels(y)
    assert not np.any(wrong == y)
    pairs = np.bincount(y * 10 + wrong, minlength=100).reshape(10, 10)
    assert np.all(np.diag(pairs) == 0)
    off = pairs[~np.eye(10, dtype=bool)]
    assert off.min() > 60 and off.max() < 145  # 100 expected for each of the 90 (true, wrong) pairs
    np.testing.assert_array_equal(_tiny(seed=3).wrong_labels(y), wrong)
    assert np.any(_tiny(seed=4).wrong_labels(y) != wrong)


def test_a_step_feeds_positives_then_negatives_as_one_batch():
    trainer = _tiny()
    x, y = _images(6), np.array([0, 1, 2, 3, 4, 9])
    state = trainer.negatives_rng.bit_generator.state
    wrong = trainer.wrong_labels(y)
    trainer.negatives_rng.bit_generator.state = state
    seen = []
    first = trainer.model.layers[0]
    real = first.forward
    first.forward = lambda z: seen.append(np.array(z)) or real(z)
    trainer.train_step(x, y)
    batch, neutral = seen  # the training batch, then the neutral sample for the classifier
    assert batch.shape == (12, 100) and neutral.shape == (6, 100)
    np.testing.assert_array_equal(neutral[:, :10], np.full((6, 10), 0.1))
    np.testing.assert_array_equal(batch[:6, :10], np.eye(10)[y])
    np.testing.assert_array_equal(batch[6:, :10], np.eye(10)[wrong])


# --- ops and layers ---------------------------------------------------------------------------------------
def test_length_normalize_gradient_matches_central_differences_in_float64(rng):
    x = rng.standard_normal((5, 9))
    (error,) = check_gradients(F.length_normalize_forward, F.length_normalize_backward, [x])
    assert error < 1e-8
    out, _ = F.length_normalize_forward(x)
    np.testing.assert_allclose(np.sqrt(np.mean(out**2, axis=1)), 1.0, rtol=1e-7)  # unit RMS: the direction only
    np.testing.assert_allclose(out, x / (np.sqrt(np.mean(x**2, axis=1, keepdims=True)) + 1e-8), rtol=1e-15)
    # an all-zero row stays zero, with a finite gradient (dout / eps)
    zero = np.zeros((1, 4))
    out, cache = F.length_normalize_forward(zero, eps=1e-3)
    np.testing.assert_array_equal(out, zero)
    np.testing.assert_allclose(F.length_normalize_backward(np.ones((1, 4)), cache), np.full((1, 4), 1e3))
    layer = LengthNormalize()
    np.testing.assert_array_equal(layer.forward(x), F.length_normalize_forward(x)[0])
    np.testing.assert_array_equal(layer.backward(x), F.length_normalize_backward(x, F.length_normalize_forward(x)[1]))


def test_binary_cross_entropy_with_logits_and_its_gradient(rng):
    logits, targets = 5 * rng.standard_normal((6, 3)), (rng.random((6, 3)) > 0.5).astype(float)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    assert F.binary_cross_entropy_with_logits(logits, targets)[0] == pytest.approx(expected, rel=1e-12)
    large = 1000 * logits  # no overflow: -log(sigmoid(z)) = log(1 + exp(-z)), also for |z| in the thousands
    expected = np.mean(targets * np.logaddexp(0, -large) + (1 - targets) * np.logaddexp(0, large))
    assert F.binary_cross_entropy_with_logits(large, targets)[0] == pytest.approx(expected, rel=1e-12)
    small, t = rng.standard_normal((4, 2)), targets[:4, :2]
    numeric = numerical_gradient(lambda z: F.binary_cross_entropy_with_logits(z, t)[0], small.copy(), None)
    assert rel_error(F.binary_cross_entropy_with_logits(small, t)[1], numeric) < 1e-8
    assert np.isfinite(F.binary_cross_entropy_with_logits(np.array([1e4, -1e4]), np.array([0.0, 1.0]))[0])


def test_full_grad_relu_passes_the_gradient_unchanged(rng):
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = FullGradReLU()
    np.testing.assert_array_equal(layer.forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(layer.backward(dout), dout)


# --- each layer's gradient ----------------------------------------------------------------------------
def _reference_layer(inputs, w, b, positives, running, peer_norm, relu_grad):
    """One FF layer written out in NumPy: (loss, dW, db, output z, new running means)."""
    normalised = inputs / (np.sqrt(np.mean(inputs**2, axis=1, keepdims=True)) + 1e-8)
    a = normalised @ w + b
    z = np.maximum(a, 0)
    logits = np.sum(z**2, axis=1) - z.shape[1]
    t = np.r_[np.ones(positives), np.zeros(len(z) - positives)]
    bce = np.mean(np.logaddexp(0, logits) - t * logits)
    dz = 2 * z * ((1 / (1 + np.exp(-logits)) - t) / len(t))[:, None]
    new_running = 0.9 * running + 0.1 * z[:positives].mean(axis=0)
    penalty = np.mean((new_running.mean() - new_running) ** 2)
    dz[:positives] += peer_norm * 0.1 * (2 * (new_running - new_running.mean()) / z.shape[1]) / positives
    da = dz * (a > 0) if relu_grad == "true" else dz
    return bce + peer_norm * penalty, normalised.T @ da, da.sum(axis=0), z, new_running


@pytest.mark.parametrize("relu_grad", ["full", "true"])
@pytest.mark.parametrize("peer_norm", [0.0, 0.7])
def test_each_layer_gets_the_gradient_of_its_own_loss_as_a_numpy_reference(relu_grad, peer_norm):
    trainer = _tiny(ff_relu_grad=relu_grad, peer_norm=peer_norm)
    x, y = _images(8), np.arange(8) % 10
    state = trainer.negatives_rng.bit_generator.state
    wrong = trainer.wrong_labels(y)
    trainer.negatives_rng.bit_generator.state = state
    linears = _linears(trainer)
    weights = [(lin.weight.data.copy(), lin.bias.data.copy()) for lin in linears]
    running = [trainer.running.buffers[f"layer{i}"].copy() for i in range(2)]
    loss = trainer.train_step(x, y)

    h = np.concatenate([trainer.embed(x, np.eye(10)[y]), trainer.embed(x, np.eye(10)[wrong])])
    total = 0.0
    for i, (lin, (w, b)) in enumerate(zip(linears, weights)):
        ref_loss, dw, db, z, new_running = _reference_layer(h, w, b, 8, running[i], peer_norm, relu_grad)
        np.testing.assert_allclose(lin.weight.grad, dw, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(lin.bias.grad, db, rtol=1e-10, atol=1e-14)
        expected_running = new_running if peer_norm else running[i]
        np.testing.assert_allclose(trainer.running.buffers[f"layer{i}"], expected_running, rtol=1e-12)
        if relu_grad == "true":  # then the gradient is the true one of the layer's loss: check it numerically

            def layer_loss(wk, i=i, h=h, b=b):
                return _reference_layer(h, wk, b, 8, running[i], peer_norm, relu_grad)[0]

            assert rel_error(dw, numerical_gradient(layer_loss, w.copy(), None)) < 1e-6
        total += ref_loss
        h = z  # the next layer's input: this layer's output, a constant
    assert loss == pytest.approx(total, rel=1e-12)  # train_step returns the sum of the layers' losses
    assert trainer.last_step["layer_peer_penalty"][0] > 0 or not peer_norm


def test_full_and_true_relu_gradients_differ_only_through_peer_normalisation():
    """The goodness gradient 2 z dL/dg vanishes wherever z = relu(.) = 0, so only the penalty tells them apart."""
    x, y = _images(8), np.arange(8) % 10

    def grads(relu_grad, peer_norm):
        trainer = _tiny(ff_relu_grad=relu_grad, peer_norm=peer_norm)
        trainer.train_step(x, y)
        return [p.grad for p in trainer.model.parameters()]

    for a, b in zip(grads("full", 0.0), grads("true", 0.0)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert any(not np.allclose(a, b) for a, b in zip(grads("full", 0.5), grads("true", 0.5)))


def test_no_gradient_crosses_layers():
    """Changing layer 2's weights changes nothing in layer 1's gradient (and does change layer 2's)."""
    x, y = _images(8), np.arange(8) % 10
    a, b = _tiny(hidden=(7, 5, 4)), _tiny(hidden=(7, 5, 4))
    second = _linears(b)[1]
    second.weight.data = second.weight.data * -3.0 + 0.1
    a.train_step(x, y)
    b.train_step(x, y)
    first_a, first_b = _linears(a)[0], _linears(b)[0]
    np.testing.assert_array_equal(first_a.weight.grad, first_b.weight.grad)
    np.testing.assert_array_equal(first_a.bias.grad, first_b.bias.grad)
    assert not np.allclose(_linears(a)[1].weight.grad, second.weight.grad)


# --- predictions ------------------------------------------------------------------------------------------
def _hand_set(trainer, v, w, classifier):
    """Layer 1: label pixel c -> unit c with weight v[c] (every other input ignored); layer 2: unit c -> unit c
    with weight w[c]; no biases; the classifier's weight as given."""
    first, second = _linears(trainer)
    first.weight.data = np.zeros((100, 10))
    first.weight.data[np.arange(10), np.arange(10)] = v
    second.weight.data = np.diag(w).astype(float)
    first.bias.data, second.bias.data = np.zeros(10), np.zeros(10)
    trainer.classifier.weight.data = classifier


def test_both_predictions_on_a_hand_checkable_network():
    """With label c embedded, z1 = k v_c e_c (k = 1 / RMS of the input), n(z1) = sqrt(10) e_c, so layer 2's
    goodness is 10 w_c**2 whatever the image: "goodness" scores exactly that (layer 1's k**2 v_c**2, which
    would pick another label, is left out). The neutral sample gives z1 = 0.1 k v, n(z1) = v / rms(v),
    z2 = v w / rms(v), and the classifier (identity here) reads n(z2) = v w / rms(v w)."""
    v = np.array([9.0, 1, 2, 1, 4, 6, 5, 7, 8, 1])  # layer 1's goodness alone would say 0
    w = np.array([1.0, 2, 3, 9, 5, 4, 3, 2, 1, 1])  # layer 2's says 3
    vw = v * w  # [9, 2, 6, 9, 20, 24, 15, 14, 8, 1]: the linear readout says 5
    x = _images(4)
    trainer = _tiny(hidden=(10, 10), ff_predict="goodness")
    np.testing.assert_array_equal(trainer.linear_scores(x), np.zeros((4, 10)))  # zero-initialised classifier
    _hand_set(trainer, v, w, np.eye(10))
    np.testing.assert_allclose(trainer.goodness_scores(x), np.tile(10 * w**2, (4, 1)), rtol=1e-6)
    np.testing.assert_allclose(trainer.linear_scores(x), np.tile(vw / np.sqrt(np.mean(vw**2)), (4, 1)), rtol=1e-6)
    np.testing.assert_array_equal(trainer.predict(x), trainer.goodness_scores(x))
    labels = np.array([3, 3, 5, 0])
    result = trainer.evaluate([(x, labels)])
    assert result["accuracy_goodness"] == 0.5 and result["accuracy_linear"] == 0.25 and result["accuracy"] == 0.5
    trainer.ff_predict = "linear"
    np.testing.assert_array_equal(trainer.predict(x), trainer.linear_scores(x))
    assert trainer.evaluate([(x, labels)])["accuracy"] == 0.25
    assert trainer.stats()["last_evaluation"]["accuracy_goodness"] == 0.5


# --- the trainer's place in tinydgl -------------------------------------------------------------------------
def test_ff_builds_its_own_network_and_refuses_models_that_are_not_fully_connected():
    trainer = _tiny(hidden=(7, 5))
    assert "ff" in TRAINERS and isinstance(trainer, TRAINERS["ff"])
    assert [type(layer).__name__ for layer in trainer.model.layers[0].layers] == [
        "Flatten",
        "LengthNormalize",
        "Linear",
        "FullGradReLU",
    ]
    assert isinstance(_tiny(ff_relu_grad="true").model.layers[1].layers[-1], ReLU)
    assert trainer.model.num_parameters() == 100 * 7 + 7 + 7 * 5 + 5
    assert trainer.classifier.weight.shape == (5, 10) and trainer.classifier.bias is None
    assert sorted(trainer.auxiliary_modules()) == ["classifier", "peer_norm"]
    with pytest.raises(ValueError, match=r"fully connected .*--model mlp.*Conv2d"):
        build_trainer("ff", build_model("cnn", 1, 28, 10), lambda p: SGD(p, lr=0.1))
    with pytest.raises(ValueError, match="2 or more"):
        _tiny(hidden=(7,))
    with pytest.raises(ValueError, match="ff_predict"):
        _tiny(ff_predict="votes")


def test_the_classifier_learns_at_its_own_scaled_rate():
    model = build_model("mlp", 1, 10, 10, dtype="float64")
    trainer = FFTrainer(model, lambda p: SGD(p, lr=1e-3, momentum=0.9, weight_decay=3e-4), ff_hidden=(4, 4))
    layers, classifier = trainer.optimizers()
    assert (layers.lr, layers.weight_decay) == (1e-3, 3e-4)
    assert classifier.lr == pytest.approx(1e-2) and classifier.weight_decay == pytest.approx(3e-3)  # the reference's


def _loaders(ds, n=320, batch=64):
    train = DataLoader(ds.x_train[:n], ds.y_train[:n], batch, seed=3, dtype="float64")
    test = DataLoader(ds.x_test[:100], ds.y_test[:100], 100, shuffle=False, dtype="float64")
    return train, test


def _digits_ff(seed=0):
    model = build_model("mlp", 1, 28, 10, dtype="float64")
    return FFTrainer(model, lambda p: SGD(p, lr=3e-3, momentum=0.9), ff_hidden=(16, 12), seed=seed)


def test_state_dict_round_trip_keeps_weights_classifier_running_means_and_optimizers(digits):
    train, test = _loaders(digits)
    trainer = _digits_ff()
    fit(trainer, train, test, 1, **QUIET)
    state = trainer.state_dict()
    assert {"0.2.weight", "1.1.bias"} <= set(state["model"]) and set(state["aux"]["peer_norm"]) == {"layer0", "layer1"}
    assert not np.allclose(state["aux"]["peer_norm"]["layer0"], 0.5)  # it moved
    copy = _digits_ff(seed=9)
    copy.load_state_dict(state)
    _assert_same(trainer, copy)
    x, _ = next(iter(test))
    np.testing.assert_array_equal(copy.linear_scores(x), trainer.linear_scores(x))
    np.testing.assert_array_equal(copy.goodness_scores(x), trainer.goodness_scores(x))


def test_resume_after_an_epoch_and_after_sigterm_mid_epoch_is_bit_identical(digits, tmp_path):
    train, test = _loaders(digits)
    straight = _digits_ff()
    expected = fit(straight, train, test, 2, **QUIET)

    first = _digits_ff()
    fit(first, train, test, 1, checkpoint_dir=str(tmp_path / "a"), **QUIET)
    resumed = _digits_ff()
    got = fit(resumed, train, test, 2, checkpoint_dir=str(tmp_path / "a"), resume=True, **QUIET)
    _assert_same(straight, resumed)
    assert [h["test_accuracy"] for h in got] == [h["test_accuracy"] for h in expected]
    assert resumed.stats() == straight.stats()

    stopped, calls = _digits_ff(), {"n": 0}
    real = stopped.train_step

    def step(x, y):  # SIGTERM during epoch 2's second batch, as a cluster's pre-emption would send it
        calls["n"] += 1
        loss = real(x, y)
        if calls["n"] == 5 + 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    stopped.train_step = step
    with pytest.raises(RunStopped):
        fit(stopped, train, test, 2, checkpoint_dir=str(tmp_path / "b"), stop_on_signals=True, **QUIET)
    again = _digits_ff()
    fit(again, train, test, 2, checkpoint_dir=str(tmp_path / "b"), resume=True, **QUIET)
    _assert_same(straight, again)
    assert again.negatives_rng.bit_generator.state == straight.negatives_rng.bit_generator.state


def test_runs_on_a_backend_without_numpy_conversions(backend_case):
    """float32, float64, and array_api_strict on a second device: no silent NumPy conversion (the code path
    CuPy takes)."""
    x, y = backend_case.put(_images(6)), backend_case.put(np.arange(6) % 10)
    with backend_case.use():
        trainer = _tiny(hidden=(6, 5), dtype=backend_case.dtype)
        loss = trainer.train_step(x, y)
        result = trainer.evaluate([(x, y)])
    assert np.isfinite(float(loss)) and 0 <= result["accuracy_goodness"] <= 1
    backend_case.check_device(_linears(trainer)[0].weight.data)
    rows, dout = np.random.default_rng(1).standard_normal((2, 4, 6))
    rows[0] = 0.0  # the zero-row branch too
    out, cache = F.length_normalize_forward(backend_case.put(rows))
    dx = F.length_normalize_backward(backend_case.put(dout), cache)
    backend_case.check_device(dx)
    expected_out, expected_cache = F.length_normalize_forward(rows)
    np.testing.assert_allclose(to_numpy(out), expected_out, rtol=backend_case.rtol)
    np.testing.assert_allclose(to_numpy(dx), F.length_normalize_backward(dout, expected_cache), rtol=backend_case.rtol)


@pytest.mark.gpu
def test_runs_on_cupy_like_on_numpy(gpu_case):
    x, y = _images(6).astype(np.float32), np.arange(6) % 10
    host = _tiny(hidden=(6, 5), dtype="float32")
    losses = [host.train_step(x, y) for _ in range(2)]
    with gpu_case.use():
        device = _tiny(hidden=(6, 5), dtype="float32")
        device_losses = [float(device.train_step(gpu_case.put(x), gpu_case.put(y))) for _ in range(2)]
        scores = device.goodness_scores(gpu_case.put(x))
    np.testing.assert_allclose(device_losses, losses, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(scores), host.goodness_scores(x), rtol=1e-4)


# --- learning -----------------------------------------------------------------------------------------
def _learned(digits, broken=None, normalised=False, monkeypatch=None):
    """4 epochs of FF (200, 200) on all 4,000 bundled digits, SGD momentum 0.9 lr 3e-3 batch 100: the last
    evaluation's accuracies on the 1,000 test digits."""
    stats = dict(mean=digits.mean, std=digits.std) if normalised else {}
    train = DataLoader(digits.x_train, digits.y_train, 100, seed=0, **stats)
    test = DataLoader(digits.x_test, digits.y_test, 500, shuffle=False, **stats)
    units = dict(input_mean=digits.mean[0], input_std=digits.std[0]) if normalised else {}
    trainer = build_trainer(
        "ff", build_model("mlp", 1, 28, 10), lambda p: SGD(p, lr=3e-3, momentum=0.9), ff_hidden=(200, 200), **units
    )
    if broken == "same-labels":  # the negatives carry the true label: nothing to tell apart
        trainer.wrong_labels = lambda y: y
    elif broken == "flipped":  # goodness should be *low* for positives
        real = F.binary_cross_entropy_with_logits

        def flipped(logits, targets):
            loss, grad = real(-logits, targets)
            return loss, -grad

        monkeypatch.setattr(F, "binary_cross_entropy_with_logits", flipped)
    fit(trainer, train, test, 4, **QUIET)
    return trainer.last_evaluation


def test_ff_learns_the_digits_and_a_broken_signal_does_not(digits, monkeypatch):
    """Measured 2026-12-03 (numpy, 1 BLAS thread, ~0.8 s a run), goodness / linear test accuracy:
    FF 0.792 / 0.866; standardised inputs with the labels in their units (input_mean/input_std) 0.685 / 0.870;
    negatives = positives 0.124 / 0.462; goodness sign flipped 0.003 / 0.854; layers frozen at their
    initial weights (only the classifier learns; lesson 11) 0.063 / 0.791.
    So the goodness prediction is what shows FF learning: the linear readout of a random ReLU network
    already reaches 0.79 on these digits in 4 epochs, and a broken signal can reach 0.85. Thresholds:
    goodness >= 0.6 for FF (a broken signal stays below 0.25), linear >= 0.75 (it learns, if not from FF)."""
    good = _learned(digits)
    assert good["accuracy_goodness"] >= 0.6 and good["accuracy_linear"] >= 0.75, good
    normalised = _learned(digits, normalised=True)
    assert normalised["accuracy_goodness"] >= 0.6, normalised
    for broken in ("same-labels", "flipped"):
        result = _learned(digits, broken, monkeypatch=monkeypatch)
        assert result["accuracy_goodness"] < 0.25, (broken, result)
        monkeypatch.undo()


# --- the command --------------------------------------------------------------------------------------
def test_the_command_options_reach_the_trainer_and_bad_values_are_refused(capsys):
    args = build_parser().parse_args(
        [
            "train",
            "--trainer",
            "ff",
            "--model",
            "mlp",
            "--ff-hidden",
            "30,20",
            "--ff-relu-grad",
            "true",
            "--peer-norm",
            "0",
            "--ff-predict",
            "goodness",
            "--ff-classifier-lr-scale",
            "3",
            "--ff-classifier-wd-scale",
            "0",
            "--seed",
            "5",
        ]
    )
    assert trainer_options(args, "ff") == {
        "ff_hidden": [30, 20],
        "ff_relu_grad": "true",
        "peer_norm": 0.0,
        "ff_predict": "goodness",
        "ff_classifier_lr_scale": 3.0,
        "ff_classifier_wd_scale": 0.0,
        "seed": 5,
    }
    for bad in (["--ff-hidden", "30,0"], ["--ff-relu-grad", "half"], ["--peer-norm", "-1"], ["--ff-predict", "x"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(["train", "--trainer", "ff", *bad])
        assert info.value.code == 2
    assert main(["train", "--trainer", "ff", "--model", "cnn", "--no-progress"]) == 1
    assert "--model mlp" in capsys.readouterr().err
    assert main(["train", "--trainer", "bp", "--model", "mlp", "--peer-norm", "0.1", "--no-progress"]) == 1
    assert "--peer-norm do(es) not apply to --trainer bp" in capsys.readouterr().err


def test_the_command_trains_ff(capsys, tmp_path):
    metrics = tmp_path / "ff.json"
    code = main(
        [
            "train",
            "--trainer",
            "ff",
            "--model",
            "mlp",
            "--ff-hidden",
            "32,32",
            "--limit-train",
            "400",
            "--limit-test",
            "100",
            "--no-progress",
            "--metrics-json",
            str(metrics),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ff on mlp" in out and "BN recalibration" not in out
    import json

    stats = json.loads(metrics.read_text())["trainer_stats"]
    assert stats["predict"] == "linear" and set(stats["last_evaluation"]) >= {"accuracy_linear", "accuracy_goodness"}


def test_the_command_writes_labels_in_the_units_of_the_loaders_images():
    """The loader standardises images with the dataset's statistics; `make_trainer` hands them to ff, so the
    label pixels are exactly 1 / 0 / 0.1 in raw pixel units, as in the reference."""
    from tinydgl.cli.parser import build_parser
    from tinydgl.cli.train import load_data, make_trainer

    args = build_parser().parse_args(
        [
            "train",
            "--trainer",
            "ff",
            "--model",
            "mlp",
            "--limit-train",
            "64",
            "--limit-test",
            "20",
            "--ff-hidden",
            "20,20",
            "--no-progress",
        ]
    )
    dataset, _, _ = load_data(args)
    trainer, _ = make_trainer(args, "ff", dataset)
    assert trainer.input_mean == pytest.approx(dataset.mean[0]) and trainer.input_std == pytest.approx(dataset.std[0])
    assert trainer.input_std != 1.0
