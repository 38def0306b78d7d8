"""Draw the lessons' figures: small, deterministic PNGs next to this script.

    pip install -e ".[plot]"
    OPENBLAS_NUM_THREADS=1 python lessons/figures/make_figures.py

Every number a figure shows is either drawn by hand (the diagrams) or computed with tinydgl itself (the
gradient-check curve, the LLS bases, the replay-buffer timeline, the alignment curves), so a figure cannot
drift from the code without the script noticing. Figures are committed; rerun this script after changing
one. To redraw only some, name their functions:

    OPENBLAS_NUM_THREADS=1 python lessons/figures/make_figures.py feedback_alignment
"""
import os
import sys
from math import lgamma
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib

matplotlib.use("Agg")  # no display needed; Agg output is the same on every machine with this matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle

from tinydgl import functional as F
from tinydgl.data import DataLoader, load_dataset
from tinydgl.gradcheck import numerical_gradient, rel_error
from tinydgl.models import build_model
from tinydgl.optim import build_optimizer
from tinydgl.train import fit
from tinydgl.train.alignment import AlignmentProbe
from tinydgl.trainers import build_trainer
from tinydgl.trainers.async_dgl import AsyncDGLTrainer
from tinydgl.trainers.buffers import ReplayBuffer
from tinydgl.trainers.lls import lls_basis

HERE = Path(__file__).resolve().parent
DPI = 100
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": DPI, "savefig.dpi": DPI})

BLUE, ORANGE, GREEN, RED, GREY, PURPLE = "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8c8c8c", "#8172b3"


def save(fig, name):
    # No "Software" metadata: the PNG bytes then depend only on what is drawn.
    fig.savefig(HERE / name, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    print(f"{name}: {(HERE / name).stat().st_size / 1024:.0f} KB")


def box(ax, x, y, w, h, text, color, fontsize=9, alpha=0.25, textcolor="black"):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor=color, alpha=alpha, lw=1.5))
    ax.add_patch(Rectangle((x, y), w, h, facecolor="none", edgecolor=color, lw=1.5))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=textcolor)


def arrow(ax, start, end, color="black", style="-|>", lw=1.3, ls="-", rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=color, lw=lw,
                                 linestyle=ls, connectionstyle=f"arc3,rad={rad}"))


