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
# # 13. Learning with forward passes only
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/13_forward_only.ipynb)
#
# A step-through companion to [lesson 13](../lessons/13-forward-only.md). Every op has a third function beside
# forward and backward, its forward-mode derivative (JVP). We check two of them by hand, push a direction
# through a whole network to get the loss's directional derivative, and turn it into a forward-gradient
# estimate. Then we measure how that estimate's cosine with the true gradient falls as more parameters are
# perturbed, train the forward-gradient variants against backprop and the shallow floor, look at PEPITA's
# second forward pass up close, and draw PredSim's similarity matrices.
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
import math
import os

import matplotlib.pyplot as plt
import numpy as np

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import SGD
from tinydgl.train import fit
from tinydgl.trainers import build_trainer

FAST = os.environ.get("TINYDGL_FAST") == "1"
rng = np.random.default_rng(0)


def cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# %% [markdown]
# ## Two JVPs by hand: linear and ReLU
#
# `linear_jvp(cache, dx, dw, db)` returns the change of `out = x @ w + b` when x, w and b move along the
# tangents dx, dw, db: by the product rule, `dx @ w + x @ dw + db`. `relu_jvp` lets the tangent through
# where the input was positive. We write both in NumPy, compare them with the library, and with a central
# difference of the forward for a range of steps h: in float64 the error is smallest around h = 1e-5, where
# rounding (which grows as h shrinks) meets the truncation error (which grows with h), as in notebook 2.

# %%
x, w, b = rng.normal(size=(8, 5)), rng.normal(size=(5, 4)), rng.normal(size=4)
dx, dw, db = rng.normal(size=x.shape), rng.normal(size=w.shape), rng.normal(size=b.shape)
out, cache = F.linear_forward(x, w, b)
by_hand = dx @ w + x @ dw + db
print("linear_jvp matches the product rule:", np.allclose(F.linear_jvp(cache, dx, dw, db), by_hand, rtol=1e-12))
r, relu_cache = F.relu_forward(out)
print("relu_jvp lets the tangent through where out > 0:",
      np.array_equal(F.relu_jvp(relu_cache, by_hand), np.where(out > 0, by_hand, 0.0)))


def relu_of_linear(x, w, b):
    return np.maximum(F.linear_forward(x, w, b)[0], 0)


steps = np.logspace(-12, -1, 23)
tangent = F.relu_jvp(relu_cache, by_hand)
errors = [np.abs((relu_of_linear(x + h * dx, w + h * dw, b + h * db) - relu_of_linear(x - h * dx, w - h * dw, b - h * db))
                 / (2 * h) - tangent).max() for h in steps]
fig, ax = plt.subplots(figsize=(5, 3))
ax.loglog(steps, errors, "o-")
ax.set(xlabel="step h", ylabel="max |central difference - JVP|", title="relu(linear(x, w, b)), float64")
ax.grid(alpha=0.3, which="both")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## `<J v, u> = <v, Jᵀ u>`: the JVP is the transpose of backward
#
# Backward multiplies a vector of the output's shape by `Jᵀ`; the JVP multiplies one of the inputs' shape
# by `J`. For random v and u the two sides agree to rounding. `tests/test_jvp.py` checks every op so.

# %%
u = rng.normal(size=out.shape)
checks = {}
gx, gw, gb = F.linear_backward(u, cache)
checks["linear"] = (np.sum(by_hand * u), np.sum(dx * gx) + np.sum(dw * gw) + np.sum(db * gb))
checks["relu"] = (np.sum(F.relu_jvp(relu_cache, dx @ w) * u), np.sum(dx @ w * F.relu_backward(u, relu_cache)))
h = rng.normal(size=(6, 9))
S, sim_cache = F.similarity_matrix_forward(h)
dh, v_s = rng.normal(size=h.shape), rng.normal(size=S.shape)
checks["similarity matrix"] = (np.sum(F.similarity_matrix_jvp(sim_cache, dh) * v_s),
                               np.sum(dh * F.similarity_matrix_backward(v_s, sim_cache)))
for name, (left, right) in checks.items():
    print(f"{name:18s} <J v, u> = {left:+.12f}   <v, J^T u> = {right:+.12f}")

# %% [markdown]
# ## Through a network: the loss's directional derivative, with no backward pass
#
# Every parameter carries a `.tangent`; `model.jvp(None)` (the input does not move) pushes them through the
# layers after `forward`, and the loss's JVP turns the logits' tangent into one number, `∇L · v`. The mlp
# has no batch norm here (784 → 256 → 256 → 10), in float64, on one batch of digits.

# %%
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None)
xb, yb = next(iter(DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean,
                              std=digits.std, dtype="float64")))
