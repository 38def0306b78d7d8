"""PEPITA (two forward passes, trainers/pepita.py) and Nøkland & Eidnes' local losses (pred, sim, predsim:
ops/similarity.py, trainers/heads.py): the similarity op against numerical gradients in float64, PEPITA's
update against a hand computation on a 2-sample batch, learning on real digits above the shallow floor of
the same network, and PEPITA's resume."""

import numpy as np
import pytest

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.gradcheck import check_gradients, numerical_gradient, rel_error
from tinydgl.models import build_model
from tinydgl.optim import SGD, build_optimizer
from tinydgl.train import fit
from tinydgl.trainers import build_trainer
from tinydgl.trainers.heads import LocalLossHead, aux_head
from tinydgl.trainers.pepita import PEPITATrainer
from trainer_checks import assert_same_trainer_state

QUIET = dict(progress=False, log=lambda *_: None)


# --- the similarity-matching loss -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7), (6, 4, 3, 3), (5, 2, 3, 3)], ids=["flat", "channel-std", "few-channels"])
def test_similarity_matrix_backward_matches_numerical_gradients(shape):
    """(N, D) rows; feature maps with C > 3 summarised by each channel's spatial std; C <= 3 flattened."""
    x = np.random.default_rng(0).standard_normal(shape)
    (error,) = check_gradients(F.similarity_matrix_forward, F.similarity_matrix_backward, [x])
    assert error < 1e-7


def test_similarity_matching_loss_gradient_and_values():
    rng = np.random.default_rng(1)
    h, y = rng.standard_normal((6, 5)), np.array([0, 1, 1, 2, 0, 2])
    loss, dh = F.similarity_matching_loss(h, y, 3)
    numeric = numerical_gradient(lambda v: np.array(F.similarity_matching_loss(v, y, 3)[0]), h, np.array(1.0))
    assert rel_error(dh, numeric) < 1e-7
    # The labels' matrix: 1 within a class, -1/(C-1) across (centred one-hot vectors), so a perfect h has loss 0.
    S, _ = F.similarity_matrix_forward(F.one_hot(y, 3, np.float64))
    np.testing.assert_allclose(S, np.where(y[:, None] == y[None, :], 1.0, -0.5), atol=1e-7)
    assert F.similarity_matching_loss(F.one_hot(y, 3, np.float64), y, 3)[0] < 1e-14 < loss


def test_similarity_matrix_matches_the_reference_in_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((4, 5, 3, 3))

    def reference(t):  # anokland/local-loss train.py similarity_matrix, default options
        if t.dim() == 4 and t.size(1) > 3 and t.size(2) > 1:
            t = t.view(t.size(0), t.size(1), -1).std(dim=2)
        xc = t - t.mean(dim=1).unsqueeze(1)
        xn = xc / (1e-8 + torch.sqrt(torch.sum(xc**2, dim=1))).unsqueeze(1)
        return xn.matmul(xn.transpose(1, 0)).clamp(-1, 1)

    np.testing.assert_allclose(F.similarity_matrix_forward(x)[0], reference(torch.tensor(x)).numpy(), atol=1e-12)


def test_predsim_head_weighs_pred_and_sim_by_beta():
    """loss = (1 - beta) * CE(pred) + beta * MSE(sim), each part from its own head; pred starts at zero."""
    rng = np.random.default_rng(3)
    h, y = rng.standard_normal((6, 8)), np.array([0, 1, 2, 0, 1, 2])
    both = aux_head("predsim", (8,), 3, seed=0, dtype="float64", beta=0.7)
    pred, sim = aux_head("pred", (8,), 3, seed=0, dtype="float64"), aux_head("sim", (8,), 3, seed=0, dtype="float64")
    sim.sim.load_state_dict(both.sim.state_dict())
    assert isinstance(both, LocalLossHead) and not np.any(both.pred.layers[-1].weight.data)
    (lb, db), (lp, dp), (ls, ds) = both.local_loss(h, y), pred.local_loss(h, y), sim.local_loss(h, y)
    assert lb == pytest.approx(0.3 * lp + 0.7 * ls) and lp == pytest.approx(np.log(3), abs=0.5)
    np.testing.assert_allclose(db, 0.3 * dp + 0.7 * ds, atol=1e-12)
    conv = aux_head("predsim", (8, 6, 6), 3, seed=0, dtype="float64")
    assert type(conv.sim.layers[0]).__name__ == "Conv2d" and conv.local_loss(rng.standard_normal((6, 8, 6, 6)), y)[
        1
    ].shape == (6, 8, 6, 6)