def blank(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")


# --- lesson 2: the step size of a numerical gradient -----------------------------------------------
def gradcheck_step():
    """rel_error of softmax_cross_entropy's dlogits against central differences, for a range of steps h."""
    rng = np.random.default_rng(0)
    logits, y = rng.standard_normal((4, 5)), np.array([0, 3, 1, 4])
    steps = np.logspace(-10, -1, 19)
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for dtype, color in ((np.float64, BLUE), (np.float32, ORANGE)):
        z = logits.astype(dtype)
        _, dlogits = F.softmax_cross_entropy(z, y)
        errors = [rel_error(dlogits, numerical_gradient(lambda z_: F.softmax_cross_entropy(z_, y)[0], z.copy(), None, h))
                  for h in steps]
        ax.loglog(steps, np.maximum(errors, 1e-17), "o-", ms=3, color=color, label=np.dtype(dtype).name)
    ax.axvline(1e-6, color=GREY, ls=":", lw=1)
    ax.text(1.3e-6, 3e-13, "tinydgl's default h", color=GREY, fontsize=8)
    ax.set_xlabel("finite-difference step h")
    ax.set_ylabel("rel_error(analytic, numeric)")
    ax.set_title("Gradient check of softmax cross-entropy: rounding (left)\nvs truncation error (right)")
    ax.legend(frameon=False)
    save(fig, "gradcheck_step.png")


# --- lesson 3: im2col ------------------------------------------------------------------------------
def im2col():
    """A 4x4 one-channel image, its four 3x3 patches as the rows of `cols`, and cols @ w_col = out."""
    fig, ax = plt.subplots(figsize=(9.5, 3.3))
    blank(ax, (-0.3, 22.6), (-1.6, 6.0))
    image = np.arange(1, 17).reshape(4, 4)
    colors = [BLUE, ORANGE, GREEN, PURPLE]
    corners = [(0, 0), (0, 1), (1, 0), (1, 1)]
    ax.text(2, 4.6, "x: 4x4, 1 channel", ha="center", fontsize=8)
    for r in range(4):
        for c in range(4):
            ax.add_patch(Rectangle((c, 3 - r), 1, 1, facecolor="white", edgecolor="black", lw=0.8))
            ax.text(c + 0.5, 3.5 - r, str(image[r, c]), ha="center", va="center", fontsize=8)
    for k, (r0, c0) in enumerate(corners):
        inset = 0.06 * (k + 1)
        ax.add_patch(Rectangle((c0 + inset, 1 - r0 + inset), 3 - 2 * inset, 3 - 2 * inset, facecolor="none",
                               edgecolor=colors[k], lw=1.8))
    ax.text(2, -0.9, "a 3x3 patch under each\noutput pixel (stride 1)", ha="center", fontsize=8)
    arrow(ax, (4.3, 2), (5.5, 2))
    ax.text(4.9, 2.3, "im2col", ha="center", fontsize=8)
    x0 = 5.8
    ax.text(x0 + 4.05, 4.6, "cols: (M, K), M = N*oh*ow, K = kh*kw*C", ha="center", fontsize=8)
    for k, (r0, c0) in enumerate(corners):
        for j, v in enumerate(image[r0:r0 + 3, c0:c0 + 3].ravel()):
            ax.add_patch(Rectangle((x0 + j * 0.9, 3.1 - k * 0.9), 0.9, 0.9, facecolor=colors[k], alpha=0.25,
                                   edgecolor=colors[k], lw=0.8))
            ax.text(x0 + j * 0.9 + 0.45, 3.55 - k * 0.9, str(v), ha="center", va="center", fontsize=8)
    ax.text(x0 + 4.05, -0.9, "a strided view of x,\ncopied once into rows", ha="center", fontsize=8)
    ax.text(14.55, 2.0, "@", ha="center", va="center", fontsize=14)
    x1 = 15.1
    ax.text(x1 + 0.45, 4.6, "w_col (K, F)", ha="center", fontsize=8)
    for j in range(9):
        ax.add_patch(Rectangle((x1, 3.85 - j * 0.45), 0.9, 0.45, facecolor=RED, alpha=0.2, edgecolor=RED, lw=0.8))
        ax.text(x1 + 0.45, 4.07 - j * 0.45, f"w{j // 3}{j % 3}", ha="center", va="center", fontsize=7)
    ax.text(16.55, 2.0, "=", ha="center", va="center", fontsize=14)
    x2 = 17.1
    ax.text(x2 + 0.45, 4.6, "(M, F)", ha="center", fontsize=8)
    for k in range(4):
        ax.add_patch(Rectangle((x2, 3.1 - k * 0.9), 0.9, 0.9, facecolor=colors[k], alpha=0.5, edgecolor=colors[k]))
    ax.text(x2 + 0.45, -0.9, "one BLAS\ncall", ha="center", fontsize=8)
    arrow(ax, (18.3, 2.0), (19.4, 2.0))
    ax.text(18.85, 2.3, "view", ha="center", fontsize=8)
    for k, (r, c) in enumerate(corners):
        ax.add_patch(Rectangle((19.8 + c, 2.0 - r), 1, 1, facecolor=colors[k], alpha=0.5, edgecolor=colors[k]))
    ax.text(20.8, 3.4, "out: 2x2", ha="center", fontsize=8)
    ax.text(20.8, -0.9, "(N, F, oh, ow),\nno copy", ha="center", fontsize=8)
    save(fig, "im2col.png")


# --- lesson 5: the three locks ---------------------------------------------------------------------
def three_locks():
    """Gantt chart of one backprop step on 3 blocks, and the same blocks trained with local losses."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.1), sharey=True)
    names = ["block 1", "block 2", "block 3 + loss"]

    def bar(ax, row, start, length, color, text):
        ax.add_patch(Rectangle((start, row - 0.35), length, 0.7, facecolor=color, alpha=0.75, edgecolor="white"))
        ax.text(start + length / 2, row, text, ha="center", va="center", fontsize=8, color="white")

    ax = axes[0]
    for i in range(3):
        bar(ax, i, i, 1, BLUE, "fwd")
        bar(ax, i, 5 - i, 1, ORANGE, "bwd")
        bar(ax, i, 6, 0.6, GREEN, "upd")
    for i in range(3):
        ax.plot([i + 1, 5 - i], [i, i], color=GREY, ls=":", lw=1)
    ax.annotate("forward lock: block 2\nwaits for block 1", xy=(1, 1), xytext=(-0.1, 3.05), fontsize=7.5, color=BLUE,
                arrowprops=dict(arrowstyle="->", color=BLUE))
    ax.annotate("update lock: no block updates\nbefore the forward pass ends", xy=(3, 2), xytext=(3.2, 3.05),
                fontsize=7.5, color=RED, arrowprops=dict(arrowstyle="->", color=RED))
    ax.annotate("backward lock: block 1 waits\nfor blocks 3 and 2 to run bwd", xy=(5, 0), xytext=(4.6, -0.9),
                fontsize=7.5, color=ORANGE, ha="center", arrowprops=dict(arrowstyle="->", color=ORANGE))
    ax.text(1.1, -0.5, "idle, holding activations", color=GREY, fontsize=7.5)
    ax.set_title("backprop: every block waits for the whole network")
    ax = axes[1]
    for i in range(3):
        bar(ax, i, i, 1, BLUE, "fwd")
        bar(ax, i, i + 1, 0.7, ORANGE, "local")
        bar(ax, i, i + 1.7, 0.6, GREEN, "upd")
    ax.text(3.3, 0.0, "block 1 is done, its\nactivations are freed", fontsize=7.5, va="center", color=GREY)
    ax.set_title("local losses (DGL, LLS): update as soon as the input arrives")
    for ax in axes:
        ax.set_xlim(-0.2, 7)
        ax.set_ylim(3.6, -1.4)
        ax.set_yticks(range(3))
        ax.set_yticklabels(names)
        ax.set_xticks([])
        ax.set_xlabel("time")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    save(fig, "three_locks.png")


# --- lessons 6-9: where each block's gradient comes from -------------------------------------------
def gradient_sources():
    """Four small diagrams: a stack of three blocks and where each block's output gradient comes from."""
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.4))
    titles = ["backprop (bp)", "synthetic gradients (dni)", "local heads (dgl, greedy)", "fixed basis (lls)"]
    sources = [None, ("M", PURPLE, "synthesizer\nM_i(h_i)"), ("g", GREEN, "aux head\nCE(g_j(h_j), y)"),
               ("B", RED, "fixed basis\nCE(z B^T / T, y)")]
    for ax, title, source in zip(axes, titles, sources):
        blank(ax, (0, 6), (-0.3, 8.3))
        ax.set_title(title)
        for i in range(3):
            y = 1 + 2.3 * i
            box(ax, 0.4, y, 2.2, 1.2, f"block {i + 1}", BLUE)
            if i < 2:
                arrow(ax, (1.5, y + 1.2), (1.5, y + 2.3))  # forward
        ax.text(1.5, 0.2, "x", ha="center")
        arrow(ax, (1.5, 0.45), (1.5, 1.0))
        box(ax, 3.4, 7.5 - 0.25, 2.2, 0.8, "loss(y)", ORANGE, fontsize=8)
        arrow(ax, (2.6, 6.9), (3.4, 7.75), color="black")
        arrow(ax, (3.6, 7.25), (2.6, 6.3), color=ORANGE, lw=1.5)  # the top block always learns from the loss
        if source is None:
            for i in range(2):
                y = 1 + 2.3 * i
                arrow(ax, (2.3, y + 2.3), (2.3, y + 1.2), color=ORANGE, rad=-0.5)
            ax.text(3.0, 3.0, "dL/dh from\nthe block above", color=ORANGE, fontsize=8)
        else:
            letter, color, text = source
            for i in range(2):
                y = 1 + 2.3 * i
                box(ax, 3.5, y + 0.1, 1.0, 1.0, f"{letter}{i + 1}", color, fontsize=8)
                arrow(ax, (2.6, y + 0.85), (3.5, y + 0.85), color="black", lw=1)
                arrow(ax, (3.5, y + 0.35), (2.6, y + 0.35), color=color, lw=1.5)
            ax.text(4.0, -0.2, text, ha="center", fontsize=8, color=color)
            if letter == "M":
                for i in range(2):
                    arrow(ax, (1.0, 1 + 2.3 * (i + 1)), (3.6, 1 + 2.3 * i + 1.1), color=PURPLE, ls="--", lw=0.8, rad=0.25)
                ax.text(5.8, 4.6, "targets\n(bootstrap)", color=PURPLE, fontsize=7, ha="right")
            else:
                ax.text(2.9, 2.7, "x", color=RED, fontsize=12, ha="center")
                ax.text(2.9, 5.0, "x", color=RED, fontsize=12, ha="center")
    fig.text(0.5, 0.0, "black: forward   coloured: the gradient each block learns from   "
             "red x: no gradient crosses a module boundary", ha="center", fontsize=8)
    save(fig, "gradient_sources.png")


