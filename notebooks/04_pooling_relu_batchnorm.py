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
# # 4. Pooling, ReLU and batch norm
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/04_pooling_relu_batchnorm.ipynb)
#
# A step-through companion to [lesson 4](../lessons/04-pooling-relu-batchnorm.md).
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
from tinydgl.data import load_dataset
from tinydgl.gradcheck import check_gradients

FAST = os.environ.get("TINYDGL_FAST") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## Pooling a digit
#
# Max pooling keeps the largest value of each window, average pooling the mean; adaptive average pooling
# asks for an output size instead of a window ([`pool.py`](../tinydgl/ops/pool.py)).

# %%
digits = load_dataset("mnist-small", limit_train=100, limit_test=100)
image = digits.x_train[:1] / 255.0                                  # (1, 1, 28, 28)
pooled = {
    "input 28x28": image,
    "max 2x2 -> 14x14": F.maxpool2d_forward(image, 2)[0],
    "avg 2x2 -> 14x14": F.avgpool2d_forward(image, 2)[0],
    "adaptive avg -> 4x4": F.adaptive_avgpool2d_forward(image, 4)[0],
}
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
for ax, (name, array) in zip(axes, pooled.items()):
    ax.imshow(array[0, 0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The cache is the winner of each window
#
# The fast max pool loops over the k·k offsets of a window, not over the windows, and remembers which
# offset won (a small integer). It matches the naive loops exactly.

# %%
x = rng.standard_normal((2, 3, 6, 6))
out, cache = F.maxpool2d_forward(x, kernel_size=2)
ref, _ = F.maxpool2d_forward_naive(x, 2)
x_shape, winner, *_ = cache
print(out.shape, np.array_equal(out, ref), winner.dtype, winner.shape)

# %% [markdown]
# Which input positions receive a gradient? Backward sends each window's gradient to its winner: a mask
# with exactly one lit pixel per 2x2 window.

# %%
dx = F.maxpool2d_backward(np.ones_like(out), cache)
fig, (ax_x, ax_dx) = plt.subplots(1, 2, figsize=(6, 3))
ax_x.imshow(x[0, 0], cmap="RdBu_r")
ax_x.set_title("input (image 0, channel 0)", fontsize=9)
ax_dx.imshow(dx[0, 0], cmap="Greys")
ax_dx.set_title("where the gradient goes", fontsize=9)
for ax in (ax_x, ax_dx):
    ax.set_xticks(np.arange(-0.5, 6, 2), minor=False)
    ax.set_yticks(np.arange(-0.5, 6, 2), minor=False)
    ax.set_xticklabels([]), ax.set_yticklabels([])
    ax.grid(color="C1", lw=2)
plt.show()

# %% [markdown]
# Overlapping windows (3x3, stride 2): an input can win twice, so gradients add up. Checked numerically:

# %%
errors = check_gradients(lambda x: F.maxpool2d_forward(x, 3, stride=2), F.maxpool2d_backward, [x])
print("%.1e" % errors[0])
print(F.adaptive_windows(7, 2), F.adaptive_windows(8, 3))

# %% [markdown]
# ## ReLU and leaky ReLU
#
# Forward is a `maximum`; the cache is the mask `x > 0` (one byte per element); backward multiplies by it.

# %%
t = np.linspace(-3, 3, 601)
relu, relu_mask = F.relu_forward(t)
leaky, leaky_cache = F.leaky_relu_forward(t, negative_slope=0.1)     # slope 0.1 to make it visible
fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(8, 3))
ax_f.plot(t, relu, label="relu")
ax_f.plot(t, leaky, label="leaky relu (0.1)", ls="--")
ax_d.plot(t, F.relu_backward(np.ones_like(t), relu_mask), label="relu")
ax_d.plot(t, F.leaky_relu_backward(np.ones_like(t), leaky_cache), label="leaky relu (0.1)", ls="--")
ax_f.set(title="forward", xlabel="x")
ax_d.set(title="backward of dout = 1", xlabel="x")
for ax in (ax_f, ax_d):
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Batch norm
#
# In training mode each channel is normalised with the batch's statistics, and the running averages move
# a little (momentum 0.1) towards them; evaluation mode uses the running averages.

# %%
C = 3
gamma, beta = np.ones(C), np.zeros(C)
running_mean, running_var = np.zeros(C), np.ones(C)
xb = 5.0 + 2.0 * rng.standard_normal((8, C, 4, 4))
out, cache = F.batchnorm_forward(xb, gamma, beta, running_mean, running_var, training=True)
print(out.mean(axis=(0, 2, 3)).round(6), out.std(axis=(0, 2, 3)).round(3))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(xb[:, 0].ravel(), bins=30, alpha=0.6, label="input, channel 0")
ax.hist(out[:, 0].ravel(), bins=30, alpha=0.6, label="after batch norm")
ax.set(xlabel="value", ylabel="count")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The running mean after each of many training batches (true mean 5): an exponential approach, about
# 10% of the remaining distance per batch.

# %%
trace = [running_mean.copy()]
for _ in range(30 if FAST else 60):
    batch = 5.0 + 2.0 * rng.standard_normal((8, C, 4, 4))
    F.batchnorm_forward(batch, gamma, beta, running_mean, running_var, training=True)
    trace.append(running_mean.copy())
trace = np.array(trace)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(trace)
ax.axhline(5.0, color="gray", ls="--")
ax.set(xlabel="training batches", ylabel="running mean", title="running mean of 3 channels")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Batch norm's backward couples every example through the mean and the variance; the compact formula
# passes the gradient check:

# %%
errors = check_gradients(
    lambda x, g, b: F.batchnorm_forward(x, g, b, None, None, training=True),
    F.batchnorm_backward, [xb[:4, :, :2, :2], gamma + 0.5, beta + 0.1])
print(["%.1e" % e for e in errors])

# %% [markdown]
# ## Next
#
# The exercises of [lesson 4](../lessons/04-pooling-relu-batchnorm.md). Next notebook: a whole network,
# backprop, and its locks.
