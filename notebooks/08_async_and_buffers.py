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
# # 8. Asynchrony, replay buffers and compressed buffers
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/08_async_and_buffers.ipynb)
#
# A step-through companion to [lesson 8](../lessons/08-async-and-buffers.md): DGL's modules running at
# different speeds, with a replay buffer between two modules (Algorithm 2 of the DGL paper), simulated
# in one process.
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
from tinydgl.train import fit
from tinydgl.trainers import build_trainer
from tinydgl.trainers.buffers import ReplayBuffer, VQCodec, vq_layout

FAST = os.environ.get("TINYDGL_FAST") == "1"
digits = load_dataset("mnist-small", limit_train=1000 if FAST else None, limit_test=300 if FAST else None)
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=300, shuffle=False, mean=digits.mean, std=digits.std)
EPOCHS = 2 if FAST else 4

# %% [markdown]
# ## The replay policy
#
# [`ReplayBuffer.take`](../tinydgl/trainers/buffers.py) serves, among the stored batches used the fewest
# times, the freshest. A push into a full buffer replaces the oldest batch.

# %%
buffer = ReplayBuffer(capacity=3)
for k in range(4):                                   # the 4th push replaces batch 0, never used
    buffer.push(np.full((2, 1), float(k)), np.zeros(2), produced_at=k)
print(len(buffer), "stored; dropped unused:", buffer.dropped_unused)
for _ in range(5):
    x, labels, entry = buffer.take()
    print("served batch", int(x[0, 0]), "now used", entry.uses, "time(s)")

# %% [markdown]
# ## A run with a slow module, event by event
#
# Three modules; module 2 is twice as slow (`slow_module` is 0-based). To see the schedule, we wrap the
# trainer's (private) `_event` method with a recorder: which module took each turn, did it learn or
# skip, and how stale was the batch it learned from (the producer's updates since it produced it).

# %%
model = build_model("mlp", hidden=(128, 128, 128), seed=0)
trainer = build_trainer("async-dgl", model, lambda params: Adam(params, lr=2e-3),
                        buffer_size=4, slow_module=1, slowdown=2.0)
events = []
run_event = trainer._event


def recorded_event(j, data=None):
    counter = trainer.counters[j]
    steps, staleness = counter["steps"], counter["staleness_sum"]
    run_event(j, data)
    events.append((j, counter["steps"] > steps, counter["staleness_sum"] - staleness))


trainer._event = recorded_event
history = fit(trainer, train, test, epochs=EPOCHS, progress=False)

# %%
events_array = np.array(events, dtype=float)
shown = slice(0, 120)
fig, (ax_time, ax_stale) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True)
module, learned, staleness = events_array[shown].T
ax_time.scatter(np.flatnonzero(learned) , module[learned == 1] + 1, marker="s", s=18, label="learns")
ax_time.scatter(np.flatnonzero(learned == 0), module[learned == 0] + 1, marker="x", s=30, color="C3", label="empty polls (nothing to take)")
ax_time.set(ylabel="module", yticks=[1, 2, 3], ylim=(0.5, 4), title="which module runs at each event (first 120 events)")
ax_time.legend(loc="upper right", fontsize=8, ncol=2)
for j, color in ((1, "C1"), (2, "C2")):
    pick = (module == j) & (learned == 1)
    ax_stale.plot(np.flatnonzero(pick), staleness[pick], "o-", ms=3, color=color, label=f"module {j + 1}")
ax_stale.set(xlabel="event", ylabel="staleness", title="staleness of each batch taken from a buffer")
ax_stale.legend(fontsize=8)
for ax in (ax_time, ax_stale):
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The first events are the warm-up (1, 1, 2, 2, 3, 3) that fills the buffers. Then module 2 runs about
# half as often as the others; module 3, fed by slow module 2, learns several times from each batch.

# %%
for m in trainer.stats()["modules"]:
    print("module", m["module"] + 1, "p=%.2f" % m["probability"], "steps", m["steps"], "empty polls", m["empty_polls"],
          "reuse %.2f" % m["mean_reuse"], "staleness %.2f" % m["mean_staleness"], "dropped", m.get("dropped_unused"))
print("test accuracy", history[-1]["test_accuracy"])

