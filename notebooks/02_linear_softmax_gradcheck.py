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
# # 2. Linear layers, softmax cross-entropy, gradient checking
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/02_linear_softmax_gradcheck.ipynb)
#
# A step-through companion to [lesson 2](../lessons/02-linear-softmax-gradcheck.md).
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

from tinydgl import functional as F

FAST = os.environ.get("TINYDGL_FAST") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## A forward/backward pair
#
# `out = x @ w + b`; backward turns `dout` into `dx = dout @ w.T`, `dw = x.T @ dout`, `db = dout.sum(0)`.

# %%
x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
out, cache = F.linear_forward(x, w, b)
dx, dw, db = F.linear_backward(np.ones_like(out), cache)
print(out.shape, dx.shape, dw.shape, db)

# %% [markdown]
# ## Softmax cross-entropy, stable
#
# Subtracting each row's maximum keeps `exp` from overflowing, even for logits of 1000.

# %%
logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
loss, dlogits = F.softmax_cross_entropy(logits, np.array([0, 2]))
print(round(loss, 4), "=", round(np.log(3) / 2, 4))
print(dlogits.round(3))

# %% [markdown]
# ## Gradient checking
#
# [`check_gradients`](../tinydgl/gradcheck.py) compares the analytic gradients with central differences.
# A correct backward gives errors around 1e-10; a forgotten factor is obvious.

# %%
from tinydgl.gradcheck import check_gradients, numerical_gradient, rel_error

errors = check_gradients(lambda x, w, b: F.linear_forward(x, w, b), F.linear_backward, [x, w, b])
print("correct:", ["%.1e" % e for e in errors])


def wrong_linear_backward(dout, cache):
    dx, dw, db = F.linear_backward(dout, cache)
    return dx, dw, 0.5 * db


errors = check_gradients(lambda x, w, b: F.linear_forward(x, w, b), wrong_linear_backward, [x, w, b])
print("broken: ", ["%.1e" % e for e in errors])

# %% [markdown]
# ## Which step h? Look at the error curve
#
# Central differences have a truncation error O(h²) and a rounding error O(eps / h). We measure the error
# of the numerical gradient of the cross-entropy against the analytic one, for a range of h, in float64
# and in float32.

# %%
z64 = rng.standard_normal((5, 4))
labels = np.array([0, 1, 2, 3, 0])
_, dz = F.softmax_cross_entropy(z64, labels)
steps = np.logspace(-10, -0.5, 12 if FAST else 30)
curves = {}
for dtype in (np.float64, np.float32):
    z = z64.astype(dtype)
    curves[dtype.__name__] = [
        rel_error(dz, numerical_gradient(lambda z_: F.softmax_cross_entropy(z_, labels)[0], z.copy(), None, h=float(h)))
        for h in steps
    ]

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, errs in curves.items():
    ax.loglog(steps, np.maximum(errs, 1e-16), marker="o", label=name)
ax.axvline(1e-6, color="gray", ls="--", lw=1)
ax.text(1.2e-6, 1e-14, "default h = 1e-6", color="gray")
ax.set(xlabel="step h", ylabel="relative error", title="gradient-check error against the step")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# In float64 the valley is wide and deep (errors near 1e-10 around h = 1e-6 .. 1e-4). In float32 the
# rounding term eps / h swamps everything at small h: the error is only acceptable at large steps, where
# truncation already costs accuracy, and a subtly wrong backward (errors of 1e-4) would pass unnoticed.
# That is why `check_gradients` converts to float64.

# %% [markdown]
# ## Softmax regression on real digits
#
# A linear layer and the loss already are a classifier. We write gradient descent out by hand.

# %%
from tinydgl.data import load_dataset

digits = load_dataset("mnist-small", limit_train=500 if FAST else None, limit_test=200 if FAST else None)


def flat(images):
    return images.reshape(len(images), -1) / 255.0


xtr, ytr = flat(digits.x_train), digits.y_train
xte, yte = flat(digits.x_test), digits.y_test
print(xtr.shape, xte.shape)

# %%
w, b = np.zeros((784, 10)), np.zeros(10)
steps = 30 if FAST else 200
losses, accuracies = [], []
for step in range(steps):
    logits, cache = F.linear_forward(xtr, w, b)
    loss, dlogits = F.softmax_cross_entropy(logits, ytr)
    _, dw, db = F.linear_backward(dlogits, cache, compute_dx=False)
    w -= 0.5 * dw
    b -= 0.5 * db
    losses.append(loss)
    accuracies.append((F.linear_forward(xte, w, b)[0].argmax(axis=1) == yte).mean())
print("final test accuracy", accuracies[-1])

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.3))
ax_loss.plot(losses)
ax_loss.set(xlabel="step", ylabel="train loss", title="training loss")
ax_acc.plot(accuracies, color="C1")
ax_acc.set(xlabel="step", ylabel="test accuracy", title="test accuracy")
for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each column of `w` is a 28x28 template: the score of class k is the dot product of the image with
# column k. Red pixels vote for the class, blue ones against it.

# %%
fig, axes = plt.subplots(1, 10, figsize=(10, 1.5))
scale = np.abs(w).max()
for k, ax in enumerate(axes):
    ax.imshow(w[:, k].reshape(28, 28), cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.set_title(str(k))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Next
#
# The exercises of [lesson 2](../lessons/02-linear-softmax-gradcheck.md) extend this to a two-layer
# network. Next notebook: convolution.
