"""Every method as its authors' code trains it (issue 26): FF's schedule and classifier rate, Nesterov
momentum, raw pixels, the feedback family's signal scale, DNI's synthesizer placement and units, async DGL's
per-module epoch, and the named reference recipes."""

import json

import numpy as np
import pytest

from tinydgl.cli import main
from tinydgl.cli.parser import apply_recipe, build_parser
from tinydgl.cli.train import load_data, make_trainer
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import NAG, LR_SCHEDULES, SGD, build_optimizer
from tinydgl.recipes import RECIPES
from tinydgl.train import fit
from tinydgl.trainers import build_trainer
from trainer_checks import RecordGradients


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


# --- Forward-Forward: the classifier's rate and loeweX's cool-down --------------------------------------------
def test_ff_classifier_keeps_its_10x_rate_through_a_constant_schedule(digits):
    """The loop sets lr = base_lr * factor every epoch; the classifier's 10x must survive it (it did not:
    the classifier trained at the layers' 1e-3)."""
    train = DataLoader(digits.x_train[:200], digits.y_train[:200], 100, seed=0)
    test = DataLoader(digits.x_test[:100], digits.y_test[:100], 100, shuffle=False)
    model = build_model("mlp", 1, 28, 10, seed=0)
    trainer = build_trainer("ff", model, lambda p: SGD(p, lr=1e-3, momentum=0.9), ff_hidden=(20, 20))
    fit(trainer, train, test, 1, progress=False, log=lambda *_: None, lr_schedule="constant")
    assert trainer.optimizer.lr == pytest.approx(1e-3)
    assert trainer.classifier_optimizer.lr == pytest.approx(1e-2)


@pytest.mark.parametrize("epochs, factors", [(1, [1.0]), (2, [1.0, 1.0]), (5, [1.0, 1.0, 1.0, 1.2, 0.8])])
def test_cooldown_is_loewex_s_with_its_0_based_epoch(epochs, factors):
    """loeweX's utils.py: epoch e (0-based) > E // 2 trains at 2 (1 + E - e) / E (issue 26's numbers)."""
    cooldown = LR_SCHEDULES["cooldown"]
    assert [cooldown(e, epochs) for e in range(1, epochs + 1)] == pytest.approx(factors)


# --- Nesterov momentum --------------------------------------------------------------------------------------
def test_nag_follows_torch_s_nesterov_sgd_step_by_step():
    """torch.optim.SGD(nesterov=True): g = grad + wd p; v = mu v + g (v = g at first); p -= lr (g + mu v)."""
    from tinydgl.nn.module import Parameter

    p = Parameter(np.array([1.0, -2.0]))
    opt = build_optimizer("nag", [p], lr=0.1, weight_decay=0.01)
    assert isinstance(opt, NAG) and opt.momentum == 0.9
    grads = [np.array([0.5, 1.0]), np.array([-1.0, 0.25]), np.array([2.0, -0.5])]
    # by hand, one coordinate at a time, with plain floats
    expected = []
    for k in range(2):
        w, v = [1.0, -2.0][k], None
        for grad in grads:
            g = grad[k] + 0.01 * w
            v = g if v is None else 0.9 * v + g
            w = w - 0.1 * (g + 0.9 * v)
        expected.append(w)
    for grad in grads:
        p.grad = grad
        opt.step()
    np.testing.assert_allclose(p.data, expected, rtol=1e-12)
    plain = Parameter(np.array([1.0, -2.0]))
    heavy_ball = SGD([plain], lr=0.1, momentum=0.9, weight_decay=0.01)
    for grad in grads:
        plain.grad = grad
        heavy_ball.step()
    assert not np.allclose(plain.data, p.data)  # Nesterov is not plain momentum