# %% [markdown]
# ## How slow can module 2 be?
#
# The same run for several slowdowns: staleness and reuse per module, and the test accuracy. Read the
# two measures together. Staleness counts the *producer's* updates since a batch was produced: a slow
# module 2 takes the freshest batch of fast module 1, so its staleness stays low (module 1's updates
# between two of module 2's turns are dropped batches instead); module 3, fed by slow module 2, sees few
# new batches, so it *reuses* each one more often, while their staleness (module 2's updates) stays small.

# %%
slowdowns = [1.0, 4.0] if FAST else [1.0, 2.0, 4.0, 8.0]
sweep = {}
for slowdown in slowdowns:
    t = build_trainer("async-dgl", build_model("mlp", hidden=(128, 128, 128), seed=0),
                      lambda params: Adam(params, lr=2e-3), buffer_size=4, slow_module=1, slowdown=slowdown)
    h = fit(t, train, test, epochs=EPOCHS, progress=False, log=lambda *args: None)
    sweep[slowdown] = (t.stats()["modules"], h[-1]["test_accuracy"])

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
width = 0.8 / len(slowdowns)
for k, (slowdown, (modules, accuracy)) in enumerate(sweep.items()):
    where = np.arange(2, 4) + (k - (len(slowdowns) - 1) / 2) * width
    axes[0].bar(where, [m["mean_staleness"] for m in modules[1:]], width, label=f"slowdown {slowdown:g}")
    axes[1].bar(where, [m["mean_reuse"] for m in modules[1:]], width, label=f"slowdown {slowdown:g}")
axes[2].plot(range(len(slowdowns)), [acc for _, acc in sweep.values()], "o-")
axes[0].set(xticks=[2, 3], xlabel="module", ylabel="mean staleness", title="staleness")
axes[1].set(xticks=[2, 3], xlabel="module", ylabel="mean reuse of a batch", title="reuse")
axes[2].set(xticks=range(len(slowdowns)), xticklabels=[f"{s:g}" for s in slowdowns], xlabel="slowdown of module 2",
            ylabel="test accuracy", title="accuracy")
axes[0].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Compressed buffers: vector quantisation
#
# [`VQCodec`](../tinydgl/trainers/buffers.py) stores each activation vector as the index of its nearest
# codeword. The codebook is learned online (EMA k-means). How fast does the reconstruction error fall?

# %%
print(vq_layout((32, 14, 14)), vq_layout((256,)))      # (groups, vector length)
rng = np.random.default_rng(0)
centres = rng.standard_normal((16, 8)).astype(np.float32)


def activations(n=256):
    """Vectors that cluster around 16 centres, like real activations often do."""
    return (centres[rng.integers(0, 16, n)] + 0.05 * rng.standard_normal((n, 8))).astype(np.float32)


codec = VQCodec((8,), codebook_size=64, seed=0)
probe = activations()
errors = []
for _ in range(30 if FAST else 100):
    codec.encode(activations())                   # learn=True: the producer's side updates the codebook
    decoded = codec.decode(codec.encode(probe, learn=False))
    errors.append(np.abs(decoded - probe).mean() / np.abs(probe).mean())
codes = codec.encode(probe, learn=False)
print(codes.dtype, probe.nbytes, "->", codec.payload_bytes(codes), "bytes")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(errors)
ax.set(xlabel="batches seen by the codec", ylabel="relative error", yscale="log", title="VQ reconstruction error")
ax.grid(alpha=0.3, which="both")
fig.tight_layout()
plt.show()

# %% [markdown]
# In training, `buffer_codec="vq"` puts a codec in every buffer. Mind the codebook: for flat activations it
# has one codebook per position, counted separately, and it is large.

# %%
vq = build_trainer("async-dgl", build_model("mlp", hidden=(128, 128, 128), seed=0),
                   lambda params: Adam(params, lr=2e-3), buffer_size=4, buffer_codec="vq")
h = fit(vq, train, test, epochs=1, progress=False)
for b in vq.stats()["buffers"]:
    print("after module", b["after_module"] + 1, ":", b["raw_bytes_per_sample"], "->", b["stored_bytes_per_sample"],
          "bytes/sample, codebook", b["codebook_bytes"], "bytes")

# %% [markdown]
# ## Next
#
# The exercises of [lesson 8](../lessons/08-async-and-buffers.md): `reuse_cap`, the equivalence with
# synchronous DGL, and an "oldest first" policy. Next notebook: LLS, a local loss with nothing to learn.