# --- PEPITA's update by hand ------------------------------------------------------------------------
def test_pepita_update_on_two_samples_matches_a_hand_computation():
    model = build_model("mlp", 1, 2, 3, hidden=(4,), batchnorm=False, seed=0, dtype="float64")
    trainer = PEPITATrainer(model, lambda p: SGD(p, lr=1.0), seed=0)
    w1, b1 = (np.array(p.data) for p in model.layers[0].parameters())
    w2, b2 = (np.array(p.data) for p in model.layers[1].parameters())
    Fe = np.array(trainer.projection).reshape(3, 4)  # (classes, input_dim)
    bound = 0.05 * np.sqrt(6 / 4)
    assert np.all(np.abs(Fe) <= bound) and np.abs(Fe).max() > bound / 3  # U[-b, b] * 0.05, b = sqrt(6 / D)
    x, y = np.random.default_rng(4).standard_normal((2, 1, 2, 2)), np.array([2, 0])

    def forward(inputs):
        hidden = np.maximum(inputs @ w1 + b1, 0)
        logits = hidden @ w2 + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        return hidden, p / p.sum(1, keepdims=True) - np.eye(3)[y]

    flat = x.reshape(2, 4)
    h, e = forward(flat)
    x_mod = flat + e @ Fe
    h_mod, e_mod = forward(x_mod)
    trainer.train_step(x, y)
    np.testing.assert_allclose(model.layers[0].parameters()[0].data, w1 - x_mod.T @ (h - h_mod) / 2, atol=1e-12)
    np.testing.assert_allclose(model.layers[0].parameters()[1].data, b1 - (h - h_mod).sum(0) / 2, atol=1e-12)
    np.testing.assert_allclose(model.layers[1].parameters()[0].data, w2 - h_mod.T @ e_mod / 2, atol=1e-12)
    np.testing.assert_allclose(model.layers[1].parameters()[1].data, b2 - e_mod.sum(0) / 2, atol=1e-12)
    assert not np.allclose(h, h_mod)  # the hidden layer did get a signal


@pytest.mark.parametrize(
    "model_name, options, message",
    [
        ("cnn", {}, "block Conv2d -> ReLU -> MaxPool2d. Use --model mlp --no-batchnorm."),
        ("mlp", {}, "block Flatten -> Linear -> BatchNorm1d -> ReLU. Use --model mlp --no-batchnorm."),
    ],
)
def test_pepita_refuses_what_the_official_fully_connected_code_has_not(model_name, options, message):
    model = build_model(model_name, 1, 28, 10, **options)
    with pytest.raises(ValueError, match="pepita trains fully connected blocks") as err:
        PEPITATrainer(model, lambda p: SGD(p, lr=0.1))
    assert message in str(err.value)


def test_greedy_with_the_sim_head_is_refused():
    with pytest.raises(ValueError, match="the sim head has no classifier"):
        build_trainer("greedy", build_model("mlp", 1, 28, 10), lambda p: SGD(p, lr=0.1), aux="sim")


# --- learning on real digits ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-small")


def _accuracy(digits, name, hidden, batchnorm, optimizer, lr, epochs, **options):
    train = DataLoader(digits.x_train, digits.y_train, 64, seed=0, mean=digits.mean, std=digits.std)
    test = DataLoader(digits.x_test, digits.y_test, 500, shuffle=False, mean=digits.mean, std=digits.std)
    model = build_model("mlp", 1, 28, 10, hidden=hidden, batchnorm=batchnorm, seed=0)
    extra = {"momentum": 0.9} if optimizer == "sgd" else {}
    trainer = build_trainer(name, model, lambda p: build_optimizer(optimizer, p, lr=lr, **extra), **options)
    return fit(trainer, train, test, epochs, **QUIET)[-1]["test_accuracy"]


def test_pepita_learns_its_hidden_layer_beyond_the_shallow_floor(digits):
    """A narrow hidden layer (16 units), so random features are a low floor. Measured (2026-12-06, seed 0,
    `tinydgl train --trainer T --model mlp --no-batchnorm --hidden 16 --optimizer sgd --momentum 0.9 --lr 0.05
    --batch-size 64`, 3 epochs): shallow 0.53, pepita 0.79 (0.80 after 4)."""
    setting = dict(hidden=(16,), batchnorm=False, optimizer="sgd", lr=0.05, epochs=3)
    floor = _accuracy(digits, "shallow", **setting)
    pepita = _accuracy(digits, "pepita", **setting)
    assert floor < 0.62, floor
    assert pepita > 0.72 and pepita > floor + 0.15, (pepita, floor)


