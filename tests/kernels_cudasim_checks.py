"""Run the fused local-loss kernel in numba's CUDA simulator against the composed float64 NumPy reference.

Not a test module (pytest does not collect it): tests/test_kernels.py runs it in a *subprocess*, because
NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is first imported and then replaces numba.cuda for the
whole process, which would turn any later CUDA test of the same process into a simulator test.

    NUMBA_ENABLE_CUDASIM=1 python tests/kernels_cudasim_checks.py      # prints one JSON line per case

Each case builds a head the trainers build (LLS, LLS-M, LLS-MxM, reduced, random basis, local-losses; conv
outputs with overlapping adaptive windows, flat outputs, an all-zero example), runs it once composed (the
head's layers and F.softmax_cross_entropy, in float64) and once fused (the kernel), and reports the largest
relative differences of the loss, the gradient w.r.t. the block output and the head's parameter gradients.
The "steps-*" cases train a tiny mlp two steps with lls / lls-mxm, every local loss fused, and compare every
parameter (blocks and heads) with the same steps composed.
Grids are tiny (3 examples, 8 to 32 threads): the simulator runs each thread as a Python thread.
"""

import copy
import json
import os
import sys
import types

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("Run with NUMBA_ENABLE_CUDASIM=1 (it must be set before numba.cuda is imported).")

import numpy as np

from tinydgl.kernels import composed_local_loss, fused_local_loss
from tinydgl.trainers.lls import LocalLossesTrainer, lls_head

N_CLASSES = 4


def local_losses_head(shape, pool, width, dtype):
    """The head LocalLossesTrainer builds (a learned PooledLinear drawn `width` wide), without a model."""
    block = types.SimpleNamespace(local_pool=pool, local_width=width)
    trainer = types.SimpleNamespace(temperature=0.5)
    return LocalLossesTrainer.make_head(trainer, shape, block, N_CLASSES, 7, dtype)


# name: (block output shape per example, head builder(dtype), threads per block, label smoothing)
CASES = {
    "lls-conv-7x5-pool2": ((3, 7, 5), lambda dt: lls_head((3, 7, 5), 2, N_CLASSES, dtype=dt), 8, 0.0),
    "lls-m-conv-7x5-pool2": ((3, 7, 5), lambda dt: lls_head((3, 7, 5), 2, N_CLASSES, modulation="m", dtype=dt), 8, 0.1),
    "lls-mxm-conv-5x7-pool3": (
        (2, 5, 7),
        lambda dt: lls_head((2, 5, 7), 3, N_CLASSES, modulation="mxm", dtype=dt),
        16,
        0.0,
    ),
    "lls-mxm-reduced-flat-11": (
        (11,),
        lambda dt: lls_head((11,), None, N_CLASSES, modulation="mxm", basis_size=2, dtype=dt),
        8,
        0.0,
    ),
    "lls-square-pool1-threads32": (
        (3, 4, 3),
        lambda dt: lls_head((3, 4, 3), 1, N_CLASSES, waveform="square", dtype=dt),
        32,
        0.0,
    ),
    "lls-random-width13": (
        (3, 5, 5),
        lambda dt: lls_head((3, 5, 5), 2, N_CLASSES, waveform="random", local_width=13, dtype=dt),
        8,
        0.0,
    ),
    "local-losses-width9": ((2, 6, 5), lambda dt: local_losses_head((2, 6, 5), 2, 9, dt), 8, 0.0),
    "lls-zero-example": ((3, 7, 5), lambda dt: lls_head((3, 7, 5), 2, N_CLASSES, dtype=dt), 8, 0.0),
    "lls-float32": ((3, 7, 5), lambda dt: lls_head((3, 7, 5), 2, N_CLASSES, modulation="mxm", dtype=dt), 8, 0.0),
}


def relative(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def run_case(name):
    shape, build, threads, smoothing = CASES[name]
    dtype = "float32" if name.endswith("float32") else "float64"
    rng = np.random.default_rng(0)
    out = rng.standard_normal((3, *shape))
    if name == "lls-zero-example":
        out[1] = 0.0  # its norm is below eps: the normalisation's clipped branch
    y = np.array([0, N_CLASSES - 1, 1])
    fused_head = build(dtype)
    reference_head = copy.deepcopy(fused_head)
    for p in fused_head.parameters() + reference_head.parameters():  # learned parameters away from their tiny init
        p.data = p.data * 50.0
    # the reference: the composed layers, in float64
    loss_ref, dout_ref = composed_local_loss(_as64(reference_head), out, y, smoothing)
    loss, dout = fused_local_loss(fused_head, out.astype(dtype), y, smoothing, threads=threads)
    grads = [relative(p.grad, q.grad) for p, q in zip(fused_head.parameters(), reference_head.parameters())]
    return dict(
        case=name,
        dtype=dtype,
        loss=abs(loss - loss_ref) / abs(loss_ref),
        dout=relative(dout, dout_ref),
        grads=grads,
        n_params=len(grads),
        dout_dtype=str(dout.dtype),
    )


def run_trainer_steps(trainer_name):
    """Two lls-family training steps of a tiny mlp, with every local loss fused, against the same steps composed:
    the kernel wired into LocalModule.step (its gradients reach the right parameters and optimizers)."""
    import tinydgl.kernels as kernels
    from tinydgl.models import build_model
    from tinydgl.optim import SGD
    from tinydgl.trainers import build_trainer

    def fused_everywhere(head, out, y, label_smoothing=0.0):
        return fused_local_loss(head, out, y, label_smoothing, threads=8)

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 1, 5, 5)), np.array([0, 3, 1])
    models = []
    for local_loss in (kernels.local_loss, fused_everywhere):
        saved, kernels.local_loss = kernels.local_loss, local_loss
        try:
            model = build_model("mlp", image_size=5, num_classes=N_CLASSES, hidden=(9, 7), dtype="float64")
            # SGD, not Adam: Adam would blow the rounding noise of the biases before batch norm (whose true
            # gradient is 0) up into full steps
            trainer = build_trainer(trainer_name, model, lambda params: SGD(params, lr=0.1))
            for _ in range(2):
                trainer.train_step(x, y)
            models.append(
                [p.data for p in model.parameters()]
                + [p.data for m in trainer.modules if m.head is not None for p in m.head.parameters()]
            )
        finally:
            kernels.local_loss = saved
    composed, fused = models
    return dict(
        case=f"steps-{trainer_name}",
        dtype="float64",
        loss=0.0,
        dout=0.0,
        grads=[relative(f, c) for f, c in zip(fused, composed)],
        n_params=len(fused),
        dout_dtype="float64",
    )


def _as64(head):
    """The head with its parameters and buffers in float64 (the reference is computed in float64)."""
    for layer in head.layers:
        for p in layer.parameters():
            p.data = p.data.astype(np.float64)
        for key, value in getattr(layer, "buffers", {}).items():
            layer.buffers[key] = value.astype(np.float64)
    return head


TRAINERS = ("lls", "lls-mxm")

if __name__ == "__main__":
    for case in sys.argv[1:] or [*CASES, *(f"steps-{t}" for t in TRAINERS)]:
        row = run_trainer_steps(case[len("steps-") :]) if case.startswith("steps-") else run_case(case)
        print(json.dumps(row), flush=True)