# --- lesson 8: replay buffers ----------------------------------------------------------------------
def replay_buffer():
    """Top: a buffer between two modules and its policy. Bottom: a schedule run through real ReplayBuffers."""
    fig = plt.figure(figsize=(9.5, 4.6))
    ax = fig.add_axes([0.0, 0.5, 1.0, 0.5])
    blank(ax, (0, 19), (0, 4.2))
    box(ax, 0.3, 1.2, 2.6, 1.4, "module j\n(producer)", BLUE)
    box(ax, 15.6, 1.2, 2.9, 1.4, "module j+1\n(consumer)", GREEN)
    uses = [2, 1, 0, 0]
    for k, u in enumerate(uses):
        x = 5.0 + 2.2 * k
        fresh = k == len(uses) - 1
        box(ax, x, 1.1, 1.9, 1.6, f"batch {k + 1}\nuses {u}", ORANGE, fontsize=8, alpha=0.5 if fresh else 0.2)
    ax.text(9.2, 3.2, "replay buffer B_j (capacity M = 4, oldest on the left)", ha="center")
    arrow(ax, (2.9, 1.9), (4.9, 1.9), color=BLUE)
    ax.text(3.9, 0.4, "push(x_j, y):\nfull? drop the oldest", ha="center", fontsize=8, color=BLUE)
    arrow(ax, (13.6, 1.9), (15.5, 1.9), color=GREEN)
    ax.text(14.6, 0.4, "take(): fewest uses,\nthen the freshest (batch 4)", ha="center", fontsize=8, color=GREEN)

    # Bottom: replay a random schedule over 3 modules (module 2 slowed 2x) through tinydgl's ReplayBuffer,
    # with reuse_cap=2 so that empty polls happen; the number under a dot is how often that batch has been
    # served.
    ax = fig.add_axes([0.07, 0.08, 0.9, 0.36])
    probabilities = AsyncDGLTrainer._probabilities(3, slow_module=1, slowdown=2.0)
    rng = np.random.default_rng(5)
    buffers = [ReplayBuffer(4, reuse_cap=2), ReplayBuffer(4, reuse_cap=2)]
    steps = [0, 0, 0]
    picks = [0, 0, 1, 1, 2, 2] + [int(rng.choice(3, p=probabilities)) for _ in range(34)]  # warm-up first
    for t, j in enumerate(picks):
        served = buffers[j - 1].take() if j > 0 else True
        color = [BLUE, ORANGE, GREEN][j]
        if served is None:
            ax.scatter([t], [j], marker="x", color=color, s=40)
            continue
        steps[j] += 1
        if j < 2:
            buffers[j].push(np.zeros((1, 1)), np.zeros(1), produced_at=steps[j])
        ax.scatter([t], [j], marker="o", color=color, s=30)
        if j > 0:
            ax.text(t, j + 0.38, str(served[2].uses), ha="center", fontsize=7, color=color)
    ax.set_yticks([0, 1, 2])
    ax.set_yticklabels(["module 1 (data)", "module 2 (slowed 2x)", "module 3"])
    ax.set_ylim(2.6, -0.6)
    ax.set_xlabel("event (warm-up 1,1,2,2,3,3, then j ~ p)    o: a local update (number: times that batch was served)\n"
                  "x: a skip (nothing servable, reuse_cap=2)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    save(fig, "replay_buffer.png")


# --- lesson 9: LLS bases ---------------------------------------------------------------------------
def lls_bases():
    """The four waveforms for 10 classes and d = 64, and how alike their (normalised) rows are."""
    fig, axes = plt.subplots(2, 4, figsize=(10, 4.2), gridspec_kw={"height_ratios": [1, 1.25]})
    for col, waveform in enumerate(("sin", "square", "cosine", "random")):
        basis = lls_basis(10, 64, waveform, rng=np.random.default_rng(0))
        ax = axes[0, col]
        ax.imshow(basis, aspect="auto", cmap="coolwarm", interpolation="nearest")
        ax.set_title(f"waveform={waveform!r}")
        ax.set_xlabel("t (feature)")
        ax.set_ylabel("class k")
        ax.set_yticks([0, 9])
        unit = basis / np.linalg.norm(basis, axis=1, keepdims=True)
        ax = axes[1, col]
        ax.imshow(np.abs(unit @ unit.T), vmin=0, vmax=1, cmap="Greys", interpolation="nearest")
        ax.set_xticks([0, 9])
        ax.set_yticks([0, 9])
        ax.set_xlabel("class")
        ax.set_ylabel("class")
        off = np.abs(unit @ unit.T)[~np.eye(10, dtype=bool)]
        ax.set_title(f"|cos| between rows, max off-diag {off.max():.2f}", fontsize=8)
    fig.tight_layout()
    save(fig, "lls_basis.png")


# --- lesson 10: parallel training ------------------------------------------------------------------
def parallel():
    """Timelines of three ways to use several workers."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.9))

    def bar(ax, row, start, length, color, text="", alpha=0.8):
        ax.add_patch(Rectangle((start, row - 0.35), length, 0.7, facecolor=color, alpha=alpha, edgecolor="white"))
        if text:
            ax.text(start + length / 2, row, text, ha="center", va="center", fontsize=7, color="white")

    ax = axes[0]
    colors = [BLUE, ORANGE, GREEN, PURPLE, RED]
    for worker in range(3):
        for batch in range(5):
            bar(ax, worker, worker + batch, 1, colors[batch], f"b{batch + 1}")
    ax.set_title("module-parallel DGL: worker j runs\nmodule j (a pipeline; only activations travel)")
    ax.set_yticks(range(3))
    ax.set_yticklabels(["module 1", "module 2", "module 3"])
    ax.set_xlim(0, 8)

    ax = axes[1]
    for worker in range(3):
        for step in range(3):
            length = 1.0 + 0.45 * ((worker * 7 + step * 3) % 3)  # uneven speeds
            bar(ax, worker, step * 2.3, length, BLUE, "grad")
    for step in range(3):
        ax.axvline(step * 2.3 + 1.95, color=RED, lw=2)
    ax.text(2.0, 3.0, "red: all-reduce, everyone waits for the slowest", color=RED, fontsize=7, ha="center")
    ax.set_title("synchronous data-parallel SGD\n(every worker: full model, own shard)")
    ax.set_yticks(range(3))
    ax.set_yticklabels(["worker 1", "worker 2", "worker 3"])
    ax.set_xlim(0, 7)

    ax = axes[2]
    speeds = [0.8, 1.1, 1.6]
    for worker, speed in enumerate(speeds):
        t, k = 0.0, 0
        while t + speed * 0.9 < 7:
            bar(ax, worker, t, speed * 0.9, BLUE, "")
            if k % 3 == 0:  # n_fetch = 3: fetch fresh parameters before every 3rd step
                ax.scatter([t + 0.1], [worker - 0.5], marker="v", color=GREEN, s=18, zorder=3)
            if k % 2 == 1:  # n_push = 2: send the accumulated gradients after every 2nd step
                ax.scatter([t + speed * 0.9 - 0.1], [worker - 0.5], marker="^", color=ORANGE, s=18, zorder=3)
            t += speed
            k += 1
    ax.axhline(-1.0, color=GREY, lw=3)
    ax.text(0.1, -1.25, "parameter server: applies each push on arrival", color=GREY, fontsize=7)
    ax.text(3.5, 2.9, "v fetch (every 3 steps)   ^ push (every 2 steps)", fontsize=7, ha="center")
    ax.set_title("Downpour SGD: nobody waits;\nworkers compute from stale parameters")
    ax.set_yticks(range(3))
    ax.set_yticklabels(["worker 1", "worker 2", "worker 3"])
    ax.set_xlim(0, 7)
    for ax in axes:
        ax.set_ylim(3.4, -1.5)
        ax.set_xticks([])
        ax.set_xlabel("time")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    save(fig, "parallel.png")


# --- lesson 11: feedback alignment -----------------------------------------------------------------
def _output_alignment(trainer):
    """cos(the output layer's forward weights, the fixed feedback that stands in for them), as in lesson 11:
    FA's B of the output layer against W; DFA's / DRTP's B of the last hidden block against W^T."""
    w = trainer.model.layers[-1].layers[-1].weight.data
    if trainer.name == "fa":
        w, b = w, trainer.model.layers[-1].layers[-1].feedback
    elif trainer.name == "drtp":
        w, b = w.T, trainer.modules[-2].feedback
    else:
        w, b = w.T, trainer.feedback[-1]
    w, b = np.ravel(w).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(w @ b / (np.linalg.norm(w) * np.linalg.norm(b)))


class _WeightsToo(AlignmentProbe):
    """The alignment probe, which also records `_output_alignment` at every step it measures."""

    def __init__(self, every):
        super().__init__(every)
        self.weights = []

    def train_step(self, trainer, x, y):
        if self.steps % self.every == 0:
            self.weights.append(_output_alignment(trainer))
        return super().train_step(trainer, x, y)


def feedback_alignment():
    """The alignment probe on FA, DFA, sDFA, DRTP (mlp) and FA, DFA (cnn): 1 epoch of mnist-small, Adam 1e-3,
    batch 64, seed 0, every 5th step; and how the output layer's weights turn towards the fixed feedback."""
    digits = load_dataset("mnist-small")
    test = DataLoader(digits.x_test, digits.y_test, 500, shuffle=False, mean=digits.mean, std=digits.std)

    def run(name, model):
        train = DataLoader(digits.x_train, digits.y_train, 64, seed=0, mean=digits.mean, std=digits.std)
        trainer = build_trainer(name, build_model(model, 1, 28, 10, seed=0), lambda p: build_optimizer("adam", p, lr=1e-3))
        probe = _WeightsToo(every=5) if name != "shallow" else None  # the floor: no feedback to probe
        history = fit(trainer, train, test, 1, progress=False, log=lambda *_: None, alignment=probe)
        return probe, history[0]["test_accuracy"]

    mlp = {name: run(name, "mlp") for name in ("fa", "dfa", "sdfa", "drtp")}
    cnn = {name: run(name, "cnn") for name in ("fa", "dfa")}
    floor = {model: run("shallow", model)[1] for model in ("mlp", "cnn")}
    fig, axes = plt.subplots(2, 4, figsize=(9.6, 4.7), sharex=True)
    panels = [(axes[0, k], "mlp", name, mlp[name]) for k, name in enumerate(mlp)]
    panels += [(axes[1, k], "cnn", name, cnn[name]) for k, name in enumerate(cnn)]
    for ax, model, name, (probe, accuracy) in panels:
        summary = probe.summary()
        for b, color in ((0, BLUE), (1, ORANGE)):
            ax.plot(summary["steps"], summary["blocks"][b], ".-", ms=4, lw=1.2, color=color, label=f"block {b + 1}")
        ax.axhline(0, color=GREY, lw=0.8)
        ax.set_ylim(-0.5, 0.8)
        ax.set_title(f"{name} on {model}: test acc {accuracy:.3f}\n(shallow floor {floor[model]:.3f})", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("cos(handed, backprop's)")
    for ax in (*axes[0, 1:], axes[1, 1]):
        ax.tick_params(labelleft=False)
    axes[0, 0].legend(frameon=False, fontsize=8, loc="upper left")
    ax = axes[1, 2]
    for (name, (probe, _)), color in zip(mlp.items(), (BLUE, ORANGE, GREEN, RED)):
        ax.plot([1 + probe.every * k for k in range(len(probe.weights))], probe.weights, ".-", ms=4, lw=1.2,
                color=color, label=name)
    ax.axhline(0, color=GREY, lw=0.8)
    ax.set_ylim(-0.5, 0.8)
    ax.set_title("mlp: output weights vs the feedback\nthat stands in for them", fontsize=9)
    ax.set_ylabel("cos(W or W^T, B)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", ncol=2)
    axes[1, 3].axis("off")
    axes[1, 3].text(0.0, 0.5, "1 epoch of mnist-small (4,000 digits),\nbatch 64, Adam 1e-3, seed 0; the probe\n"
                    "every 5th step. The classifier (not\ndrawn) learns from the true gradient\nin every method: "
                    "it reads 1.\n\nOn the mlp the hidden blocks turn\ntowards backprop; on the cnn its two\n"
                    "conv blocks do not.", fontsize=8.5, va="center")
    for ax in axes[1, :3]:
        ax.set_xlabel("training step")
    for ax in axes.flat:
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    save(fig, "feedback_alignment.png")


def dni_timeline():
    """cDNI on two real worker processes (lesson 6): when each worker computes, and when worker 0's top
    synthesizer learns from a target that came back from worker 1. Measured, so it differs a little from
    run to run (the shape does not: compute on both rows, a black mark a batch or two after each step)."""
    from tinydgl.runtime.engine import run_module_parallel

    digits = load_dataset("mnist-small", limit_train=1024, limit_test=10, progress=False)
    train = DataLoader(digits.x_train, digits.y_train, 64, seed=0, mean=digits.mean, std=digits.std)
    trainer = build_trainer("cdni", build_model("mlp", seed=0), lambda p: build_optimizer("adam", p, lr=1e-3),
                            synthesizer="linear")
    run = run_module_parallel(trainer, train, 1, workers=2, balance=False)
    workers = run["workers"]
    t0 = min(a for w in workers for a, _ in w["timeline"])
    fig, ax = plt.subplots(figsize=(7.5, 2.0))
    for row, w in enumerate(workers):
        ax.broken_barh([(1e3 * (a - t0), 1e3 * (b - a)) for a, b in w["timeline"]], (row - 0.35, 0.7),
                       color=f"C{row}")
        fed = [(1e3 * (a - t0), max(1e3 * (b - a), 0.15)) for a, b in w.get("feedback_timeline", [])]
        if fed:
            ax.broken_barh(fed, (row - 0.35, 0.25), color="black")
    lower = workers[0]
    late = ", ".join(f"{k} late: {v}" for k, v in lower["target_lateness_counts"].items())
    ax.set_yticks([0, 1])
    ax.set_yticklabels([f"worker 0\ngroups {workers[0]['modules'][0]}-{workers[0]['modules'][-1]}",
                        f"worker 1\ngroups {workers[1]['modules'][0]}-{workers[1]['modules'][-1]}"])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (bars: a step; black: worker 0's synthesizer learns from a target from worker 1)")
    ax.set_title(f"cDNI, mlp, 2 workers, 16 batches; targets per lateness in batches: {late}")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    save(fig, "dni_timeline.png")


def forward_gradient_cosines(model, x, y, perturbed, directions, repeats, rng):
    """Cosines between forward-gradient estimates and the true gradient of the parameters they perturb: for each
    `repeats`, `perturbed` scalar parameters drawn at random move along N(0, 1) (the others stay), `directions`
    directional derivatives (Module.jvp, no backward) are averaged into the estimate (lesson 13)."""
    params = model.parameters()
    sizes = [p.data.size for p in params]
    loss, dlogits = F.softmax_cross_entropy(model.forward(x), y)
    model.backward(dlogits)
    true = np.concatenate([p.grad.ravel() for p in params])
    logits = model.forward(x)  # a second forward (the same batch) keeps the cache the JVPs read
    cosines = []
    for _ in range(repeats):
        chosen = rng.choice(true.size, size=perturbed, replace=False)
        estimate = np.zeros_like(true)
        for _ in range(directions):
            v = np.zeros_like(true)
            v[chosen] = rng.standard_normal(perturbed)
            for p, part in zip(params, np.split(v, np.cumsum(sizes)[:-1])):
                p.tangent = part.reshape(p.shape)
            _, slope = F.softmax_cross_entropy_jvp(logits, y, model.jvp(None))
            estimate += slope * v / directions
        target = np.zeros_like(true)
        target[chosen] = true[chosen]
        cosines.append(estimate @ target / (np.linalg.norm(estimate) * np.linalg.norm(target)))
    model.forget()
    for p in params:
        p.tangent = None
    return np.array(cosines)


def expected_cosine(m):
    """E|cos(g, v)| for a fixed g and v ~ N(0, I_m): what one forward-gradient direction reads on m parameters."""
    return np.exp(lgamma(m / 2) - lgamma((m + 1) / 2)) / np.sqrt(np.pi)


def forward_gradient():
    """The forward-gradient estimate's cosine with the true gradient of the parameters it perturbs: one direction,
    more and more parameters (left); all the parameters, more and more directions (right). The mlp without batch
    norm (784-256-256-10) at its initial weights, in float64, on one batch of 64 mnist-small digits."""
    digits = load_dataset("mnist-small")
    x, y = next(iter(DataLoader(digits.x_train, digits.y_train, batch_size=64, seed=0, mean=digits.mean,
                                std=digits.std, dtype="float64")))
    model = build_model("mlp", batchnorm=False, dtype="float64", seed=0)
    total = sum(p.data.size for p in model.parameters())
    rng = np.random.default_rng(0)
    sizes = [1, 10, 100, 1_000, 10_000, 100_000, total]
    by_size = [forward_gradient_cosines(model, x, y, m, 1, 30, rng) for m in sizes]
    counts = [1, 4, 16, 64, 256]
    by_count = [forward_gradient_cosines(model, x, y, total, k, max(5, 80 // k), rng) for k in counts]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    ax = axes[0]
    ax.errorbar(sizes, [c.mean() for c in by_size], yerr=[c.std() for c in by_size], fmt="o", color=BLUE,
                capsize=3, label="measured (30 draws: mean, std)")
    ax.plot(sizes, [expected_cosine(m) for m in sizes], "--", color=GREY, label="E|cos| for v ~ N(0, I_m)")
    ax.set(xscale="log", yscale="log", xlabel="parameters perturbed, m", ylabel="cos(estimate, true gradient)",
           title="one direction")
    ax = axes[1]
    ax.errorbar(counts, [c.mean() for c in by_count], yerr=[c.std() for c in by_count], fmt="o", color=ORANGE,
                capsize=3, label="measured (80 // K draws, at least 5)")
    ax.plot(counts, [np.sqrt(k / total) for k in counts], "--", color=GREY, label="sqrt(K / m)")
    ax.set(xscale="log", yscale="log", xlabel="directions averaged, K", title=f"all m = {total:,} parameters")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "forward_gradient.png")


FIGURES = (gradcheck_step, im2col, three_locks, gradient_sources, replay_buffer, lls_bases, parallel, feedback_alignment,
           dni_timeline, forward_gradient)

if __name__ == "__main__":
    chosen = {f.__name__: f for f in FIGURES}
    unknown = [name for name in sys.argv[1:] if name not in chosen]
    if unknown:
        sys.exit(f"no figure function {', '.join(unknown)}; choose from: {', '.join(chosen)}")
    for name in sys.argv[1:] or chosen:
        chosen[name]()