# --- raw pixels ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["dataset", "none"])
def test_normalize_none_feeds_raw_pixels(normalize, digits):
    args = build_parser().parse_args(["train", "--normalize", normalize, "--no-progress", "--batch-size", "50"])
    dataset, train_loader, test_loader = load_data(args)
    x, _ = next(iter(test_loader))
    raw = np.asarray(dataset.x_test[:50], np.float32).reshape(x.shape) / 255
    if normalize == "none":
        np.testing.assert_allclose(x, raw, rtol=1e-6)
        assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
    else:
        np.testing.assert_allclose(x, (raw - dataset.mean[0]) / dataset.std[0], rtol=1e-4, atol=1e-5)


# --- the feedback family's signal scale -----------------------------------------------------------------------
def _tiny_bce_net():
    return build_model("mlp", 1, 3, 4, seed=0, dtype="float64", hidden=(5, 6), batchnorm=False, activation="tanh")


@pytest.mark.parametrize("name", ["dfa", "sdfa", "drtp"])
def test_feedback_scale_sum_hands_each_sample_its_own_signal(name):
    """The DRTP reference code's hook: e @ B, sign(e) @ B or onehot @ B per sample, which the weight gradient
    sums over the batch (no 1/N, no 1/(N C)); the output layer keeps the mean BCE's true gradient."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 1, 3, 3)), np.array([0, 3, 1, 1, 2])
    model = _tiny_bce_net()
    trainer = build_trainer(name, model, RecordGradients, loss="bce", feedback_scale="sum")
    (w1, b1), (w2, b2), (w3, b3) = [
        (layer.weight.data, layer.bias.data)
        for layer in (model.layers[0].layers[1], model.layers[1].layers[0], model.layers[2].layers[0])
    ]
    feedback = trainer.feedback if name != "drtp" else [m.feedback for m in trainer.modules[:-1]]
    h1 = np.tanh(x.reshape(5, -1) @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    z = h2 @ w3 + b3
    onehot = np.eye(4)[y]
    e = 1 / (1 + np.exp(-z)) - onehot  # per sample, unscaled
    signal = {"dfa": e, "sdfa": np.sign(e), "drtp": onehot}[name]
    da1, da2 = (signal @ feedback[0]) * (1 - h1**2), (signal @ feedback[1]) * (1 - h2**2)
    dz = e / (5 * 4)  # the output layer: the mean BCE's gradient
    expected = [x.reshape(5, -1).T @ da1, da1.sum(0), h1.T @ da2, da2.sum(0), h2.T @ dz, dz.sum(0)]
    trainer.train_step(x, y)
    got = [g for opt in trainer.optimizers() for g in opt.grads]
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, err_msg=f"parameter {i}")
    with pytest.raises(ValueError, match="choose one of: mean, sum"):
        build_trainer(name, _tiny_bce_net(), RecordGradients, feedback_scale="batch")


# --- DNI: placement and units -------------------------------------------------------------------------------
@pytest.mark.parametrize("placement, units", [("pre-activation", "raw"), ("post-activation", "per-example")])
def test_dni_synthesizer_placement_and_units_on_a_2_sample_batch(placement, units):
    """One interface after hidden block 2 of a 4-3-3-2 ReLU net, a linear synthesizer with known weights:
    pre-activation reads a2 (before the ReLU, which moves to the group above) and raw units hand the block
    M(a2) itself and regress M onto the raw dL/da2; post-activation, per-example reads relu(a2), hands
    M / N and regresses onto N dL/dh2."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 1, 2, 2)), np.array([1, 0])
    model = build_model("mlp", 1, 2, 2, seed=0, dtype="float64", hidden=(3, 3), batchnorm=False)
    trainer = build_trainer(
        "dni",
        model,
        RecordGradients,
        interfaces=[1],
        synthesizer="linear",
        synth_placement=placement,
        synth_units=units,
    )
    synth = trainer.synthesizers[0].body.layers[0]
    synth.weight.data, synth.bias.data = rng.normal(size=(3, 3)), rng.normal(size=3)
    (w1, b1), (w2, b2), (w3, b3) = [
        (layer.weight.data, layer.bias.data)
        for layer in (model.layers[0].layers[1], model.layers[1].layers[0], model.layers[2].layers[0])
    ]
    flat = x.reshape(2, -1)
    a1 = flat @ w1 + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w2 + b2
    h2 = np.maximum(a2, 0)
    read = a2 if placement == "pre-activation" else h2
    s = read @ synth.weight.data + synth.bias.data
    n = 1 if units == "raw" else 2
    # the blocks below the interface: s / n at what the synthesizer reads
    d_read = s / n
    da2 = d_read if placement == "pre-activation" else d_read * (a2 > 0)
    dh1 = da2 @ w2.T
    da1 = dh1 * (a1 > 0)
    # the classifier: the true gradient of the mean cross-entropy
    z = h2 @ w3 + b3
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(2)[y]) / 2
    dh2 = dz @ w3.T
    true = dh2 * (a2 > 0) if placement == "pre-activation" else dh2  # dL/d(what the synthesizer reads)
    target = true * n
    dpred = 2 * (s - target) / (s.size if units == "per-example" else 2)  # raw: koz4k's sum over features
    expected = [flat.T @ da1, da1.sum(0), h1.T @ da2, da2.sum(0), h2.T @ dz, dz.sum(0), read.T @ dpred, dpred.sum(0)]
    trainer.train_step(x, y)
    got = [g for opt in trainer.optimizers() for g in opt.grads]
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, err_msg=f"parameter {i}")


