"""Inverted dropout: zero each input with probability p, scale survivors by 1 / (1 - p)."""

from __future__ import annotations

import numpy as np

from ..backend import Array, array_namespace, asarray
from . import Cache


def dropout_forward(x: Array, p: float, training: bool, rng: np.random.Generator) -> tuple[Array, Cache]:
    """x: any shape -> out, same shape. Identity when not training or p == 0.

    rng: a `numpy.random.Generator` (see `tinydgl.backend.default_rng`); the mask is drawn on the host so a
    seed gives the same mask on every backend.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}.")
    if not training or p == 0.0:
        return x, None
    xp = array_namespace(x)
    keep = rng.random(tuple(x.shape)) >= p
    mask = asarray(keep, like=x)
    scale = xp.astype(mask, x.dtype) * (1.0 / (1.0 - p))
    return x * scale, scale


def dropout_backward(dout: Array, cache: Cache) -> Array:
    """dout -> dx: the same mask and scale as the forward pass."""
    return dout if cache is None else dout * cache


def dropout_jvp(cache: Cache, dx: Array) -> Array:
    """dx: the input tangent -> dout: the tangent moves through the same mask and scale as the input did
    (dropout is linear in x once its mask is drawn)."""
    return dropout_backward(dx, cache)
