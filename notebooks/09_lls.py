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
# # 9. LLS: a local loss with nothing to learn
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/09_lls.ipynb)
#
# A step-through companion to [lesson 9](../lessons/09-lls.md): every hidden block is trained to make its
# (pooled, normalised) output resonate with its class's wave, through a fixed projection.
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

from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import Adam, AdamW
from tinydgl.trainers import build_trainer
from tinydgl.trainers.lls import lls_basis
from tinydgl.trainers.local import block_output_shapes

FAST = os.environ.get("TINYDGL_FAST") == "1"

# %% [markdown]
# ## The heads: pool, normalise, project on a fixed basis

# %%
model = build_model("smallconv", seed=0)
print(block_output_shapes(model))                       # each block's output, per example
print([block.local_pool for block in model.layers])     # the pooled size p_l of each block's head
trainer = build_trainer("lls", model, lambda params: AdamW(params, lr=5e-3))
print(trainer.modules[0].head)
print("learnable parameters per head:",
      [len(m.head.parameters()) if m.head is not None else "classifier" for m in trainer.modules])

# %% [markdown]
# ## The basis, looked at
#
# One wave per class, `t = 0 .. d-1` ([`lls_basis`](../tinydgl/trainers/lls.py)). Top: the 10 rows of
# each basis for d = 64. Bottom: how much the (normalised) rows overlap, `|B Bᵀ|`: a good basis is close
# to the identity, so that pushing the output towards one class's wave does not push it towards another.

# %%
waveforms = ["sin", "square", "cosine", "random"]
fig, axes = plt.subplots(2, 4, figsize=(11, 5))
for k, waveform in enumerate(waveforms):
    B = lls_basis(10, 64, waveform)
    unit = B / np.linalg.norm(B, axis=1, keepdims=True)
    axes[0, k].imshow(B, aspect="auto", cmap="RdBu_r", interpolation="nearest")
    axes[0, k].set(title=waveform, xlabel="t", ylabel="class" if k == 0 else None)
    axes[1, k].imshow(np.abs(unit @ unit.T), cmap="magma", vmin=0, vmax=1)
    axes[1, k].set(title=f"overlap, max off-diagonal {np.abs(unit @ unit.T - np.eye(10)).max():.2f}", xlabel="class")
    axes[1, k].title.set_fontsize(9)
fig.tight_layout()
plt.show()

# %% [markdown]
# For the sizes SmallConv really uses (d = 512 for the first block):

# %%
B = lls_basis(10, 512, "sin")
t = np.arange(512)
print(B.shape, np.allclose(B[3], np.sin(np.linspace(50, 512, 10)[3] * t)))
unit = B / np.linalg.norm(B, axis=1, keepdims=True)
print("max overlap of two classes' waves", np.abs(unit @ unit.T - np.eye(10)).max().round(3))

# %% [markdown]
# ## LLS-M: a learned scale per class

# %%
lls_m = build_trainer("lls-m", build_model("smallconv", seed=0), lambda params: AdamW(params, lr=5e-3))
print(lls_m.modules[0].head.layers[-2], [p.shape for p in lls_m.modules[0].head.parameters()])

# %% [markdown]
# ## Learning curves: backprop, DGL and LLS on mnist-small
#
# The same `cnn`, data and seed, trained three ways; we evaluate on the test set every few steps. The
# only thing that differs is where each block's gradient comes from: the block above (bp), a learned
# auxiliary head (dgl), or a fixed basis (lls). All three use Adam at lr 2e-3. (The paper's lr 5e-3 is
# for SmallConv, whose blocks have batch norm; on this `cnn`, which has none, it makes LLS's classifier
# diverge: try it.)

# %%
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None, limit_test=300 if FAST else None)
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=300, shuffle=False, mean=digits.mean, std=digits.std)
epochs, every = (1, 4) if FAST else (3, 10)

methods = {
    "bp": lambda model: build_trainer("bp", model, lambda p: Adam(p, lr=2e-3)),
    "dgl": lambda model: build_trainer("dgl", model, lambda p: Adam(p, lr=2e-3), aux="mlp"),
    "lls": lambda model: build_trainer("lls", model, lambda p: Adam(p, lr=2e-3)),
}
curves = {}
for name, make in methods.items():
    trainer = make(build_model("cnn", seed=0))
    steps, losses, evaluated = 0, [], []
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for xb, yb in train:
            losses.append(trainer.train_step(xb, yb))
            steps += 1
            if steps % every == 0:
                evaluated.append((steps, trainer.evaluate(test)["accuracy"]))
    curves[name] = (losses, evaluated)
    print(f"{name}: test accuracy {evaluated[-1][1]:.3f} after {steps} steps")

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, (losses, evaluated) in curves.items():
    ax_loss.plot(losses, label=name, lw=1)
    ax_acc.plot(*zip(*evaluated), marker="o", ms=3, label=name)
ax_loss.set(xlabel="step", ylabel="training loss (last block)", title="training loss")
ax_acc.set(xlabel="step", ylabel="test accuracy", title="test accuracy")
for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Side by side: LLS and its variants
#
# `tinydgl compare` with the paper's optimiser (AdamW, lr 5e-3) on the MLP (whose blocks have batch norm):
# accuracy and time per epoch. LLS-M and LLS-MxM add a few learned numbers per head.

# %%
import tempfile

from tinydgl.cli import main

record = os.path.join(tempfile.mkdtemp(), "lls.json")  # a run's files go to a temporary folder, not notebooks/

main(["compare", "--trainers", "bp,lls,lls-m,lls-mxm", "--model", "mlp", "--optimizer", "adamw", "--lr", "5e-3",
      "--limit-train", "1000" if FAST else "4000", "--limit-test", "300" if FAST else "1000",
      "--batch-size", "64", "--epochs", "1" if FAST else "3", "--no-progress", "--metrics-json", record])
runs = json.load(open(record))["runs"]

# %%
names = [r["trainer"] for r in runs]
fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(9, 3))
ax_acc.bar(names, [r["test_accuracy"] for r in runs], color=[f"C{i}" for i in range(len(runs))])
ax_acc.set(ylabel="test accuracy", ylim=(0, 1), title="accuracy")
ax_time.bar(names, [r["train_seconds"] / r["epochs"] for r in runs], color=[f"C{i}" for i in range(len(runs))])
ax_time.set(ylabel="seconds per epoch", title="training time")
for ax in (ax_acc, ax_time):
    ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Next
#
# The exercises of [lesson 9](../lessons/09-lls.md): gradient-check a head, compare the waveforms, and
# look closely at the last row of the cosine basis. Next notebook: running the pieces in parallel.