def test_dni_koz4k_synthesizer_and_zero_init():
    """mlp1: Linear -> ReLU -> Linear of 256 by default, no batch norm; zero_init "weight" keeps the bias."""
    model = build_model("mlp", 1, 28, 10, seed=0)
    trainer = build_trainer(
        "cdni", model, RecordGradients, interfaces=[1], synthesizer="mlp1", synth_zero_init="weight"
    )
    layers = trainer.synthesizers[0].body.layers
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert layers[0].weight.shape == (256 + 10, 256) and layers[2].weight.shape == (256, 256)
    assert not np.any(layers[2].weight.data) and np.any(layers[2].bias.data)
    # koz4k's trigger and context layers, each drawn for its own fan-in (256 and 10), added
    trigger_rows, label_rows = np.abs(layers[0].weight.data[:256]), np.abs(layers[0].weight.data[256:])
    assert trigger_rows.max() <= 256**-0.5 < label_rows.max() <= 10**-0.5
    assert 256**-0.5 < np.abs(layers[0].bias.data).max() <= 256**-0.5 + 10**-0.5
    default = build_trainer("dni", build_model("mlp", 1, 28, 10, seed=0), RecordGradients, synthesizer="mlp1")
    assert not np.any(default.synthesizers[0].body.layers[2].bias.data)
    with pytest.raises(ValueError, match="ends with MaxPool2d"):
        build_trainer("dni", build_model("cnn", 1, 28, 10), RecordGradients, synth_placement="pre-activation")


# --- async DGL: each module's own epoch ---------------------------------------------------------------------
@pytest.mark.parametrize("module_epoch", ["first", "own"])
def test_async_dgl_module_epoch(module_epoch, digits):
    """A module picked half as often makes about half the updates by the end of module 1's epoch ("first");
    with "own" every module makes one epoch of updates, the finished ones only forwarding."""
    train = DataLoader(digits.x_train[:640], digits.y_train[:640], 32, seed=0, mean=digits.mean, std=digits.std)
    test = DataLoader(digits.x_test[:100], digits.y_test[:100], 100, shuffle=False, mean=digits.mean, std=digits.std)
    model = build_model("mlp", 1, 28, 10, seed=0, hidden=(32, 32, 32))
    trainer = build_trainer(
        "async-dgl",
        model,
        lambda p: build_optimizer("adam", p, lr=1e-3),
        slow_module=1,
        slowdown=2.0,
        buffer_size=4,
        module_epoch=module_epoch,
    )
    assert len(trainer.modules) == 3
    for epochs in (1, 2):  # the second call resumes nothing: it trains epoch 2 on the same trainer
        fit(trainer, train, test, epochs, progress=False, log=lambda *_: None) if epochs == 1 else fit(
            trainer, train, test, 1, progress=False, log=lambda *_: None
        )
        steps = [m["steps"] for m in trainer.stats()["modules"]]
        assert steps[0] == epochs * len(train)
        if module_epoch == "own":
            assert steps == [epochs * len(train)] * 3
        else:
            assert steps[1] < 0.8 * epochs * len(train)


