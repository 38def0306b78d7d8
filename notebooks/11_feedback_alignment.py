# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11. Feedback alignment and Forward-Forward: learning without weight transport
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/11_feedback_alignment.ipynb)
#
# A step-through companion to [lesson 11](../lessons/11-feedback-alignment.md). The error reaches the
# hidden blocks through fixed random matrices instead of the transposed weights (FA, DFA, sDFA, DRTP), and
# the forward weights come to agree with that random feedback. We compute two of the signals by hand,
# check them against what the trainers hand their optimizer, train the methods against the shallow floor,
# and watch the alignment grow. Then Forward-Forward, which has no feedback at all: every layer learns from
# its own goodness on positive and negative data, and we check each layer's loss by hand.
#
# **Fast mode.** `TINYDGL_FAST=1` shrinks data and training so that the whole notebook runs in seconds
# (the test suite runs every notebook that way). Leave it unset for the fuller version.

# %%
# On Colab (or anywhere tinydgl is not installed yet), install the release this notebook was written for:
# from its wheel, uploaded next to the notebook, or else the way the README does (a clone of the repository
# and `pip install -e .`). github.com/tinydgl/tinydgl is the address the project is to be published at:
# until it is there, upload the wheel (notebooks/README.md says how). Elsewhere this cell does nothing.
import importlib.util
import os
import subprocess
import sys

TINYDGL_VERSION = "0.1.0"
WHEEL = f"tinydgl-{TINYDGL_VERSION}-py3-none-any.whl"  # `pip wheel --no-deps .` in a clone writes it
if importlib.util.find_spec("tinydgl") is None:
    if os.path.exists(WHEEL):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", WHEEL], check=True)
    else:
        clone = ["git", "clone", "--quiet", "--depth", "1", "--branch", f"v{TINYDGL_VERSION}",
                 "https://github.com/tinydgl/tinydgl"]
        if subprocess.run(clone, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}).returncode:
            raise SystemExit(f"tinydgl is not on GitHub yet: upload {WHEEL} next to this notebook and run "
                             "this cell again (notebooks/README.md, 'Opening them in Colab').")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "tinydgl"], check=True)
        sys.path.insert(0, "tinydgl")  # importable now, without restarting the kernel

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.train.alignment import AlignmentProbe, handed_gradients, true_gradients
from tinydgl.trainers import build_trainer

FAST = os.environ.get("TINYDGL_FAST") == "1"

# %% [markdown]
# ## A tiny MLP and one batch
#
# 784 → 32 → 16 → 10 with ReLU and no batch norm, in float64, so that every gradient is easy to write
# out in NumPy. Its three blocks are `(Flatten, Linear, ReLU)`, `(Linear, ReLU)` and the classifier
# `(Linear)`.

# %%
digits = load_dataset("mnist-small")
pick = np.random.default_rng(0).permutation(len(digits.y_train))[:32]   # the data is sorted by class
x = (digits.x_train[pick] / 255.0 - digits.mean[0]) / digits.std[0]      # float64
y = digits.y_train[pick]


def tiny(name):
    """A fresh tiny MLP (always the same initial weights) and a trainer for it."""
    model = build_model("mlp", hidden=(32, 16), batchnorm=False, dtype="float64", seed=0)
    return build_trainer(name, model, lambda params: Adam(params, lr=1e-3))


print(tiny("dfa").model)

# %% [markdown]
# ## The forward pass, in NumPy
#
# The weights are the model's own. tinydgl stores a linear layer as `x @ W + b`, with `W` of shape
# (in, out).

# %%
def forward_by_hand(model, x):
    (w1, b1), (w2, b2), (w3, b3) = [(p[0].data, p[1].data) for p in (block.parameters() for block in model.layers)]
    x = x.reshape(len(x), -1)
    a1 = x @ w1 + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w2 + b2
    h2 = np.maximum(a2, 0)
    z = h2 @ w3 + b3
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return x, a1, h1, a2, h2, p


dfa = tiny("dfa")
x_flat, a1, h1, a2, h2, p = forward_by_hand(dfa.model, x)
onehot = np.eye(10)[y]
e = (p - onehot) / len(y)          # dL/dz: the output error, divided by the batch size like the loss's gradient
print("e:", e.shape, " B_1:", dfa.feedback[0].shape, " B_2:", dfa.feedback[1].shape)

