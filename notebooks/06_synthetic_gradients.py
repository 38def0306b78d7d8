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
# # 6. Synthetic gradients: DNI and cDNI
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/06_synthetic_gradients.ipynb)
#
# A step-through companion to [lesson 6](../lessons/06-synthetic-gradients.md): a small model predicts
# each block's gradient, so the block can update without waiting for the blocks above.
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

FAST = os.environ.get("TINYDGL_FAST") == "1"
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None, limit_test=300 if FAST else None)

# %% [markdown]
# ## A DNI trainer: one synthesizer per interface
#
# An MLP 784 -> 64 -> 64 -> 10 has two interfaces (after each hidden block); each gets a linear
# synthesizer that maps the block's output `h_i` to a guess of `dL/dh_i`.

# %%
model = build_model("mlp", hidden=(64, 64), seed=0)
trainer = build_trainer("dni", model, lambda params: Adam(params, lr=1e-3), synthesizer="linear")
print(len(trainer.groups), "groups,", len(trainer.synthesizers), "synthesizers")
print(trainer.synthesizers[0])

# %% [markdown]
# ## Zero at the start
#
# The synthesizers' last layer is zero-initialised: before training, every synthetic gradient is exactly 0.

# %%
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
x, y = next(iter(train))
h0 = model.layers[0].forward(x)
print(np.abs(trainer.synthesizers[0].forward(h0)).max())
model.forget()                                      # drop the cache of that look-ahead

# %% [markdown]
# ## Watch the gradient information trickle down
#
# We train and record, at every step, the task loss and each synthesizer's regression loss
# (`trainer.synthesizer_losses`). At step 0 synthesizer 1's target is what block 2 sent back while it
# learned from synthesizer 2's (zero) prediction: a bootstrapped zero.

# %%
epochs = 1 if FAST else 3
task_losses, synth_losses = [], []
for epoch in range(epochs):
    train.set_epoch(epoch)
    for xb, yb in train:
        task_losses.append(trainer.train_step(xb, yb))
        synth_losses.append(list(trainer.synthesizer_losses))
synth_losses = np.array(synth_losses)
print("first steps:", synth_losses[:3].round(6).tolist())

# %%
fig, (ax_task, ax_synth) = plt.subplots(1, 2, figsize=(10, 3.3))
ax_task.plot(task_losses)
ax_task.set(xlabel="step", ylabel="cross-entropy", title="task loss (top block)")
for i in range(synth_losses.shape[1]):
    ax_synth.plot(np.maximum(synth_losses[:, i], 1e-12), label=f"synthesizer {i + 1}")
ax_synth.set(xlabel="step", ylabel="regression loss", yscale="log", title="synthesizer losses")
ax_synth.legend()
for ax in (ax_task, ax_synth):
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Synthesizer 1 starts at exactly zero (plotted at the 1e-12 floor) and only picks up once synthesizer
# 2 has something to say: real gradient information reaches the lower interface one step later.

# %% [markdown]
# ## cDNI: the synthesizer also sees the one-hot label

# %%
cdni = build_trainer("cdni", build_model("mlp", hidden=(64, 64), seed=0), lambda p: Adam(p, lr=1e-3),
                     synthesizer="linear")
print(cdni.synthesizers[0])

# %% [markdown]
# ## BP(λ = 1) is backprop
#
# Mixing in the true gradient with weight λ = 1 gives every group the gradient from above: the same
# parameters as backprop, and the locks come back.

# %%
a = build_model("mlp", hidden=(64, 64), seed=0, dtype="float64")
b = build_model("mlp", hidden=(64, 64), seed=0, dtype="float64")
dni_one = build_trainer("dni", a, lambda p: SGD(p, lr=0.1), bp_lambda=1.0, synthesizer="linear")
bp = build_trainer("bp", b, lambda p: SGD(p, lr=0.1))
x64 = x.astype(np.float64)
for step in range(3):
    dni_one.train_step(x64, y), bp.train_step(x64, y)
print(max(np.abs(p.data - q.data).max() for p, q in zip(a.parameters(), b.parameters())))

# %% [markdown]
# ## Is it faster? Accuracy and time, side by side
#
# `tinydgl compare` trains each method on the same model, data and seed. In one process DNI does *more*
# work than backprop (each synthesizer adds a forward, a backward and an optimizer step).

# %%
import tempfile

from tinydgl.cli import main

record = os.path.join(tempfile.mkdtemp(), "dni.json")  # a run's files go to a temporary folder, not notebooks/

main(["compare", "--trainers", "bp,dni,cdni", "--model", "mlp", "--synthesizer", "linear",
      "--limit-train", "1000" if FAST else "4000", "--limit-test", "300" if FAST else "1000",
      "--batch-size", "64", "--epochs", "1" if FAST else "3", "--no-progress", "--metrics-json", record])
runs = json.load(open(record))["runs"]

# %%
names = [r["trainer"] for r in runs]
fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(8, 3))
ax_acc.bar(names, [r["test_accuracy"] for r in runs], color=["C0", "C1", "C2"])
ax_acc.set(ylabel="test accuracy", ylim=(0, 1), title="accuracy")
ax_time.bar(names, [r["train_seconds"] / r["epochs"] for r in runs], color=["C0", "C1", "C2"])
ax_time.set(ylabel="seconds per epoch", title="training time")
for ax in (ax_acc, ax_time):
    ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## On two workers: the synthesizer's targets come back late
#
# Update unlocking lets the groups run at the same time: `--workers 2` puts them on two processes. Worker 0
# updates its groups from their synthesizers at once and sends its output up; worker 1 sends back down
# the gradient at its input, the target of worker 0's top synthesizer, which arrives a batch or two
# later. (The run is a `tinydgl train` process of its own: spawned workers cannot re-import a notebook.)

# %%
import subprocess
import sys
import tempfile

from tinydgl.runtime.metrics import plot_timeline

metrics_path = os.path.join(tempfile.mkdtemp(), "two-workers.json")
subprocess.run([sys.executable, "-m", "tinydgl", "train", "--trainer", "cdni", "--model", "mlp",
                "--synthesizer", "linear", "--workers", "2", "--batch-size", "64", "--epochs", "1",
                "--limit-train", "1000" if FAST else "4000", "--limit-test", "300", "--no-progress",
                "--metrics-json", metrics_path], check=True)
epoch = json.load(open(metrics_path))["history"][0]
lower = epoch["workers"][0]
print("test accuracy", round(epoch["test_accuracy"], 3))
print("worker 0 received", lower["targets_received"], "targets; lateness in batches:", lower["target_lateness_counts"])
print("its synthesizer's regression loss, mean", round(lower["synthesizer_loss_mean"], 5))

# %%
timeline_png = plot_timeline(epoch["workers"], os.path.join(tempfile.mkdtemp(), "timeline.png"),
                             title="cdni on mlp, 2 workers (black: a late target learned from)")
plt.figure(figsize=(10, 2.4))
plt.imshow(plt.imread(timeline_png))
plt.axis("off")
plt.show()

# %% [markdown]
# Is that faster than backprop? Here, no: on a 2-core CPU backprop already uses both cores through its
# matrix products, and worker 0's group (the 784-input layer) with its synthesizer costs more than half a
# backprop step. [`benchmarks/RESULTS.md`](../benchmarks/RESULTS.md) has the measured table and the
# prediction for J devices.

# %% [markdown]
# ## Next
#
# The exercises of [lesson 6](../lessons/06-synthetic-gradients.md) try `--update-prob`, BP(λ) and the
# MLP synthesizer. Next notebook: local losses (greedy and DGL).
