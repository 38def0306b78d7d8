"""Fully connected (affine) layer: out = x @ w + b."""

from __future__ import annotations

from ..backend import Array, array_namespace, zeros_like_on
from . import Cache


def linear_forward(x: Array, w: Array, b: Array | None = None) -> tuple[Array, Cache]:
    """x: (N, D), w: (D, M), b: (M,) or None -> out: (N, M), cache."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"linear_forward expects x (N, D) and w (D, M); got x {tuple(x.shape)}, w {tuple(w.shape)}.")
    out = x @ w
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(
    dout: Array, cache: Cache, compute_dx: bool = True, feedback: Array | None = None
) -> tuple[Array | None, Array, Array | None]:
    """dout: (N, M) -> dx: (N, D), dw: (D, M), db: (M,) or None.

    `compute_dx=False` returns dx=None, for a first layer whose input needs no gradient.
    feedback: a fixed (D, M) matrix that carries the gradient to the input in place of w (feedback
    alignment: dx = dout @ feedback^T); the weight gradient does not depend on it.
    """
    x, w, has_bias = cache
    w = w if feedback is None else feedback
    xp = array_namespace(dout)
    # BEGIN SOLUTION a1-linear-backward
    # hint: chain rule on out = x @ w + b; each gradient has its input's shape, db sums over the batch
    dx = dout @ w.T if compute_dx else None
    dw = x.T @ dout
    db = xp.sum(dout, axis=0) if has_bias else None
    # END SOLUTION
    return dx, dw, db


def linear_jvp(cache: Cache, dx: Array | None = None, dw: Array | None = None, db: Array | None = None) -> Array | None:
    """Forward mode: the output tangent of out = x @ w + b, from the forward's cache and tangents
    dx: (N, D), dw: (D, M), db: (M,) of the input and parameters (None: that one does not move).
    Returns dout: (N, M), or None when nothing moves.

    The op is bilinear in (x, w), so by the product rule dout = dx @ w + x @ dw + db: the forward itself,
    applied once to the input tangent and once to the weight tangent (the bias tangent rides on either).
    """
    x, w, _ = cache
    # BEGIN SOLUTION a5-linear-jvp
    # hint: product rule on out = x @ w + b: a term for each tangent that is not None, dout None if all are None;
    # hint: with only db, every row of dout is db (zeros_like_on makes the (N, M) zeros on x's device)
    dout = None
    if dx is not None:
        dout = linear_forward(dx, w, db)[0]
        db = None
    if dw is not None:
        part = linear_forward(x, dw, db)[0]
        dout = part if dout is None else dout + part
    elif db is not None:  # only the bias moves: every row moves by db
        dout = zeros_like_on(x, (x.shape[0], db.shape[0])) + db
    # END SOLUTION
    return dout
