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
# # 10. Parallel and distributed training
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/10_parallel_and_distributed.ipynb)
#
# A step-through companion to [lesson 10](../lessons/10-parallel-and-distributed.md): why breaking the
# locks matters only when the pieces run at the same time.
#
# **What is here.** First a *hand-written* two-process pipeline built on
# [`SharedRing`](../tinydgl/runtime/shm_ring.py), the shared-memory buffer of (activation, label) batches,
# to show the mechanics; then the real runtime ([`tinydgl/runtime/`](../tinydgl/runtime/__init__.py)) in
# one command, with its per-worker record and timeline; then single-process simulations of synchronous
# data-parallel SGD and Downpour (the runtime runs both for real: `--trainer bp --parallel sync|downpour --workers W`).
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
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time

import matplotlib.pyplot as plt
import numpy as np

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.models import build_model
from tinydgl.optim import SGD, Adam
from tinydgl.runtime import SharedRing, plot_timeline
from tinydgl.trainers import build_trainer
from tinydgl.trainers.local import block_output_shapes

FAST = os.environ.get("TINYDGL_FAST") == "1"

# %% [markdown]
# ## Pipelines on paper: backprop versus local losses
#
# Four modules on four workers, 8 batches, each module taking one time unit per batch for its forward
# and backward work (module 2 two units). With backprop a batch's forward and backward pass must cross all workers before the next
# batch's update; with local losses (DGL) worker j starts batch b as soon as worker j-1 has produced it
# and it has finished batch b-1: a pipeline.

# %%
def pipeline_schedule(durations, batches):
    """Start and end time of (module j, batch b) when each worker takes batches in order, as soon as its
    input is ready (unbounded FIFO buffers between workers)."""
    J = len(durations)
    start, end = np.zeros((J, batches)), np.zeros((J, batches))
    for b in range(batches):
        for j in range(J):
            start[j, b] = max(end[j - 1, b] if j else 0.0, end[j, b - 1] if b else 0.0)
            end[j, b] = start[j, b] + durations[j]
    return start, end


durations, batches = [1.0, 2.0, 1.0, 1.0], 8
start, end = pipeline_schedule(durations, batches)
backprop_total = batches * sum(durations)            # every batch crosses all workers and back, one at a time
print("DGL pipeline:", end.max(), "time units; backprop, batch after batch:", backprop_total)

# %%
fig, ax = plt.subplots(figsize=(10, 2.8))
colors = plt.cm.tab10(np.arange(batches) % 10)
for j in range(len(durations)):
    for b in range(batches):
        ax.barh(j, end[j, b] - start[j, b], left=start[j, b], color=colors[b], edgecolor="white")
        ax.text((start[j, b] + end[j, b]) / 2, j, str(b + 1), ha="center", va="center", fontsize=7, color="white")
ax.set_yticks(range(len(durations)), [f"worker {j + 1}" + (" (2x slow)" if durations[j] > 1 else "") for j in range(len(durations))])
ax.invert_yaxis()
ax.set(xlabel="time (units)", title="DGL as a pipeline: numbers are batches; the slow worker sets the pace")
fig.tight_layout()
plt.show()

# %% [markdown]
# After the pipeline fills, a batch leaves every 2 units (the slow worker's time); workers 3 and 4 idle
# half the time. Replay buffers (notebook 8) let them learn again from stored batches instead of idling.

# %% [markdown]
# ## A shared-memory ring between two processes
#
# [`SharedRing`](../tinydgl/runtime/shm_ring.py) holds batches in one shared-memory segment: `put` copies
# a batch in, `get` copies one out (no pickling). With `policy="fifo"` every batch is served once, in
# order. First, in one process:

# %%
with SharedRing(slots=2, max_batch=4, sample_shape=(3,), policy="fifo") as ring:
    ring.put(np.ones((4, 3), np.float32), np.arange(4), produced_at=1)
    x, labels, entry = ring.get()
    print(x.shape, labels, entry.serial, entry.produced_at)

# %% [markdown]
# ## A two-worker DGL pipeline, written by hand
#
# This is a sketch of what the runtime does, not the runtime (that comes next). A `cnn` is cut into two DGL modules. A
# child process trains module 1 and puts each output batch (with its labels) into a FIFO ring; this
# process trains module 2 on what it gets from the ring. Each side records when each of its steps ran.
# At the end the child sends back its timeline and module 1's weights.
#
# We fork the child so that it inherits the notebook's objects; where fork is not available (Windows),
# a thread plays the child's part.