# --- recipes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_sets_its_options_and_given_options_override_it(name, digits):
    recipe = RECIPES[name]
    parser = build_parser()
    argv = ["train", "--recipe", name]
    args = apply_recipe(parser, argv, parser.parse_args(argv))
    assert args.trainer == recipe.trainers[0] and args.recipe == name
    for dest, value in {**recipe.options, **recipe.method_options}.items():
        assert getattr(args, dest) == value, dest
    argv = ["train", "--recipe", name, "--lr", "0.0123", "--batch-size", "7"]
    over = apply_recipe(parser, argv, parser.parse_args(argv))
    assert (over.lr, over.batch_size) == (0.0123, 7)
    assert over.optimizer == recipe.options["optimizer"]
    trainer, lr = make_trainer(args, args.trainer, digits)  # the trainer is built with them
    assert lr == recipe.options["lr"] and type(trainer).__name__ != "BackpropTrainer"
    for dest, value in recipe.method_options.items():
        attribute = {
            "aux": None,
            "boundaries": None,
            "interfaces": "interfaces",
            "synthesizer": "synthesizer_kind",
            "buffer_size": None,
            "slow_module": "slow_module",
            "ff_hidden": "hidden",
            "ff_predict": "ff_predict",
            "feedback_scale": "feedback_scale",
            "module_epoch": "module_epoch",
            "synth_placement": "synth_placement",
            "synth_units": "synth_units",
        }.get(dest)
        if attribute:
            assert getattr(trainer, attribute) in (value, list(value) if isinstance(value, tuple) else value), dest


def test_a_recipe_serves_its_family_and_its_metrics_name_it(tmp_path, capsys):
    """bp under the drtp recipe takes the common options but not dfa's method options; the metrics JSON
    records the recipe; another family's trainer is refused; `tinydgl recipes` lists every recipe's source."""
    parser = build_parser()
    argv = ["train", "--recipe", "drtp", "--trainer", "bp"]
    args = apply_recipe(parser, argv, parser.parse_args(argv))
    assert args.optimizer == "nag" and args.hidden == [1000] and args.loss == "bce" and args.feedback_scale is None
    trainer, _ = make_trainer(args, "bp", load_dataset("mnist-small", limit_train=100, limit_test=100))
    assert trainer.loss == "bce"
    path = tmp_path / "m.json"
    assert (
        main(
            [
                "train",
                "--recipe",
                "drtp",
                "--trainer",
                "sdfa",
                "--limit-train",
                "200",
                "--limit-test",
                "100",
                "--no-progress",
                "--metrics-json",
                str(path),
            ]
        )
        == 0
    )
    config = json.loads(path.read_text())["config"]
    assert config["recipe"] == "drtp" and config["optimizer"] == "nag" and config["normalize"] == "none"
    assert main(["train", "--recipe", "drtp", "--trainer", "dni", "--no-progress"]) == 1
    assert "--recipe drtp is for --trainer drtp, dfa" in capsys.readouterr().err
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for recipe in RECIPES.values():
        assert f"{recipe.name}: " in out and recipe.repo in out