model = build_model("mlp", batchnorm=False, dtype="float64", seed=0)
params = model.parameters()
sizes = [p.data.size for p in params]
loss, dlogits = F.softmax_cross_entropy(model.forward(xb), yb)
model.backward(dlogits)
true = np.concatenate([p.grad.ravel() for p in params])      # backprop's gradient, to compare with
logits = model.forward(xb)                                   # the cache the JVPs read

for p in params:
    p.tangent = rng.normal(size=p.shape)
_, slope = F.softmax_cross_entropy_jvp(logits, yb, model.jvp(None))
v = np.concatenate([p.tangent.ravel() for p in params])
print(f"{sum(sizes):,} parameters; forward mode: {slope:.10f}   backprop's gradient . v: {true @ v:.10f}")

# %% [markdown]
# ## The forward-gradient estimate, and its cosine with the true gradient
#
# `g = (∇L · v) v` with `v ~ N(0, I)` is unbiased, but with m parameters perturbed its cosine with their true
# gradient is only about `sqrt(2 / (π m))`. Below, m parameters drawn at random move (the others get a zero
# tangent) and we compare each estimate with the true gradient of those m parameters; then all of them move
# and K directions are averaged. This is the figure of lesson 13 (`lessons/figures/make_figures.py` draws the
# committed copy with more draws).

# %%
def estimate_cosines(perturbed, directions, repeats):
    """Cosines of forward-gradient estimates (K = directions) on `perturbed` random parameters with their gradient."""
    found = []
    for _ in range(repeats):
        chosen = rng.choice(true.size, size=perturbed, replace=False)
        estimate = np.zeros_like(true)
        for _ in range(directions):
            v = np.zeros_like(true)
            v[chosen] = rng.standard_normal(perturbed)
            for p, part in zip(params, np.split(v, np.cumsum(sizes)[:-1])):
                p.tangent = part.reshape(p.shape)
            estimate += F.softmax_cross_entropy_jvp(logits, yb, model.jvp(None))[1] * v / directions
        target = np.where(np.isin(np.arange(true.size), chosen), true, 0.0)
        found.append(cos(estimate, target))
    return np.array(found)


def expected_cosine(m):
    """E|cos(g, v)| for v ~ N(0, I_m)."""
    return math.exp(math.lgamma(m / 2) - math.lgamma((m + 1) / 2)) / math.sqrt(math.pi)


