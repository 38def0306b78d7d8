"""Shape-only ops: flatten."""

from __future__ import annotations

from ..backend import Array, array_namespace


def flatten_forward(x: Array) -> tuple[Array, tuple[int, ...]]:
    """x: (N, ...) -> out: (N, prod(...)), in C order (channel, then row, then column for NCHW)."""
    xp = array_namespace(x)
    return xp.reshape(x, (x.shape[0], -1)), tuple(x.shape)


def flatten_backward(dout: Array, cache: tuple[int, ...]) -> Array:
    """dout: (N, D) -> dx with the input's shape."""
    xp = array_namespace(dout)
    return xp.reshape(dout, cache)


def flatten_jvp(dx: Array) -> Array:
    """dx: (N, ...) input tangent -> dout: (N, prod(...)); flatten is linear, so it is flatten of the tangent."""
    return flatten_forward(dx)[0]