def test_ff_defaults_learn_and_options_override_them():
    """--trainer ff alone: the reference's network and raw pixels with Adam 2e-4 (the command's general
    defaults, Adam 2e-3 on standardised pixels, leave FF under the shallow floor); given options override."""
    parser = build_parser()
    args = apply_recipe(parser, ["train", "--trainer", "ff"], parser.parse_args(["train", "--trainer", "ff"]))
    assert (args.model, args.optimizer, args.lr, args.batch_size, args.normalize, args.recipe) == (
        "mlp",
        "adam",
        2e-4,
        100,
        "none",
        None,
    )
    argv = ["train", "--trainer", "ff", "--optimizer", "sgd", "--lr", "1e-3"]
    args = apply_recipe(parser, argv, parser.parse_args(argv))
    assert (args.optimizer, args.lr, args.model) == ("sgd", 1e-3, "mlp")


@pytest.mark.slow
def test_ff_learns_at_its_defaults_above_the_shallow_floor(tmp_path):
    """`tinydgl train --trainer ff --model mlp --epochs 3` on the bundled digits: above the shallow floor of
    0.82 (the general defaults gave 0.766; measured with these, 2026-12-06: 0.889)."""
    path = tmp_path / "ff.json"
    assert (
        main(
            [
                "train",
                "--trainer",
                "ff",
                "--model",
                "mlp",
                "--epochs",
                "3",
                "--no-progress",
                "--metrics-json",
                str(path),
            ]
        )
        == 0
    )
    assert json.loads(path.read_text())["test_accuracy"] > 0.82


def test_mlp_without_biases_and_with_batch_norm_on_the_logits():
    """koz4k's DNI example net: no Linear biases, batch norm after the output layer too."""
    model = build_model("mlp", 1, 28, 10, seed=0, bias=False, output_batchnorm=True)
    linears = [m for block in model.layers for m in block.layers if type(m).__name__ == "Linear"]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert type(model.layers[-1].layers[-1]).__name__ == "BatchNorm1d"
    assert model.num_parameters() == 784 * 256 + 256 * 256 + 256 * 10 + 2 * (256 + 256 + 10)