# %%
digits = load_dataset("mnist-small", limit_train=640 if FAST else 2560, limit_test=300 if FAST else None)
train = DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean, std=digits.std)
test = DataLoader(digits.x_test, digits.y_test, batch_size=300, shuffle=False, mean=digits.mean, std=digits.std)

model = build_model("cnn", seed=0)
dgl = build_trainer("dgl", model, lambda params: Adam(params, lr=2e-3), aux="mlp", modules=2)
module_1, module_2 = dgl.modules
sample_shape = block_output_shapes(model)[0]
print("modules:", dgl.groups, "- what crosses between them, per example:", sample_shape)

# %%
def run_module_1(handle, results):
    """Worker 1: learn module 1 on every data batch; send its outputs on through the ring."""
    ring = SharedRing.attach(handle)
    timeline = []
    for b, (x, y) in enumerate(train):
        t0 = time.perf_counter()
        _, out = module_1.step(x, y)
        t1 = time.perf_counter()
        ring.put(out, y, produced_at=b + 1)
        timeline.append((t0, t1))
    ring.close()
    results.put((timeline, module_1.body.state_dict()))


if "fork" in mp.get_all_start_methods():
    context = mp.get_context("fork")
    results, Worker = context.Queue(), context.Process
else:
    import queue

    context, results, Worker = None, queue.Queue(), threading.Thread

ring = SharedRing(slots=4, max_batch=64, sample_shape=sample_shape, policy="fifo")
t_start = time.perf_counter()
worker = Worker(target=run_module_1, args=(ring.handle, results))
worker.start()
timeline_2 = []
for b in range(len(train)):                                # worker 2: this process
    x, y, entry = ring.get(timeout=120)
    t0 = time.perf_counter()
    module_2.step(x, y)
    timeline_2.append((t0, time.perf_counter()))
timeline_1, module_1_state = results.get(timeout=120)
worker.join()
ring.close()
wall = time.perf_counter() - t_start
module_1.body.load_state_dict(module_1_state)             # bring worker 1's learned weights home
print(f"{len(train)} batches in {wall:.2f}s on two workers; test accuracy {dgl.evaluate(test)['accuracy']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(10, 2.3))
for row, timeline in enumerate([timeline_1, timeline_2]):
    spans = [(s - t_start, e - s) for s, e in timeline]
    ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=f"C{row}", edgecolors="white")
ax.set_yticks([0, 1], ["worker 1\n(module 1, child)", "worker 2\n(module 2, here)"])
ax.invert_yaxis()
ax.set(xlabel="seconds since start", title="worker timeline: each bar is one local step")
ax.grid(alpha=0.3, axis="x")
fig.tight_layout()
plt.show()
busy = sum(e - s for s, e in timeline_1 + timeline_2)
print(f"work done: {busy:.2f}s of steps in {wall:.2f}s of wall time ({busy / wall:.2f} workers busy on average)")

# %% [markdown]
# Where the bars of the two rows overlap, both modules were learning at the same time, on different
# batches: that is what the local losses bought. (On a busy machine with few cores the overlap shrinks:
# the two processes share the CPUs.)

# %% [markdown]
# ## The real runtime, in one command
#
# `tinydgl train --workers 2` does what the sketch above did, for any local trainer: it times each
# module's step, splits the modules into the two groups whose slower one is fastest, starts two worker
# processes connected by rings, and records what every worker did. We run it as a separate command (a
# notebook cannot be re-imported by the spawned workers, a script or the command line can), with async DGL,
# whose replay buffer never makes the first worker wait, and read the record back.

# %%
record = os.path.join(tempfile.mkdtemp(), "run.json")
command = [sys.executable, "-m", "tinydgl", "train", "--trainer", "async-dgl", "--model", "cnn", "--workers", "2",
           "--limit-train", "512" if FAST else "4096", "--limit-test", "300", "--batch-size", "64",
           "--no-progress", "--metrics-json", record]
