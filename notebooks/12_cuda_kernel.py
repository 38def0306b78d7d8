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
# # 12. Writing a CUDA kernel: the LLS loss in one launch
#
# [![Open in Colab](colab-badge.svg)](https://colab.research.google.com/github/tinydgl/tinydgl/blob/v0.1.0/notebooks/12_cuda_kernel.ipynb)
#
# A step-through companion to [lesson 12](../lessons/12-cuda-kernel.md): threads, blocks, shared memory and a
# reduction in numba-cuda, then the kernel tinydgl uses for the LLS family's local loss, checked against the
# layers of chapter 9.
#
# **No GPU needed.** Without one, numba's CUDA simulator runs every GPU thread as a Python thread, so the grids
# here are tiny. On Colab, pick a GPU runtime (Runtime → Change runtime type) to run the same cells on the
# device; the library's kernel has **not yet been run on a real GPU**, so that run is also its first test.
#
# **Fast mode.** `TINYDGL_FAST=1` (the test suite runs every notebook that way) changes nothing here: the
# simulator's grids are already small.

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
# With an NVIDIA GPU, numba-cuda and its CUDA 12 compiler libraries (tinydgl's `gpu` extra) run the kernels on it;
# without one, the simulator runs them: NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported.
import os
import shutil

if shutil.which("nvidia-smi") is None:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
elif importlib.util.find_spec("numba_cuda") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "numba-cuda[cu12]>=0.30"], check=True)

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
from numba import cuda, float64

from tinydgl.kernels import composed_local_loss, fusable, fused_local_loss, projection_matrix
from tinydgl.trainers.lls import lls_head

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
print("numba's CUDA simulator" if SIMULATOR else "a real GPU")

# %% [markdown]
# ## Threads and blocks
#
# Every thread runs the kernel; `blockIdx`, `blockDim` and `threadIdx` tell it which element is its own. Here
# each thread also records *which* thread it was, to draw how the grid covers the array.

# %%
@cuda.jit
def scale_kernel(x, factor, out, owner):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x   # cuda.grid(1)
    if i < x.shape[0]:                                        # the last block sticks out past the end
        out[i] = factor * x[i]
        owner[i, 0] = cuda.blockIdx.x
        owner[i, 1] = cuda.threadIdx.x


x = np.arange(10, dtype=np.float32)
out, owner = np.zeros_like(x), np.zeros((10, 2), dtype=np.int64)
scale_kernel[3, 4](x, 2.0, out, owner)
print(out)

fig, ax = plt.subplots(figsize=(7, 1.6))
ax.imshow(owner[:, 0][None, :], cmap="Pastel1", aspect="auto")
for i, (block, thread) in enumerate(owner):
    ax.text(i, 0, f"b{block}\nt{thread}", ha="center", va="center", fontsize=8)
ax.set_yticks([])
ax.set_xticks(range(10))
ax.set_xlabel("element i: the block (b) and thread (t) that computed it")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A reduction in shared memory
#
# The threads of one block share a small buffer and wait for each other at `cuda.syncthreads()`. A tree adds
# the second half of the buffer into the first, round after round, until one number is left.

# %%
THREADS = 8


@cuda.jit
def block_sums(x, sums):
    buffer = cuda.shared.array(THREADS, dtype=float64)
    t = cuda.threadIdx.x
    i = cuda.blockIdx.x * THREADS + t
    buffer[t] = x[i] if i < x.shape[0] else 0.0
    cuda.syncthreads()
    s = THREADS // 2
    while s > 0:
        if t < s:
            buffer[t] += buffer[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        sums[cuda.blockIdx.x] = buffer[0]


x = np.arange(20, dtype=np.float64)
sums = np.zeros(3)
block_sums[3, THREADS](x, sums)
print(sums, [x[:8].sum(), x[8:16].sum(), x[16:].sum()])

# %% [markdown]
# ## The library's kernel: the whole local loss, one block per example
#
# `fused_local_loss` launches `tinydgl/kernels/local_loss_cuda.py`'s kernel once: pool, normalise, project,
# scale, softmax cross-entropy, and the gradient back to the block output. `composed_local_loss` runs the head's
# layers, as chapter 9 did. An LLS-MxM head on 3 examples of a 4-channel 7 x 5 block, pooled to 2 x 2:

# %%
rng = np.random.default_rng(0)
out = rng.standard_normal((3, 4, 7, 5))
y = np.array([0, 9, 3])
head = lls_head((4, 7, 5), 2, 10, modulation="mxm", dtype="float64")
head.layers[4].weight.data *= 50          # the mixer M, away from its tiny initial values
reference = copy.deepcopy(head)
print(fusable(head)["pool"], fusable(head)["normalize"], fusable(head)["scale"])

loss, dout = fused_local_loss(head, out, y, threads=16)
loss_ref, dout_ref = composed_local_loss(reference, out, y)
print("loss", loss, loss_ref)
print("largest gradient differences:", np.abs(dout - dout_ref).max(),
      np.abs(head.layers[4].weight.grad - reference.layers[4].weight.grad).max())

fig, axes = plt.subplots(1, 3, figsize=(9, 2.6))
for ax, image, title in zip(axes, [dout[0, 0], dout_ref[0, 0], dout[0, 0] - dout_ref[0, 0]],
                            ["fused kernel", "composed layers", "difference"]):
    shown = ax.imshow(image, cmap="coolwarm")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(shown, ax=ax, shrink=0.8)
fig.suptitle("d loss / d block output, example 0, channel 0 (7 x 5; the pooling windows overlap on row 3 and column 2)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The projection is a parameter
#
# LLS, LLS-M and LLS-MxM differ only in the (d, K) matrix W the kernel receives: `B.T`, `B.T * m`, `B.T @ M`.

# %%
for modulation in (None, "m", "mxm"):
    h = lls_head((4, 7, 5), 2, 10, modulation=modulation, dtype="float64")
    w = projection_matrix(h, fusable(h), 16, np, np.float64)
    print(modulation, [type(layer).__name__ for layer in fusable(h)["chain"]], "W:", w.shape)

# %% [markdown]
# ## Fused against composed, on a GPU
#
# Only with a real GPU and CuPy: one SmallConv-sized first block (batch 128, 32 x 32 x 32, pooled to 4 x 4),
# the composed layers against the fused kernel, per call. In the simulator this cell only says so.
# `TINYDGL_FUSED_KERNELS=0` makes the trainers use the composed layers, for the same comparison on whole steps.

# %%
if SIMULATOR:
    print("no GPU: the timing needs a real device (the simulator runs Python, not the GPU)")
else:
    import cupy

    gpu_out = cupy.asarray(np.random.default_rng(1).standard_normal((128, 32, 32, 32)), dtype=cupy.float32)
    gpu_y = cupy.asarray(np.random.default_rng(2).integers(0, 10, 128))
    gpu_head = lls_head((32, 32, 32), 4, 10, dtype="float32")
    gpu_head.layers[3].buffers["matrix"] = cupy.asarray(gpu_head.layers[3].buffers["matrix"])
    for name, run in [("composed", composed_local_loss), ("fused", fused_local_loss)]:
        run(gpu_head, gpu_out, gpu_y)                     # compile / warm up
        cupy.cuda.get_current_stream().synchronize()
        start = time.perf_counter()
        for _ in range(50):
            run(gpu_head, gpu_out, gpu_y)
        cupy.cuda.get_current_stream().synchronize()
        print(f"{name}: {(time.perf_counter() - start) / 50 * 1e3:.3f} ms per call")
