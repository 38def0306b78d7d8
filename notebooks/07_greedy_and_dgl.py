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
# # 7. Greedy and decoupled greedy learning (DGL)
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/07_greedy_and_dgl.ipynb)
#
# A step-through companion to [lesson 7](../lessons/07-greedy-and-dgl.md): cut the network into modules
# and give each module a classification loss of its own, through a small auxiliary head.
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
from tinydgl.optim import SGD, Adam
from tinydgl.trainers import build_trainer
from tinydgl.trainers.local import split_blocks

FAST = os.environ.get("TINYDGL_FAST") == "1"
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None, limit_test=300 if FAST else None)
train = DataLoader(digits.x_train, digits.y_train, batch_size=32, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=300, shuffle=False, mean=digits.mean, std=digits.std)

# %% [markdown]
# ## Cutting a model into modules
#
# [`split_blocks`](../tinydgl/trainers/local.py) groups the hidden blocks: one module per block, `modules=K`
# near-equal groups, or explicit `boundaries`.

# %%
print(split_blocks(5), split_blocks(5, modules=2), split_blocks(5, boundaries=[2, 4]))
model = build_model("smallconv", seed=0)              # 3 conv blocks, a linear block, the classifier
trainer = build_trainer("dgl", model, lambda params: Adam(params, lr=1e-3), aux="linear", modules=2)
print(trainer.groups)
print(trainer.modules[0].head)
print(trainer.modules[1].head)

# %% [markdown]
# ## No gradient crosses a module
#
# One step of module 1 alone. How much did each parameter tensor of the model move?

# %%
x, y = next(iter(train))
before = [p.data.copy() for p in model.parameters()]
loss, out = trainer.modules[0].step(x, y)
change = [np.abs(p.data - b).max() for p, b in zip(model.parameters(), before)]
first_module = len(trainer.modules[0].body.parameters())
print("module 1's output, passed on as a constant:", out.shape)

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
colors = ["C0" if i < first_module else "C1" for i in range(len(change))]
ax.bar(range(len(change)), change, color=colors)
ax.axvline(first_module - 0.5, color="gray", ls="--")
ax.text(first_module / 2 - 0.5, max(change) * 1.1, "module 1: updated", ha="center", color="C0")
ax.text((first_module + len(change)) / 2 - 0.5, max(change) * 1.1, "module 2: untouched", ha="center", color="C1")
ax.set(xlabel="parameter tensor of the model (weights and biases, bottom to top)", ylabel="max |change|",
       ylim=(0, max(change) * 1.3), xticks=range(len(change)), title="after one step of module 1")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## One module and no head is backprop, exactly

# %%
a = build_model("smallconv", in_channels=1, image_size=12, seed=0, dtype="float64")
b = build_model("smallconv", in_channels=1, image_size=12, seed=0, dtype="float64")
one_module = build_trainer("dgl", a, lambda p: SGD(p, lr=0.1), modules=1)
bp = build_trainer("bp", b, lambda p: SGD(p, lr=0.1))
x12 = x[:32, :, 8:20, 8:20].astype(np.float64)
one_module.train_step(x12, y[:32]), bp.train_step(x12, y[:32])
print(max(np.abs(p.data - q.data).max() for p, q in zip(a.parameters(), b.parameters())))

# %% [markdown]
# ## How good is each module's auxiliary classifier?
#
# Train DGL on `smallconv` with one module per block and the cheap `mlp` heads, then classify the test
# set with each module's head. (Evaluation uses batch norm's running statistics, which need a few dozen
# steps to settle: with too few steps every head looks like chance.)

# %%
model = build_model("smallconv", seed=0)
dgl = build_trainer("dgl", model, lambda params: Adam(params, lr=1e-3), aux="mlp")
print("modules:", dgl.groups)
for epoch in range(1 if FAST else 3):
    train.set_epoch(epoch)
    for xb, yb in train:
        dgl.train_step(xb, yb)


def head_accuracies(trainer, batches):
    """Test accuracy of every module's local classifier (the last module's is the network's)."""
    trainer.model.eval()
    for module in trainer.modules:
        if module.head is not None:
            module.head.eval()
    correct, total = np.zeros(len(trainer.modules)), 0
    for xb, yb in batches:
        h = xb
        for j, module in enumerate(trainer.modules):
            h = module.forward(h)
            logits = h if module.head is None else module.head.forward(h)
            correct[j] += (logits.argmax(axis=1) == yb).sum()
        total += len(yb)
    trainer.model.train()
    for module in trainer.modules:
        if module.head is not None:
            module.head.train()
    return correct / total


depth_accuracy = head_accuracies(dgl, test)
print(depth_accuracy.round(3))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
labels = [f"module {j + 1}" for j in range(len(depth_accuracy) - 1)] + ["network\n(classifier)"]
ax.bar(labels, depth_accuracy, color="C2")
ax.set(ylabel="test accuracy", ylim=(0, 1), title="DGL on smallconv: accuracy of each module's head")
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# Does accuracy grow with depth? On ImageNet it does (the DGL papers' per-module results); on a few
# thousand small digits even module 1's features separate the classes well, and the bars may be close or
# even fall with depth: deeper modules learn from features that are still moving. Try more epochs.

# %% [markdown]
# ## Side by side: backprop, sequential greedy, DGL
#
# Greedy trains module 1 alone, then freezes it and trains module 2, ...; DGL trains all modules at
# once. On `cnn` (two hidden blocks) greedy's epoch 1 is module 1 alone.

# %%
import tempfile

from tinydgl.cli import main

record = os.path.join(tempfile.mkdtemp(), "local.json")  # a run's files go to a temporary folder, not notebooks/

epochs = 2 if FAST else 4
main(["compare", "--trainers", "bp,greedy,dgl", "--model", "cnn", "--aux", "mlp",
      "--limit-train", "500" if FAST else "4000", "--limit-test", "300" if FAST else "1000",
      "--batch-size", "64", "--epochs", str(epochs), "--epochs-per-module", str(epochs // 2),
      "--no-progress", "--metrics-json", record])
runs = json.load(open(record))["runs"]

# %%
fig, (ax_curve, ax_time) = plt.subplots(1, 2, figsize=(10, 3.3))
for r, style in zip(runs, ["-o", "--s", ":^"]):
    ax_curve.plot([h["epoch"] for h in r["history"]], [h["test_accuracy"] for h in r["history"]], style,
                  label=r["trainer"])
ax_curve.set(xlabel="epoch", ylabel="test accuracy", title="learning curves (cnn)", xticks=range(1, epochs + 1))
ax_curve.legend()
ax_time.bar([r["trainer"] for r in runs], [r["train_seconds"] / r["epochs"] for r in runs], color=["C0", "C1", "C2"])
ax_time.set(ylabel="seconds per epoch", title="training time")
for ax in (ax_curve, ax_time):
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Next
#
# The exercises of [lesson 7](../lessons/07-greedy-and-dgl.md) compare the auxiliary heads and measure
# memory. Next notebook: modules that run at different speeds, with replay buffers.