# %% [markdown]
# ## DFA's signal by hand: `delta_l = e @ B_l`
#
# Each hidden block gets the output error through its own fixed matrix `B_l` (classes × size of `h_l`),
# in place of `dL/dh_l`, and back-propagates it *inside itself only*: through its ReLU to its linear
# layer's weight and bias. Nothing crosses from a block to the block below.

# %%
delta1, delta2 = e @ dfa.feedback[0], e @ dfa.feedback[1]
da1, da2 = delta1 * (a1 > 0), delta2 * (a2 > 0)                  # through each block's ReLU
by_hand = {"0.1.weight": x_flat.T @ da1, "0.1.bias": da1.sum(0),   # block 1
           "1.0.weight": h1.T @ da2, "1.0.bias": da2.sum(0),       # block 2
           "2.0.weight": h2.T @ e, "2.0.bias": e.sum(0)}           # the classifier: the true gradient

# %% [markdown]
# Now let the trainer take its step. [`handed_gradients`](../tinydgl/train/alignment.py) runs
# `train_step` and catches every parameter's gradient as it reaches `optimizer.step()`, which is
# exactly what the method hands its optimizer.

# %%
_, handed = handed_gradients(dfa, x, y)
for name, grad in by_hand.items():
    print(f"{name:11s} {str(grad.shape):10s} matches: {np.allclose(handed[name], grad, rtol=1e-10, atol=1e-14)}")

# %% [markdown]
# ## DRTP's signal by hand: `delta_l = onehot(y) @ B_l / N`
#
# DRTP sends the *label*, known before the forward pass, so each block can learn as soon as its own
# forward is done. Each hidden block is a module of a local learner, with its `B_l` in
# `trainer.modules[l].feedback`.

# %%
drtp = tiny("drtp")
B1, B2 = drtp.modules[0].feedback, drtp.modules[1].feedback
delta1, delta2 = onehot @ B1 / len(y), onehot @ B2 / len(y)
da1, da2 = delta1 * (a1 > 0), delta2 * (a2 > 0)   # (the same initial weights, so the same forward pass)
by_hand_drtp = {"0.1.weight": x_flat.T @ da1, "0.1.bias": da1.sum(0), "1.0.weight": h1.T @ da2,
                "1.0.bias": da2.sum(0), "2.0.weight": h2.T @ e, "2.0.bias": e.sum(0)}
_, handed = handed_gradients(drtp, x, y)
for name, grad in by_hand_drtp.items():
    print(f"{name:11s} matches: {np.allclose(handed[name], grad, rtol=1e-10, atol=1e-14)}")

# %% [markdown]
# Why can the label stand in for the error? With a softmax output, `e = p - onehot(y)` is positive for every
# wrong class and negative for the right one, so `sign(e) = 1 - 2 onehot(y)` exactly. sDFA's signal
# `sign(e) @ B_l` is then a constant plus -2 times DRTP's.

# %%
print(np.array_equal(np.sign(e), 1 - 2 * onehot))

# %% [markdown]
# ## The three signals, side by side
#
# For the first 8 examples: what backprop would hand block 2 (`dL/dh_2`, from
# [`true_gradients`](../tinydgl/train/alignment.py)' reference pass, written out here), what DFA hands it,
# and what DRTP hands it. At initialisation the random signals have nothing to do with backprop's, and that
# is what the alignment below measures as it changes.

# %%
w3 = tiny("bp").model.layers[-1].parameters()[0].data   # the initial weights (dfa's have taken a step since)
bp_signal = e @ w3.T                              # dL/dh_2 = e W_3ᵀ: what weight transport would send
dfa_signal, drtp_signal = e @ dfa.feedback[1], onehot @ B2 / len(y)
signals = {"backprop: e @ W_3ᵀ": bp_signal, "DFA: e @ B_2": dfa_signal, "DRTP: onehot @ B_2 / N": drtp_signal}
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
for ax, (title, s) in zip(axes, signals.items()):
    ax.imshow(s[:8], aspect="auto", cmap="RdBu_r", vmin=-np.abs(s[:8]).max(), vmax=np.abs(s[:8]).max())
    ax.set(title=title, xlabel="unit of h_2", ylabel="example")
fig.tight_layout()
plt.show()


def cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