# --- the steps themselves, against the authors' definitions in PyTorch (optional: skipped without torch) -------
def test_ff_steps_match_loewex_s_step_in_torch(digits):
    """loeweX's ff_model.py step, its losses written out in torch and differentiated by autograd: every layer's
    weights and biases, the classifier and the running means agree with FFTrainer's after 8 steps of SGD
    (two parameter groups, momentum 0.9, weight decay), the rate halved mid-way as the cool-down does."""
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    hidden, n = (30, 20, 20), 10
    model = build_model("mlp", 1, 28, 10, seed=0, dtype="float64")
    trainer = build_trainer("ff", model, lambda p: SGD(p, lr=1e-3, momentum=0.9, weight_decay=3e-4), ff_hidden=hidden)
    linears = [block.layers[-2] for block in trainer.model.layers]
    weights = [torch.tensor(m.weight.data.T.copy(), requires_grad=True) for m in linears]  # torch: (out, in)
    biases = [torch.tensor(m.bias.data.copy(), requires_grad=True) for m in linears]
    classifier = torch.zeros(10, sum(hidden[1:]), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD(
        [
            {"params": weights + biases, "lr": 1e-3, "weight_decay": 3e-4, "momentum": 0.9},
            {"params": [classifier], "lr": 1e-2, "weight_decay": 3e-3, "momentum": 0.9},
        ]
    )
    running = [torch.full((h,), 0.5, dtype=torch.float64) for h in hidden]

    def norm(z):
        return z / (torch.sqrt(torch.mean(z**2, dim=-1, keepdim=True)) + 1e-8)

    class FullGradReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            return z.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            return grad

    rng = np.random.default_rng(1)
    images = digits.x_train.reshape(len(digits.x_train), -1) / 255.0
    for step in range(8):
        pick = rng.choice(len(images), n, replace=False)
        x, y = images[pick], digits.y_train[pick].astype(np.int64)
        wrong = (y + rng.integers(1, 10, size=n)) % 10
        trainer.wrong_labels = lambda labels, wrong=wrong: wrong
        if step == 4:
            trainer.optimizer.lr /= 2
            trainer.classifier_optimizer.lr /= 2
            for group in opt.param_groups:
                group["lr"] /= 2
        trainer.train_step(x, y)
        xt, yt = torch.tensor(x), torch.tensor(y)
        positive, negative, neutral = xt.clone(), xt.clone(), xt.clone()
        positive[:, :10], negative[:, :10], neutral[:, :10] = (
            tF.one_hot(yt, 10),
            tF.one_hot(torch.tensor(wrong), 10),
            0.1,
        )
        opt.zero_grad()
        z, loss = norm(torch.cat([positive, negative])), 0.0
        targets = torch.cat([torch.ones(n), torch.zeros(n)]).double()
        for i, (w, b) in enumerate(zip(weights, biases)):
            z = FullGradReLU.apply(z @ w.T + b)
            running[i] = running[i].detach() * 0.9 + z[:n].mean(0) * 0.1
            loss = loss + 0.03 * torch.mean((running[i].mean() - running[i]) ** 2)
            loss = loss + tF.binary_cross_entropy_with_logits(torch.sum(z**2, -1) - z.shape[1], targets)
            z = norm(z.detach())
        with torch.no_grad():
            h, features = norm(neutral), []
            for i, (w, b) in enumerate(zip(weights, biases)):
                h = norm(FullGradReLU.apply(h @ w.T + b))
                features += [h] if i >= 1 else []
        loss = loss + tF.cross_entropy(torch.cat(features, -1) @ classifier.T, yt)
        loss.backward()
        opt.step()
    for m, w, b in zip(linears, weights, biases):
        np.testing.assert_allclose(m.weight.data, w.detach().numpy().T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.bias.data, b.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trainer.classifier.weight.data, classifier.detach().numpy().T, rtol=1e-9, atol=1e-12)
    for i, r in enumerate(running):
        np.testing.assert_allclose(trainer.running.buffers[f"layer{i}"], r.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert np.abs(trainer.classifier.weight.data).max() > 1e-3  # the steps moved it: the comparison is not vacuous


def test_bp_with_bce_and_nag_matches_the_drtp_code_s_step_in_torch(digits):
    """The DRTP code's BP (train.py: tanh hidden layer, sigmoid output, F.binary_cross_entropy averaged over
    N x classes, torch.optim.SGD(momentum=0.9, nesterov=True)): tinydgl's `bp --loss bce` with `nag` takes
    the same steps from the same weights."""
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    model = build_model("mlp", 1, 28, 10, hidden=(30,), activation="tanh", batchnorm=False, seed=0, dtype="float64")
    trainer = build_trainer("bp", model, lambda p: NAG(p, lr=0.05, momentum=0.9), loss="bce")
    linears = [m for block in model.layers for m in block.layers if type(m).__name__ == "Linear"]
    weights = [torch.tensor(m.weight.data.T.copy(), requires_grad=True) for m in linears]
    biases = [torch.tensor(m.bias.data.copy(), requires_grad=True) for m in linears]
    start = [w.detach().clone() for w in weights]
    opt = torch.optim.SGD(weights + biases, lr=0.05, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(0)
    images = digits.x_train / 255.0
    for _ in range(8):
        pick = rng.choice(len(images), 10, replace=False)
        x, y = images[pick], digits.y_train[pick].astype(np.int64)
        trainer.train_step(x, y)
        opt.zero_grad()
        hidden = torch.tanh(torch.tensor(x.reshape(len(x), -1)) @ weights[0].T + biases[0])
        output = torch.sigmoid(hidden @ weights[1].T + biases[1])
        tF.binary_cross_entropy(output, tF.one_hot(torch.tensor(y), 10).double()).backward()
        opt.step()
    for m, w, b in zip(linears, weights, biases):
        np.testing.assert_allclose(m.weight.data, w.detach().numpy().T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.bias.data, b.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert max(float((w.detach() - s).abs().max()) for w, s in zip(weights, start)) > 1e-3
