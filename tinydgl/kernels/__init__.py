"""Fused GPU kernels, and the one function that decides whether a local loss uses them.

    loss, dout = local_loss(head, out, y, label_smoothing)      # what LocalModule.local_loss calls

Returns (loss, gradient with respect to the block output) and fills the gradients of the head's learned
parameters. Composed (the reference, the fallback): the head's own layers, about 40 array calls. Fused:
one numba-cuda launch (`local_loss_cuda.launch`) plus one matmul, used when the arrays are CuPy arrays,
numba-cuda is installed and the head is `fusable` (pool? -> L2Normalize? -> bias-free linear chain ->
Scale?: LLS, LLS-M, LLS-MxM, local-losses). TINYDGL_FUSED_KERNELS=0 or `fused=False` turns it off.
**Not yet run on a GPU**: the fused path is tested in numba's CUDA simulator only.

Design notes (the two paths, the heads, how a new variant plugs in): docs/design/kernels.md.
"""

import functools
import os
import weakref

from .. import functional as F
from ..backend import array_namespace
from ..nn import AdaptiveAvgPool2d, ClassScale, FixedLinear, Flatten, L2Normalize, Linear, PooledLinear, Scale
from ..ops.losses import float64_scalar

_LINEAR_CHAIN_TYPES = (FixedLinear, ClassScale, PooledLinear, Linear)
_fixed_projections = weakref.WeakKeyDictionary()  # head -> (basis buffer, W): LLS's W never changes


@functools.lru_cache(maxsize=None)
def numba_cuda_ready():
    """True when numba-cuda is installed and sees a real GPU (not the simulator); asked once per process."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        from numba import config

        return not config.ENABLE_CUDASIM and bool(cuda.is_available())
    except Exception:  # a broken driver install: fall back to the composed ops
        return False


def fused_enabled():
    """The switch: False when TINYDGL_FUSED_KERNELS is "0" (or "false", "no", "off")."""
    return os.environ.get("TINYDGL_FUSED_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def fusable(head):
    """The head read as the kernel's arguments: dict(pool, normalize, chain, scale), or None when the head
    is not of the form pool? -> L2Normalize? -> bias-free linear chain -> Scale? (docs/design/kernels.md)."""
    layers = list(getattr(head, "layers", []))
    pool = None
    if len(layers) >= 2 and isinstance(layers[0], AdaptiveAvgPool2d) and isinstance(layers[1], Flatten):
        size = layers[0].output_size
        if isinstance(size, tuple):
            if size[0] != size[1]:
                return None
            size = size[0]
        pool, layers = int(size), layers[2:]
    normalize = bool(layers) and isinstance(layers[0], L2Normalize)
    eps = layers[0].eps if normalize else 1e-12
    layers = layers[1:] if normalize else layers
    scale = 1.0
    if layers and isinstance(layers[-1], Scale):
        scale, layers = layers[-1].factor, layers[:-1]
    if not layers or not all(type(layer) in _LINEAR_CHAIN_TYPES for layer in layers):
        return None
    if any(isinstance(layer, Linear) and layer.bias is not None for layer in layers):
        return None
    return dict(pool=pool, normalize=normalize, eps=eps, chain=layers, scale=scale)


def _apply_chain(chain, x):
    for layer in chain:
        x = layer.forward(x)
    return x


def projection_matrix(head, plan, d, xp, dtype):
    """W (d, K): the chain applied to the identity. A leading FixedLinear is read off its buffer (I @ B.T
    is B.T) instead of multiplied out, and a chain without learned parameters (LLS) is computed once."""
    chain = plan["chain"]
    learned = any(layer.parameters() for layer in chain)
    if isinstance(chain[0], FixedLinear):
        start, rest = chain[0].buffers["matrix"].T, chain[1:]
    else:
        start, rest = xp.eye(d, dtype=dtype), chain
    if not learned:
        cached = _fixed_projections.get(head)
        if cached is not None and cached[0] is chain[0].buffers.get("matrix"):
            return cached[1]
    w = _apply_chain(rest, start)
    if hasattr(xp, "ascontiguousarray"):  # NumPy and CuPy: rows of W next to each other, as the kernel reads them
        w = xp.ascontiguousarray(w)
    if not learned:
        _fixed_projections[head] = (chain[0].buffers.get("matrix"), w)
    return w


def fused_local_loss(head, out, y, label_smoothing=0.0, plan=None, threads=None):
    """The fused path: one kernel launch, then dL/dW through the chain's backward for learned parameters."""
    from . import local_loss_cuda

    plan = plan if plan is not None else fusable(head)
    if plan is None:
        raise ValueError(
            f"this head cannot run fused (expected pool? -> L2Normalize? -> bias-free linear layers -> "
            f"Scale?):\n{head!r}"
        )
    xp = array_namespace(out)
    n = out.shape[0]
    d = out.shape[1] * (plan["pool"] ** 2 if plan["pool"] is not None and out.ndim == 4 else 1)
    w = projection_matrix(head, plan, d, xp, out.dtype)
    loss_rows, dout, z, dlogits, _ = local_loss_cuda.launch(
        out,
        y,
        w,
        plan["scale"],
        plan["pool"] or 1,
        plan["normalize"],
        label_smoothing,
        plan["eps"],
        **({} if threads is None else {"threads": threads}),
    )
    chain = plan["chain"]
    if any(layer.parameters() for layer in chain):
        # logits = scale * z @ W(params), linear in W: run the chain forward on its "identity" input again (to
        # give its layers their caches) and back with dL/dW, which yields each parameter's gradient
        first_fixed = isinstance(chain[0], FixedLinear)
        rest = chain[1:] if first_fixed else chain
        _apply_chain(rest, chain[0].buffers["matrix"].T if first_fixed else xp.eye(d, dtype=out.dtype))
        grad_w = plan["scale"] * (z.T @ dlogits)
        for layer in reversed(rest):
            grad_w = layer.backward(grad_w, need_input_grad=layer is not rest[0])
    return float64_scalar(xp.sum(loss_rows)) / n, dout


def composed_local_loss(head, out, y, label_smoothing=0.0):
    """The reference path: the head's layers forward, softmax cross-entropy, the layers backward."""
    logits = head.forward(out)
    loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing)
    return loss, head.backward(dlogits)


def local_loss(head, out, y, label_smoothing=0.0, fused=None):
    """(loss, d loss / d out) of a local head on a block output; fills the head's parameter gradients.

    fused=None picks: the fused kernel for CuPy arrays when numba-cuda sees a GPU, the head is `fusable`
    and TINYDGL_FUSED_KERNELS is not 0; the composed layers otherwise. True / False force one.
    """
    if fused is None:
        fused = (
            getattr(array_namespace(out), "__name__", "") == "cupy"
            and fused_enabled()
            and fusable(head) is not None
            and numba_cuda_ready()
        )
    if fused:
        return fused_local_loss(head, out, y, label_smoothing)
    return composed_local_loss(head, out, y, label_smoothing)