m_values = [1, 10, 100, 1_000, 10_000, true.size] if FAST else [1, 10, 100, 1_000, 10_000, 100_000, true.size]
by_m = [estimate_cosines(m, 1, 5 if FAST else 30) for m in m_values]
k_values = [1, 4, 16] if FAST else [1, 4, 16, 64]
by_k = [estimate_cosines(true.size, k, 3 if FAST else max(5, 40 // k)) for k in k_values]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
axes[0].errorbar(m_values, [c.mean() for c in by_m], yerr=[c.std() for c in by_m], fmt="o", capsize=3,
                 label="measured (mean, std)")
axes[0].plot(m_values, [expected_cosine(m) for m in m_values], "--", color="0.5", label="E|cos|, v ~ N(0, I_m)")
axes[0].set(xscale="log", yscale="log", xlabel="parameters perturbed, m", ylabel="cos(estimate, gradient)",
            title="one direction")
axes[1].errorbar(k_values, [c.mean() for c in by_k], yerr=[c.std() for c in by_k], fmt="o", color="C1", capsize=3,
                 label="measured (mean, std)")
axes[1].plot(k_values, [math.sqrt(k / true.size) for k in k_values], "--", color="0.5", label="sqrt(K / m)")
axes[1].set(xscale="log", yscale="log", xlabel="directions averaged, K", title=f"all m = {true.size:,} parameters")
for ax in axes:
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
for m, c in zip(m_values, by_m):
    print(f"m = {m:7,d}: cos {c.mean():.4f} (std {c.std():.4f}), expected {expected_cosine(m):.4f}")
for p in params:
    p.tangent = None
model.forget()

# %% [markdown]
# ## Training: weight perturbation, activity perturbation, local losses
#
# `fg` with `fg_mode="weight"` perturbs every parameter; `"activity"` perturbs each block's output, one
# example at a time, and lets each block backpropagate inside itself; `fg_loss="local"` gives each block an
# auxiliary head of its own. Against backprop and the shallow floor (hidden blocks left as initialised): two
# 32-unit hidden blocks, SGD 0.05, batch 64. Lesson 13 has the three-seed table.

# %%
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=500, shuffle=False, mean=digits.mean, std=digits.std)
epochs = 1 if FAST else 3
settings = {"bp": ("bp", {}), "shallow": ("shallow", {}), "fg weight": ("fg", {"fg_mode": "weight"}),
            "fg activity": ("fg", {"fg_mode": "activity"}),
            "fg activity, local": ("fg", {"fg_mode": "activity", "fg_loss": "local"})}
curves = {}
for label, (name, options) in settings.items():
    trainer = build_trainer(name, build_model("mlp", hidden=(32, 32), seed=0), lambda p: SGD(p, lr=0.05), **options)
    history = fit(trainer, train, test, epochs=epochs, progress=False, log=lambda *_: None)
    curves[label] = [entry["test_accuracy"] for entry in history]
    print(f"{label:20s} test accuracy {curves[label][-1]:.3f}")

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.barh(list(curves), [c[-1] for c in curves.values()], color=[f"C{i}" for i in range(len(curves))])
ax.axvline(curves["shallow"][-1], color="0.4", ls="--", lw=1, label="the shallow floor")
ax.set(xlabel="test accuracy", xlim=(0, 1), title=f"mlp 32-32, {epochs} epoch(s), SGD 0.05")
ax.invert_yaxis()
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## PEPITA: the second pass, up close
#
# The second forward pass runs on `x + F e`, the input nudged by the output error through a fixed random
# `F` (`trainer.projection`, stored as (classes, 1, 28, 28)). To first order, the first hidden layer's change
# between the two passes is `-relu'(a_1) ⊙ (e B_1)` with `B_1 = F W_1`: DFA's signal through a matrix that
# follows the weights. The scatter plots the two, unit by unit, for a batch of 32 digits.

# %%
pick = np.random.default_rng(0).permutation(len(digits.y_train))[:32]   # the data is sorted by class
x = (digits.x_train[pick] / 255.0 - digits.mean[0]) / digits.std[0]
y = digits.y_train[pick]
pepita = build_trainer("pepita", build_model("mlp", hidden=(64,), batchnorm=False, dtype="float64"),
                       lambda p: SGD(p, lr=0.01, momentum=0.9))
first, top = pepita.linears
flat = x.reshape(len(y), -1)
a1 = flat @ first.weight.data + first.bias.data
e = F.softmax(np.maximum(a1, 0) @ top.weight.data + top.bias.data) - np.eye(10)[y]
projection = pepita.projection.reshape(10, -1)
change = np.maximum(a1, 0) - np.maximum((flat + e @ projection) @ first.weight.data + first.bias.data, 0)
dfa_signal = -((a1 > 0) * (e @ (projection @ first.weight.data)))
fig, ax = plt.subplots(figsize=(4, 3.5))
ax.scatter(dfa_signal.ravel(), change.ravel(), s=3)
ax.set(xlabel="-relu'(a1) * (e @ F W1)", ylabel="h1 - h1' (PEPITA)", title=f"cos {cos(change, dfa_signal):.5f}")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Training it: PEPITA against the shallow floor on the same network (one 64-unit hidden layer, no batch
# norm), SGD with momentum 0.9 and the official learning rate 0.01.

# %%
for name in ("pepita", "shallow"):
    trainer = build_trainer(name, build_model("mlp", hidden=(64,), batchnorm=False, seed=0),
                            lambda p: SGD(p, lr=0.01, momentum=0.9))
    history = fit(trainer, train, test, epochs=epochs, progress=False, log=lambda *_: None)
    print(f"{name:8s} test accuracy {history[-1]['test_accuracy']:.3f}")

# %% [markdown]
# ## PredSim's similarity matrices
#
# The similarity-matching loss asks a block's features to be as alike as the labels are: the cosine-similarity
# matrix of the batch (rows centred) against that of the one-hot labels (1 within a class, -1/9 across).
# Sorted by label, the labels' matrix is a block diagonal; the raw pixels already show some of it.

# %%
order = np.argsort(y)
target, _ = F.similarity_matrix_forward(F.one_hot(y[order], 10, np.float64))
pixels, _ = F.similarity_matrix_forward(flat[order])
hidden, _ = F.similarity_matrix_forward(np.maximum(a1[order], 0))
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, (title, matrix) in zip(axes, [("labels (the target)", target), ("pixels", pixels),
                                      ("a random hidden layer", hidden)]):
    ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(title=title, xticks=[], yticks=[])
fig.tight_layout()
plt.show()
print(f"similarity-matching loss: pixels {np.mean((pixels - target) ** 2):.3f}, "
      f"random hidden layer {np.mean((hidden - target) ** 2):.3f}")

# %% [markdown]
# ## Next
#
# The exercises of [lesson 13](../lessons/13-forward-only.md): the cost of forward mode, the estimator's
# variance, why local losses help, and PEPITA's scale. Assignment A5 then has you write `linear_jvp`, the
# forward-gradient estimate and PEPITA's update yourself.
