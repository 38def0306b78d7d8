# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
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
# # 1. Arrays and backends: one code path for NumPy and CuPy
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/01_arrays_and_backends.ipynb)
#
# A step-through companion to [lesson 1](../lessons/01-arrays-and-backends.md). Run the cells in order;
# each does one thing.
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

FAST = os.environ.get("TINYDGL_FAST") == "1"
print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## The data we will use all along: `mnist-small`
#
# 5,000 real MNIST digits ship inside tinydgl, so every notebook works offline. Images are `uint8`
# arrays shaped (N, C, H, W).

# %%
from tinydgl.data import load_dataset

digits = load_dataset("mnist-small")
print(digits.x_train.shape, digits.x_train.dtype, digits.y_train.shape, digits.x_test.shape)

# %% [markdown]
# A picture is quicker than a shape: the first example of each class.

# %%
fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for label, ax in enumerate(axes):
    index = np.flatnonzero(digits.y_train == label)[0]
    ax.imshow(digits.x_train[index, 0], cmap="gray_r")
    ax.set_title(str(label))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Ask the inputs, not a global
#
# An op never imports NumPy or CuPy: it asks its inputs which library they belong to
# ([`array_namespace`](../tinydgl/backend.py)) and calls that library.

# %%
import tinydgl
from tinydgl import functional as F
from tinydgl.backend import array_namespace

x = np.array([[-1.0, 2.0], [3.0, -4.0]])
xp = array_namespace(x)
print(xp.__name__)
out, mask = F.relu_forward(x)
print(out)

# %% [markdown]
# Mixing two array libraries in one op is an error that says so, instead of a silent copy.

# %%
import array_api_strict as xps

try:
    array_namespace(x, xps.asarray([1.0]))
except TypeError as err:
    print(err)

# %% [markdown]
# ## A GPU you can test on a laptop
#
# `array_api_strict` arrays on a fake device behave like CuPy's: no silent conversion to NumPy, no
# mixing of devices. The same op runs on them unchanged.

# %%
from tinydgl.backend import asarray, to_numpy

device = xps.Device("device1")
with tinydgl.use_backend("array_api_strict", device):
    x_dev = asarray([[-1.0, 2.0], [3.0, -4.0]], dtype="float64")
    out_dev, _ = F.relu_forward(x_dev)
print(type(out_dev).__module__, out_dev.device)
print(to_numpy(out_dev))

# %% [markdown]
# ## On a real GPU: Runtime → GPU, then `--backend cupy`
#
# On Colab, choose **Runtime → Change runtime type → T4 GPU** (this notebook asks for a GPU runtime when it
# opens there); CuPy is preinstalled. On your own machine with an NVIDIA GPU, `pip install -e ".[gpu]"`.
# Then the same op runs on CuPy, unchanged, and so does training: `tinydgl train --backend cupy`, or
# `TINYDGL_BACKEND=cupy` for a whole notebook. Without a GPU, choosing `cupy` raises
# `BackendUnavailableError`, saying why, and the cell below says so.

# %%
from tinydgl.backend import BackendUnavailableError

try:
    with tinydgl.use_backend("cupy"):
        x_gpu = asarray([[-1.0, 2.0], [3.0, -4.0]], dtype="float64")
        out_gpu, _ = F.relu_forward(x_gpu)
    print(type(out_gpu).__module__, out_gpu.device, to_numpy(out_gpu).tolist())
except BackendUnavailableError as err:
    print("no GPU here:", str(err).split(":")[0])

# %% [markdown]
# ## Random numbers are drawn on the host
#
# So a seed means the same initial weights on every backend.

# %%
from tinydgl.models import build_model

a = build_model("mlp", in_channels=1, image_size=8, hidden=(16,), seed=0)
with tinydgl.use_backend("array_api_strict", device):
    b = build_model("mlp", in_channels=1, image_size=8, hidden=(16,), seed=0)
print(np.array_equal(to_numpy(a.parameters()[0].data), to_numpy(b.parameters()[0].data)))

# %% [markdown]
# ## Memory layout: the convolution returns channels-last memory
#
# An array is memory plus a shape and strides. tinydgl's convolution returns an (N, C, H, W) array whose
# memory is ordered (N, H, W, C).

# %%
x4 = np.ones((1, 3, 4, 4), np.float32)
w4 = np.ones((3, 3, 3, 3), np.float32)
conv_out, _ = F.conv2d_forward(x4, w4, padding=1)
plain = np.ascontiguousarray(conv_out)
print("conv output", conv_out.shape, conv_out.strides)
print("C-contiguous", plain.shape, plain.strides)

# %% [markdown]
# Where does each element live? Below, each pixel shows its position in memory (in elements), one panel
# per channel. On the left, a C-contiguous (N, C, H, W) array: each channel is one block. On the right,
# the convolution's output: the three channels of one pixel sit next to each other.

# %%
def memory_positions(array):
    """Offset in elements of every (h, w) entry, for each channel of image 0."""
    n, c, h, w = array.shape
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    s = np.array(array.strides) // array.itemsize
    return np.stack([hh * s[2] + ww * s[3] + k * s[1] for k in range(c)])


fig, axes = plt.subplots(2, 3, figsize=(7.5, 5))
for row, (name, array) in enumerate([("NCHW (C-contiguous)", plain), ("conv output (channels-last)", conv_out)]):
    positions = memory_positions(array)
    for k, ax in enumerate(axes[row]):
        ax.imshow(positions[k], cmap="viridis", vmin=0, vmax=positions.max())
        for (i, j), value in np.ndenumerate(positions[k]):
            ax.text(j, i, int(value), ha="center", va="center", color="white", fontsize=8)
        ax.set_title(f"{name}\nchannel {k}" if k == 1 else f"channel {k}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# The transposed (N, H, W, C) view of the convolution's output is plain contiguous memory:

# %%
print(conv_out.transpose(0, 2, 3, 1).flags["C_CONTIGUOUS"])

# %% [markdown]
# ## Next
#
# Try the exercises of [lesson 1](../lessons/01-arrays-and-backends.md), e.g. a stable `softplus` that
# runs on NumPy and on the strict device. Next notebook: linear layers and gradient checking.
