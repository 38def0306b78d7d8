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
# # 3. Convolution: loops, then one matrix product
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/03_convolution.ipynb)
#
# A step-through companion to [lesson 3](../lessons/03-convolution.md).
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
import time

import matplotlib.pyplot as plt
import numpy as np

from tinydgl import functional as F
from tinydgl.data import load_dataset

FAST = os.environ.get("TINYDGL_FAST") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## What a convolution does to a digit
#
# Before the speed: three hand-made 3x3 filters (vertical edges, horizontal edges, a blur) slid over one
# digit with [`conv2d_forward`](../tinydgl/ops/conv.py). Filters are (F, C, KH, KW).

# %%
digits = load_dataset("mnist-small", limit_train=100, limit_test=100)
image = (digits.x_train[:1] / 255.0).astype(np.float32)          # (1, 1, 28, 28)
filters = np.array([
    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],                          # Sobel, vertical edges
    [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],                          # Sobel, horizontal edges
    np.full((3, 3), 1 / 9),                                        # box blur
], dtype=np.float32)[:, None]                                      # (3, 1, 3, 3)
maps, _ = F.conv2d_forward(image, filters, None, padding=1)
print(maps.shape)

# %%
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
axes[0, 0].imshow(image[0, 0], cmap="gray_r")
axes[0, 0].set_title("input")
axes[1, 0].axis("off")
for k, name in enumerate(["vertical edges", "horizontal edges", "blur"]):
    axes[1, k + 1].imshow(filters[k, 0], cmap="RdBu_r", vmin=-2, vmax=2)
    axes[1, k + 1].set_title(f"filter {k}", fontsize=9)
    limit = np.abs(maps[0, k]).max()
    axes[0, k + 1].imshow(maps[0, k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[0, k + 1].set_title(name, fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Loops versus im2col
#
# [`conv2d_forward_naive`](../tinydgl/ops/naive.py) is the definition as loops;
# [`conv2d_forward`](../tinydgl/ops/conv.py) copies every patch into a row and does one matrix product.
# Same numbers:

# %%
x = rng.standard_normal((2, 8, 16, 16)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
b = rng.standard_normal(16).astype(np.float32)
slow, _ = F.conv2d_forward_naive(x, w, b, stride=1, padding=1)
fast, cache = F.conv2d_forward(x, w, b, stride=1, padding=1)
print(slow.shape, "max difference", np.abs(slow - fast).max())

# %% [markdown]
# How does the time grow with the batch? Both grow linearly, but the loops pay a Python step for every
# output position, the product a BLAS call for all of them.

# %%
def seconds(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


batches = [1, 2, 4] if FAST else [1, 2, 4, 8, 16]
naive_s, im2col_s = [], []
for n in batches:
    xn = rng.standard_normal((n, 8, 16, 16)).astype(np.float32)
    naive_s.append(seconds(lambda: F.conv2d_forward_naive(xn, w, b, stride=1, padding=1), repeat=1))
    im2col_s.append(seconds(lambda: F.conv2d_forward(xn, w, b, stride=1, padding=1)))

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.loglog(batches, naive_s, marker="o", label="naive loops")
ax.loglog(batches, im2col_s, marker="o", label="im2col + one product")
ax.set(xlabel="batch size", ylabel="seconds (forward)", title="conv 8 -> 16 channels, 16x16, 3x3")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()
plt.show()
print("speed-up at batch %d: %.0fx" % (batches[-1], naive_s[-1] / im2col_s[-1]))

# %% [markdown]
# ## im2col, looked at
#
# [`im2col`](../tinydgl/ops/conv.py) takes a padded channels-last (N, H, W, C) input and returns
# (groups, patches, numbers per patch). A 4x4 image and a 3x3 window give 4 patches of 9 numbers.

# %%
from tinydgl.ops.conv import im2col

small = np.arange(1.0, 17.0).reshape(1, 4, 4, 1)
cols = im2col(small, kh=3, kw=3, stride=1)
print(cols.shape)

# %%
fig, (ax_img, ax_cols) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [1, 2.2]})
ax_img.imshow(small[0, :, :, 0], cmap="Blues")
for (i, j), value in np.ndenumerate(small[0, :, :, 0]):
    ax_img.text(j, i, int(value), ha="center", va="center")
ax_img.set_title("image")
ax_cols.imshow(cols[0], cmap="Blues")
for (i, j), value in np.ndenumerate(cols[0]):
    ax_cols.text(j, i, int(value), ha="center", va="center")
ax_cols.set_title("cols: one row per 3x3 patch")
for ax in (ax_img, ax_cols):
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Backward: gradient check
#
# Backward is two more products (`dw = cols.T @ dout`, `dx` by kernel offsets). Checked numerically, with
# stride 2 and padding 1:

# %%
from tinydgl.gradcheck import check_gradients

xs, ws, bs = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
errors = check_gradients(lambda x, w, b: F.conv2d_forward(x, w, b, stride=2, padding=1), F.conv2d_backward, [xs, ws, bs])
print(["%.1e" % e for e in errors])

# %% [markdown]
# ## Memory: the cache keeps the padded input, not the patches

# %%
print("cached input", cache[0].shape, "- patch matrix would be", (2 * 16 * 16, 3 * 3 * 8), "per group")

# %% [markdown]
# ## Depthwise convolution (groups = channels)

# %%
xg = rng.standard_normal((2, 4, 6, 6))
wg = rng.standard_normal((4, 1, 3, 3))
out_fast, _ = F.conv2d_forward(xg, wg, None, padding=1, groups=4)
out_slow, _ = F.conv2d_forward_naive(xg, wg, None, padding=1, groups=4)
print(np.abs(out_fast - out_slow).max())

# %% [markdown]
# ## Next
#
# The exercises of [lesson 3](../lessons/03-convolution.md) measure memory with `tracemalloc` and shrink
# the workspace. Next notebook: pooling, ReLU and batch norm.