print(f"cos(backprop, DFA) {cos(bp_signal, dfa_signal):+.2f}   cos(backprop, DRTP) {cos(bp_signal, drtp_signal):+.2f}")

# %% [markdown]
# The alignment probe asks the same question of the *parameter* gradients: per block, the cosine between
# what the method hands its optimizer and backprop's gradient at the same weights and batch. Backprop reads 1:

# %%
bp = tiny("bp")
true = true_gradients(bp, x, y)
_, handed = handed_gradients(bp, x, y)
print({name: round(cos(handed[name], true[name]), 6) for name in true})

# %% [markdown]
# ## Training against the shallow floor
#
# The default `mlp` (784 → 256 → 256 → 10 with batch norm) on mnist-small, Adam 1e-3, batch 64, with an
# [`AlignmentProbe`](../tinydgl/train/alignment.py) on every few steps. **shallow** trains only the classifier,
# on the initial (random) hidden blocks: the control every method must beat. We also record how the output
# layer's weights line up with the feedback that stands in for them (`W` against FA's `B`, `Wᵀ` against
# DFA's or DRTP's `B_2`).

# %%
data = load_dataset("mnist-small", limit_train=2000 if FAST else None)
train = DataLoader(data.x_train, data.y_train, batch_size=64, seed=0, mean=data.mean, std=data.std)
test = DataLoader(data.x_test, data.y_test, batch_size=500, shuffle=False, mean=data.mean, std=data.std)
epochs, every = (1, 4) if FAST else (3, 5)


def output_alignment(trainer):
    w = trainer.model.layers[-1].layers[-1].weight.data
    if trainer.name == "fa":
        return cos(w, trainer.model.layers[-1].layers[-1].feedback)
    feedback = trainer.modules[-2].feedback if trainer.name == "drtp" else trainer.feedback[-1]
    return cos(w.T, feedback)


runs = {}
for name in ["bp", "fa", "dfa", "drtp", "shallow"]:
    trainer = build_trainer(name, build_model("mlp", seed=0), lambda params: Adam(params, lr=1e-3))
    probe = AlignmentProbe(every=every)
    weights = []
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for xb, yb in train:
            if probe.steps % every == 0 and name not in ("bp", "shallow"):
                weights.append(output_alignment(trainer))
            probe.train_step(trainer, xb, yb)     # what fit(..., alignment=probe) does at every step
    runs[name] = {"accuracy": trainer.evaluate(test)["accuracy"], "probe": probe.summary(), "weights": weights}
    print(f"{name:8s} test accuracy {runs[name]['accuracy']:.3f}")

# %%
names = list(runs)
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.bar(names, [runs[n]["accuracy"] for n in names], color=[f"C{i}" for i in range(len(names))])
ax.axhline(runs["shallow"]["accuracy"], color="0.4", ls="--", lw=1, label="the shallow floor")
ax.set(ylabel="test accuracy", ylim=(0.5, 1), title=f"mlp, {epochs} epoch(s), Adam 1e-3")
ax.legend()
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The alignment curves
#
# Hidden blocks 1 and 2 start at 0 (a random `B` points nowhere in particular) and turn towards
# backprop's gradient as the forward weights adapt. Backprop's blocks read 1 throughout, and shallow's
# hidden blocks have no gradient at all. On the right, the output weights turn towards the fixed feedback:
# that is *why* the gradients align. DRTP's goes negative, the harmless sign flip of lesson 11.

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
for ax, name in zip(axes, ["fa", "dfa", "drtp"]):
    summary = runs[name]["probe"]
    for b in range(2):
        ax.plot(summary["steps"], summary["blocks"][b], ".-", label=f"block {b + 1}")
    ax.set(title=f"{name}: cos(handed, backprop's)", xlabel="training step")
ax = axes[3]
for name in ["fa", "dfa", "drtp"]:
    ax.plot(runs[name]["probe"]["steps"], runs[name]["weights"], ".-", label=name)