subprocess.run(command, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
epoch = json.load(open(record))["history"][-1]
for w in epoch["workers"]:
    print(f"worker {w['worker']} (modules {w['modules']}): {w['steps']} steps: {w['fresh_batches']} fresh, "
          f"{w['replayed_batches']} replayed, {w['skipped_batches']} skipped, {w['empty_polls']} empty polls, "
          f"busy {100 * w['busy_fraction']:.0f}%, staleness mean {w['staleness_mean']:.2f}")
print("ring between the workers:", epoch["rings"][1])

# %% [markdown]
# Each bar is one step of one worker; gaps are waiting. Where the gaps are tells which worker holds the
# pipeline back. (`--plot run.png` on the command line draws the same chart next to the learning curves.)

# %%
timeline_png = plot_timeline(epoch["workers"], os.path.join(tempfile.mkdtemp(), "timeline.png"),
                             title="async DGL, cnn, 2 workers")
plt.figure(figsize=(10, 2.2))
plt.imshow(plt.imread(timeline_png))
plt.axis("off")
plt.show()

# %% [markdown]
# ## Synchronous data-parallel SGD: the same gradient, split in two
#
# Two workers each compute the gradient of half a batch; averaging them gives the whole batch's gradient
# (no batch norm, whose statistics would differ between halves).

# %%
pick = np.random.default_rng(0).permutation(len(digits.y_train))
x_all = ((digits.x_train[pick] / 255.0 - digits.mean[0]) / digits.std[0]).astype(np.float64)
y_all = digits.y_train[pick]


def gradients(model, x, y):
    """One backprop pass: the loss and every parameter's gradient."""
    h = x
    for block in model.layers:
        h = block.forward(h)
    loss, grad = F.softmax_cross_entropy(h, y)
    for i in reversed(range(len(model.layers))):
        grad = model.layers[i].backward(grad, need_input_grad=i > 0)
    return loss, [p.grad.copy() for p in model.parameters()]


mlp = build_model("mlp", hidden=(32,), batchnorm=False, seed=0, dtype="float64")
_, whole = gradients(mlp, x_all[:64], y_all[:64])
_, shard_a = gradients(mlp, x_all[:32], y_all[:32])
_, shard_b = gradients(mlp, x_all[32:64], y_all[32:64])
print(max(np.abs((a + b) / 2 - w).max() for a, b, w in zip(shard_a, shard_b, whole)))

# %% [markdown]
# ## Downpour SGD: nobody waits, and the server sees stale gradients
#
# Three simulated workers of different speeds fetch the parameters every `n_fetch` steps and push their
# gradients every `n_push` steps. The staleness of a push is how many updates the server made since the
# worker fetched. How does it depend on `n_fetch`?

# %%
def downpour(n_fetch, n_push=2, events=90 if FAST else 240, batch=32, seed=0):
    server = build_model("mlp", hidden=(32,), batchnorm=False, seed=0, dtype="float64")
    server_optimizer = SGD(server.parameters(), lr=0.1)
    shard = len(y_all) // 3
    workers = [dict(model=build_model("mlp", hidden=(32,), batchnorm=False, seed=0, dtype="float64"),
                    start=shard * w, steps=0, fetched=0, accumulated=None) for w in range(3)]
    speeds = np.array([3.0, 2.0, 1.0])
    rng = np.random.default_rng(seed)
    version, staleness = 0, []
    for _ in range(events):
        w = workers[rng.choice(3, p=speeds / speeds.sum())]
        if w["steps"] % n_fetch == 0:
            w["model"].load_state_dict(server.state_dict())
            w["fetched"] = version
        begin = w["start"] + (w["steps"] * batch) % (shard - batch)
        _, grads = gradients(w["model"], x_all[begin:begin + batch], y_all[begin:begin + batch])
        w["accumulated"] = grads if w["accumulated"] is None else [a + g for a, g in zip(w["accumulated"], grads)]
        w["steps"] += 1
        if w["steps"] % n_push == 0:
            for p, g in zip(server.parameters(), w["accumulated"]):
                p.grad = g / n_push
            server_optimizer.step()
            staleness.append(version - w["fetched"])
            version += 1
            w["accumulated"] = None
    server.eval()
    x_test = ((digits.x_test / 255.0 - digits.mean[0]) / digits.std[0]).astype(np.float64)
    accuracy = (server.forward(x_test).argmax(axis=1) == digits.y_test).mean()
    return np.array(staleness), accuracy


runs = {n_fetch: downpour(n_fetch) for n_fetch in (2, 4, 10)}
for n_fetch, (staleness, accuracy) in runs.items():
    print(f"n_fetch {n_fetch:2d}: mean staleness {staleness.mean():.2f}, test accuracy {accuracy:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
top = max(s.max() for s, _ in runs.values())
bins = np.arange(top + 2) - 0.5
for n_fetch, (staleness, _) in runs.items():
    ax.hist(staleness, bins=bins, histtype="step", lw=2, label=f"n_fetch = {n_fetch}")
ax.set(xlabel="staleness of a push (server updates since the worker's fetch)", ylabel="pushes",
       title="Downpour SGD: staleness grows with n_fetch")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Next
#
# The exercises of [lesson 10](../lessons/10-parallel-and-distributed.md) estimate the bytes each scheme
# sends and time a 4-module pipeline with a slow module, with and without a replay buffer.