def test_pred_sim_and_predsim_heads_learn_beyond_the_shallow_floor(digits):
    """Two 16-unit hidden blocks (batch norm), Adam 2e-3, 2 epochs, dgl with one local head per hidden block.
    Measured (2026-12-06, seed 0, `tinydgl train --model mlp --hidden 16,16 --epochs 2`): shallow 0.24,
    pred 0.76, sim 0.82, predsim 0.75."""
    setting = dict(hidden=(16, 16), batchnorm=True, optimizer="adam", lr=2e-3, epochs=2)
    floor = _accuracy(digits, "shallow", **setting)
    assert floor < 0.45, floor
    for aux in ("pred", "sim", "predsim"):
        accuracy = _accuracy(digits, "dgl", aux=aux, **setting)
        assert accuracy > 0.65 and accuracy > floor + 0.25, (aux, accuracy, floor)


# --- resume ------------------------------------------------------------------------------------------
def _pepita(seed=0):
    model = build_model("mlp", 1, 28, 10, hidden=(12,), batchnorm=False, seed=0, dtype="float64")
    return PEPITATrainer(model, lambda p: SGD(p, lr=0.05, momentum=0.9), seed=seed)


def test_pepita_resumes_bit_identically_with_its_projection(digits, tmp_path):
    """The resumed trainer is built with another seed (another F): the checkpoint's F must replace it. The run
    resumed is the 2-epoch one, from its checkpoint after epoch 1 ("previous"), so the steps schedule is
    the same."""
    train = DataLoader(digits.x_train[:320], digits.y_train[:320], 64, seed=3, dtype="float64")
    test = DataLoader(digits.x_test[:100], digits.y_test[:100], 100, shuffle=False, dtype="float64")
    straight = _pepita()
    expected = fit(straight, train, test, 2, checkpoint_dir=str(tmp_path), lr_schedule="steps", **QUIET)
    resumed = _pepita(seed=7)
    assert not np.array_equal(resumed.projection, straight.projection)
    got = fit(resumed, train, test, 2, checkpoint_dir=str(tmp_path), resume="previous", lr_schedule="steps", **QUIET)
    np.testing.assert_array_equal(resumed.projection, straight.projection)
    assert_same_trainer_state(straight, resumed)
    assert [h["test_accuracy"] for h in got] == [h["test_accuracy"] for h in expected]
    assert resumed.optimizer.lr == pytest.approx(0.0005)  # epoch 2 of 2 is past 60% and 90%: x0.01


def test_pepita_macs_count_the_second_pass_and_the_projection_as_signal():
    from tinydgl.train.compute import step_macs

    model = build_model("mlp", 1, 4, 3, hidden=(5,), batchnorm=False, seed=0, dtype="float64")
    macs = step_macs(PEPITATrainer(model, lambda p: SGD(p, lr=0.1)), np.ones((2, 1, 4, 4)), np.array([0, 1]))
    forward = 16 * 5 + 5 * 3
    assert macs["forward"] == forward and macs["weight_gradients"] == forward
    assert macs["signal"] == forward + 3 * 16  # the modulated pass, and F e (classes x input size)


def test_the_steps_schedule_is_pepitas_decay_at_epochs_60_and_90_of_100():
    from tinydgl.optim import LR_SCHEDULES

    steps = LR_SCHEDULES["steps"]
    assert [steps(e, 100) for e in (1, 60, 61, 90, 91, 100)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_dgl_with_predsim_heads_resumes_bit_identically(digits, tmp_path):
    """The heads' pred and sim parts are checkpointed as auxiliary modules and come back in place."""
    train = DataLoader(digits.x_train[:256], digits.y_train[:256], 64, seed=3, dtype="float64")
    test = DataLoader(digits.x_test[:100], digits.y_test[:100], 100, shuffle=False, dtype="float64")

    def predsim():
        model = build_model("mlp", 1, 28, 10, hidden=(12, 10), seed=0, dtype="float64")
        return build_trainer("dgl", model, lambda p: build_optimizer("adam", p, lr=1e-3), aux="predsim", seed=0)

    straight = predsim()
    fit(straight, train, test, 2, checkpoint_dir=str(tmp_path), **QUIET)
    assert set(straight.state_dict()["aux"]["head0"]) == {"0.0.weight", "0.0.bias", "1.0.weight"}
    resumed = predsim()
    fit(resumed, train, test, 2, checkpoint_dir=str(tmp_path), resume="previous", **QUIET)
    assert_same_trainer_state(straight, resumed)
