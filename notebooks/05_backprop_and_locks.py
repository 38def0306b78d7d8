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
# # 5. Backprop and its three locks
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/05_backprop_and_locks.ipynb)
#
# A step-through companion to [lesson 5](../lessons/05-backprop-and-locks.md): layers, models, a
# backprop step written out, what it makes every block wait for, and a first trained CNN.
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
import json
import os

import matplotlib.pyplot as plt
import numpy as np

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.nn import Linear
from tinydgl.optim import Adam

FAST = os.environ.get("TINYDGL_FAST") == "1"

# %% [markdown]
# ## A layer keeps its cache from forward to backward, and drops it

# %%
layer = Linear(4, 3, rng=np.random.default_rng(0))
out = layer.forward(np.ones((2, 4), dtype=np.float32))
print("after forward, holding a cache:", layer._cache is not None)
dx = layer.backward(np.ones_like(out))
print("after backward:", layer._cache, "- weight gradient", layer.weight.grad.shape)

# %% [markdown]
# ## A model is a list of blocks

# %%
model = build_model("cnn", in_channels=1, image_size=28, num_classes=10, seed=0)
print(len(model.layers), "blocks,", model.num_parameters(), "parameters")
print(model)

# %% [markdown]
# ## One backprop step, written out
#
# Where does each block's gradient come from? **From the block above it.** We also record how many bytes
# of activations the layers hold after every stage of the step.

# %%
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None, limit_test=300 if FAST else None)
pick = np.random.default_rng(0).permutation(len(digits.y_train))[:64]      # the data is sorted by class
x = ((digits.x_train[pick] / 255.0 - digits.mean[0]) / digits.std[0]).astype(np.float32)
y = digits.y_train[pick]
optimizer = Adam(model.parameters(), lr=2e-3)


def held_bytes(model):
    """Bytes of arrays that the layers keep in their forward caches right now."""
    def size(item):
        if hasattr(item, "nbytes"):
            return item.nbytes
        if isinstance(item, (tuple, list)):
            return sum(size(i) for i in item)
        return 0
    return sum(size(getattr(layer, "_cache", None)) for block in model.layers for layer in block.layers)


stages, held = ["start"], [held_bytes(model)]
h = x
for i, block in enumerate(model.layers):                 # 1. forward through every block
    h = block.forward(h)
    stages.append(f"fwd {i + 1}")
    held.append(held_bytes(model))
loss, grad = F.softmax_cross_entropy(h, y)               # 2. the loss at the top
for i in reversed(range(len(model.layers))):             # 3. backward, top to bottom
    grad = model.layers[i].backward(grad, need_input_grad=i > 0)
    stages.append(f"bwd {i + 1}")
    held.append(held_bytes(model))
optimizer.step()                                         # 4. only now can any block update
print("loss", round(loss, 4))

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(stages, np.array(held) / 2**20, color=["C0"] * (len(model.layers) + 1) + ["C1"] * len(model.layers))
ax.set(ylabel="MiB held in caches", title="activations held during one backprop step (batch 64)")
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# The peak is at the top of the forward pass: every block holds its activations until its own backward
# has run. That is the *memory* side of backprop's locks.

# %% [markdown]
# ## The three locks, as a timeline
#
# Put each of the 3 blocks on its own device, and let each forward and backward take one time unit. The
# step above forces this schedule (the update comes after each block's backward):

# %%
J = len(model.layers)
fig, ax = plt.subplots(figsize=(7, 2.6))
for j in range(J):
    ax.barh(j, 1, left=j, color="C0")                        # forward of block j at time j
    ax.barh(j, 1, left=2 * J - 1 - j, color="C1")            # backward of block j after all blocks above
    idle = [(j + 1, 2 * J - 2 - 2 * j)]                      # waiting for the layers above
    ax.broken_barh(idle, (j - 0.4, 0.8), facecolors="none", edgecolors="gray", hatch="//")
ax.set_yticks(range(J), [f"block {j + 1}" for j in range(J)])
ax.invert_yaxis()
ax.set(xlabel="time (units)", title="backprop on 3 devices: blue forward, orange backward, hatched waiting")
fig.tight_layout()
plt.show()
busy = 2 / (2 * J)
print(f"each device is busy {busy:.0%} of the step")

# %% [markdown]
# ## Training with a trainer and the shared loop
#
# [`build_trainer`](../tinydgl/trainers/__init__.py) wraps the step above; a training loop is then
# "for each batch: `train_step`". We keep every step's loss, and look at the first layer's filters before
# and after.

# %%
from tinydgl.trainers import build_trainer

model = build_model("cnn", seed=0)
filters_before = model.layers[0].layers[0].weight.data.copy()
trainer = build_trainer("bp", model, lambda params: Adam(params, lr=2e-3))
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=250, shuffle=False, mean=digits.mean, std=digits.std)

epochs = 1 if FAST else 3
step_losses, epoch_accuracy = [], []
for epoch in range(epochs):
    train.set_epoch(epoch)
    for xb, yb in train:
        step_losses.append(trainer.train_step(xb, yb))
    epoch_accuracy.append(trainer.evaluate(test)["accuracy"])
    print(f"epoch {epoch + 1}: test accuracy {epoch_accuracy[-1]:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(step_losses, lw=1)
ax.set(xlabel="step", ylabel="train loss (batch)", yscale="log", title="cnn, backprop, mnist-small")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The first layer's 3x3 filters before and after training, and what training changed. With so few
# steps (and Adam's small steps) the filters stay close to their random start: the last row, on its own
# colour scale, shows the part the digits taught them.

# %%
filters_after = model.layers[0].layers[0].weight.data
rows = [("before", filters_before), ("after", filters_after), ("change", filters_after - filters_before)]
fig, axes = plt.subplots(3, 16, figsize=(10, 2.4))
for row, (name, bank) in enumerate(rows):
    for k in range(16):
        ax = axes[row, k]
        ax.imshow(bank[k, 0], cmap="RdBu_r", vmin=-np.abs(bank[k]).max(), vmax=np.abs(bank[k]).max())
        ax.set_xticks([]), ax.set_yticks([])
    axes[row, 0].set_ylabel(name, fontsize=8)
fig.suptitle("first 16 filters of conv 1", fontsize=9)
plt.show()
print("mean change per weight %.3f" % np.abs(filters_after - filters_before).mean())

# %% [markdown]
# ## The same from the command line
#
# `tinydgl train` runs the shared [`fit`](../tinydgl/train/loop.py) loop; `tinydgl.cli.main` takes the
# same arguments from Python. `--metrics-json` writes the run's numbers.

# %%
import tempfile

from tinydgl.cli import main

record = os.path.join(tempfile.mkdtemp(), "bp.json")  # a run's files go to a temporary folder, not notebooks/

main(["train", "--trainer", "bp", "--model", "cnn", "--limit-train", "500" if FAST else "2000",
      "--limit-test", "200" if FAST else "1000", "--epochs", "1" if FAST else "2", "--no-progress",
      "--metrics-json", record])
summary = json.load(open(record))
print({k: summary[k] for k in ("trainer", "test_accuracy", "train_seconds", "samples_per_second")})

# %% [markdown]
# ## Next
#
# The exercises of [lesson 5](../lessons/05-backprop-and-locks.md). Next notebook: synthetic gradients,
# the first way to break the locks.