ax.set(title="output weights vs feedback", xlabel="training step")
for ax in axes:
    ax.axhline(0, color="0.6", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## On a CNN: the conv blocks do not align
#
# The same probe on `cnn` (two conv blocks, then the classifier). Lesson 11 has the measured numbers: the
# conv blocks' cosines wander around 0 without a trend, and on this model the shallow floor is already
# high (a classifier on random 3x3 filters and pooling learns a lot).

# %%
small = load_dataset("mnist-small", limit_train=640 if FAST else None)
train_small = DataLoader(small.x_train, small.y_train, batch_size=64, seed=0, mean=small.mean, std=small.std)
cnn_runs = {}
for name in ["fa", "dfa", "shallow"]:
    trainer = build_trainer(name, build_model("cnn", seed=0), lambda params: Adam(params, lr=1e-3))
    probe = AlignmentProbe(every=2 if FAST else 5)
    train_small.set_epoch(0)                  # every method sees the same batches in the same order
    for xb, yb in train_small:
        probe.train_step(trainer, xb, yb)
    cnn_runs[name] = probe.summary()
    print(f"{name:8s} test accuracy {trainer.evaluate(test)['accuracy']:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), sharey=True)
for ax, name in zip(axes, ["fa", "dfa"]):
    for b in range(2):
        ax.plot(cnn_runs[name]["steps"], cnn_runs[name]["blocks"][b], ".-", label=f"conv block {b + 1}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(title=f"{name} on cnn", xlabel="training step", ylim=(-0.6, 0.8))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_ylabel("cos(handed, backprop's)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Forward-Forward: each layer learns from its own goodness
#
# The last part of [lesson 11](../lessons/11-feedback-alignment.md): no feedback at all. The label is written
# into the first 10 pixels of the image: the true one (**positive**), a wrong one (**negative**), or 1/10 in
# each (**neutral**, for the linear readout). Each layer wants a high goodness `g = sum(z**2)` for positives
# and a low one for negatives, and its gradient stops at its own input. As in the reference, the pixels are
# raw, in [0, 1]. The label pixels are at the top left, blank in every digit of this set:

# %%
from tinydgl.optim import SGD
from tinydgl.train import fit

ff = build_trainer("ff", build_model("mlp", dtype="float64", seed=0),
                   lambda params: SGD(params, lr=3e-3, momentum=0.9), ff_hidden=(100, 100))
raw = digits.x_train[pick] / 255.0                # the same 32 digits, pixels in [0, 1], float64
state = ff.negatives_rng.bit_generator.state
wrong = ff.wrong_labels(y)
ff.negatives_rng.bit_generator.state = state      # so that train_step below draws these same wrong labels
samples = {f"positive (label {y[0]})": ff.embed(raw, onehot),
           f"negative (label {wrong[0]})": ff.embed(raw, np.eye(10)[wrong]),
           "neutral (1/10 each)": ff.neutral(raw)}
fig, axes = plt.subplots(1, 3, figsize=(8, 3))
for ax, (title, rows) in zip(axes, samples.items()):
    ax.imshow(rows[0].reshape(28, 28), cmap="gray", vmin=0, vmax=1)   # the label: the top row's first 10 pixels
    ax.set(title=title, xticks=[], yticks=[])
fig.tight_layout()
plt.show()
print("label pixels before:", raw[0, 0, 0, :10], " the rest of the image unchanged:",
      all(np.array_equal(rows[:, 10:], raw.reshape(len(raw), -1)[:, 10:]) for rows in samples.values()))

# %% [markdown]
# ## Every layer's loss by hand
#
# Layer l: `z_l = relu(W_l n(z_{l-1}) + b_l)` with `n(v) = v / (sqrt(mean(v**2)) + 1e-8)`, so only the
# direction of the activity below is passed on (its length *is* the goodness of the layer below). Its loss:
# binary cross-entropy of `g - width` against 1 (positive) / 0 (negative), plus 0.03 times the
# peer-normalisation penalty on each unit's running mean activity over the positives. The next layer's input
# is this layer's output, as a constant.

# %%
h = np.concatenate([samples[k] for k in list(samples)[:2]])   # positives, then negatives: one batch
n_pos = len(y)
t = np.r_[np.ones(n_pos), np.zeros(n_pos)]
expected = []
for block in ff.model.layers:
    linear = block.layers[-2]
    n = h / (np.sqrt(np.mean(h**2, axis=1, keepdims=True)) + 1e-8)
    z = np.maximum(n @ linear.weight.data + linear.bias.data, 0)
    goodness = np.sum(z**2, axis=1)
    logits = goodness - z.shape[1]
    bce = np.mean(np.logaddexp(0, logits) - t * logits)
    running = 0.9 * 0.5 + 0.1 * z[:n_pos].mean(axis=0)
    expected.append((bce, np.mean((running.mean() - running) ** 2), goodness[:n_pos].mean(), goodness[n_pos:].mean()))
    h = z
total = ff.train_step(raw, y)
step = ff.stats()["last_step"]
for l, (bce, penalty, g_pos, g_neg) in enumerate(expected):
    print(f"layer {l + 1}: BCE {bce:8.3f} (trainer {step['layer_bce'][l]:8.3f})  peer penalty {penalty:.5f} "
          f"(trainer {step['layer_peer_penalty'][l]:.5f})  goodness: positives {g_pos:.0f}, negatives {g_neg:.0f}")
print("train_step returned the sum of the layers' losses:",
      np.isclose(total, sum(bce + 0.03 * penalty for bce, penalty, _, _ in expected)))

# %% [markdown]
# ## Training: the two predictions, and a frozen control
#
# **goodness**: embed each label in turn and pick the one with the largest summed goodness of every layer
# but the first. **linear**: a linear classifier on the neutral sample's normalised activities. We train FF
# and a copy whose layers never move (only its classifier learns). The linear readout learns on random
# features too; the goodness accuracy is what shows that the layers learned. The histogram below compares,
# for each test digit, the trained network's goodness with the true label embedded and with the best wrong one.

# %%
train_raw = DataLoader(data.x_train, data.y_train, batch_size=100, seed=0)   # no mean/std: pixels in [0, 1]
n_test = 500 if FAST else len(data.y_test)       # each evaluation runs 11 passes: 10 labels and the neutral one
test_raw = DataLoader(data.x_test[:n_test], data.y_test[:n_test], batch_size=500, shuffle=False)
ff_epochs = 4 if FAST else 6                      # FAST: 2,000 training digits (`data` above)
ff_runs = {}
for name in ["ff", "frozen"]:
    ff = build_trainer("ff", build_model("mlp", seed=0), lambda params: SGD(params, lr=3e-3, momentum=0.9),
                       ff_hidden=(200, 200))
    if name == "frozen":
        ff.optimizer.step = lambda: None          # the layers stay random; the classifier still learns
    curve = []
    fit(ff, train_raw, test_raw, epochs=ff_epochs, progress=False, log=lambda *_: None,
        on_epoch_end=lambda entry, ff=ff: curve.append(dict(ff.last_evaluation)))
    ff_runs[name] = {"curve": curve, "trainer": ff}
    print(f"{name:7s} linear {curve[-1]['accuracy_linear']:.3f}  goodness {curve[-1]['accuracy_goodness']:.3f}")

# %%
xt, yt = next(iter(test_raw))
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for name, style in [("ff", "-"), ("frozen", "--")]:
    epochs_seen = range(1, len(ff_runs[name]["curve"]) + 1)
    for which, color in [("linear", "C0"), ("goodness", "C1")]:
        axes[0].plot(epochs_seen, [c[f"accuracy_{which}"] for c in ff_runs[name]["curve"]], style, marker="o",
                     color=color, label=f"{name}, {which}")
axes[0].set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="FF vs its frozen copy")
axes[0].legend(fontsize=8)
scores = ff_runs["ff"]["trainer"].goodness_scores(xt)        # (N, 10): summed goodness with each label embedded
true_score = scores[np.arange(len(yt)), yt]
wrong_best = np.where(np.eye(10, dtype=bool)[yt], -np.inf, scores).max(axis=1)
axes[1].hist([true_score, wrong_best], bins=30, label=["true label", "best wrong label"])
axes[1].set(xlabel="goodness of layers 2.. (trained FF)", title="test digits")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The alignment probe has nothing to measure here: it compares a block's gradient with backprop's gradient of
# the network's output loss, and FF's network has no output loss.

# %%
try:
    AlignmentProbe().check(ff)
except ValueError as err:
    print(err)

# %% [markdown]
# ## Next
#
# The exercises of [lesson 11](../lessons/11-feedback-alignment.md): turn FA into backprop, try the
# `lls-dnn` feedback, negate DRTP's matrices, and compare narrow and wide networks. Assignment A4 then has
# you write the DFA signal loop, DRTP's target and the probe's cosine yourself.
