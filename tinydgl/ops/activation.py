"""Elementwise nonlinearities: ReLU, LeakyReLU and tanh.

Written with `maximum` and multiplications rather than `where(mask, a, b)`: in NumPy a `where` with a
boolean mask is more than 10x slower than a multiply, and these ops touch the largest activations of a CNN. Like
every elementwise op they keep their input's memory layout (channels-last stays channels-last; see
`tinydgl.ops.conv`).

On NumPy and CuPy the second step runs in place (`out=`): a fresh activation-sized array can cost more
than the arithmetic on it (freed memory goes back to the OS, which must map and zero it again), so one
new array per op instead of two about halves the op's time. Other libraries get the same expression
without `out=`. On NumPy, LeakyReLU runs those steps on every core, one slice of the batch per thread
(`tinydgl.threads`); each element is computed the same way whatever the thread count.
"""

from __future__ import annotations

from ..backend import Array, Namespace, array_namespace, is_numpy_like
from ..threads import for_each_slice
from . import Cache


def relu_forward(x: Array) -> tuple[Array, Cache]:
    """x: any shape -> out = max(x, 0), same shape; the cache is the mask of positive inputs."""
    xp = array_namespace(x)
    return xp.maximum(x, 0.0), x > 0


def relu_backward(dout: Array, cache: Cache) -> Array:
    """dout: same shape as x -> dx. The gradient passes where x > 0 (at x == 0 we use 0, as PyTorch does)."""
    xp = array_namespace(dout)
    # BEGIN SOLUTION a1-relu-backward
    # hint: the cache is the boolean mask x > 0; dout passes where it is True, 0 elsewhere
    dx = xp.astype(cache, dout.dtype)
    dx *= dout
    # END SOLUTION
    return dx


def _fused(xp: Namespace, *arrays: Array) -> bool:
    """Whether the fused CuPy kernels of tinydgl/kernels/elementwise.py apply."""
    from ..kernels.elementwise import fused_for  # here: tinydgl.kernels imports the layers

    return fused_for(xp, *arrays)


def leaky_relu_forward(x: Array, negative_slope: float = 0.01) -> tuple[Array, Cache]:
    """x: any shape -> out = x where x > 0, else negative_slope * x."""
    xp = array_namespace(x)
    if not 0.0 <= negative_slope <= 1.0:
        positive = x > 0
        return xp.where(positive, x, negative_slope * x), (positive, negative_slope)
    # For 0 <= a <= 1 the larger of x and a*x is x exactly when x > 0.
    if _fused(xp, x):  # CuPy: the steps below in one launch
        from ..kernels.elementwise import fused_update

        out, positive = xp.empty_like(x), xp.empty_like(x, dtype=bool)
        fused_update("leaky_relu", xp, x, negative_slope, out, positive)
        return out, (positive, negative_slope)
    if not is_numpy_like(xp):
        return xp.maximum(x, negative_slope * x), (x > 0, negative_slope)
    out, positive = xp.empty_like(x), xp.empty_like(x, dtype=bool)

    def rows_in(s: slice) -> None:  # NumPy/CuPy: written straight into out and positive, on every core for NumPy
        xs, outs = x[s, ...], out[s, ...]
        xp.greater(xs, 0, out=positive[s, ...])
        xp.multiply(xs, negative_slope, out=outs)
        xp.maximum(xs, outs, out=outs)

    for_each_slice(rows_in, x, out)
    return out, (positive, negative_slope)


def leaky_relu_backward(dout: Array, cache: Cache) -> Array:
    """dout: same shape as x -> dx = dout * (1 if x > 0 else negative_slope)."""
    positive, negative_slope = cache
    xp = array_namespace(dout)
    if not 0.0 <= negative_slope <= 1.0:
        return xp.where(positive, dout, negative_slope * dout)
    if _fused(xp, dout):  # CuPy: one launch
        from ..kernels.elementwise import fused_update

        dx = xp.empty_like(dout)
        fused_update("leaky_relu_backward", xp, dout, positive, negative_slope, dx)
        return dx
    if not is_numpy_like(xp):
        slope = xp.maximum(xp.astype(positive, dout.dtype), negative_slope)  # 1.0 where x > 0, else a, exactly
        slope *= dout
        return slope
    dx = xp.empty_like(dout)

    def rows_in(s: slice) -> None:  # the same steps, written into dx, on every core for NumPy
        dxs = dx[s, ...]
        dxs[...] = positive[s, ...]  # 1.0 where x > 0, else 0.0 ...
        xp.maximum(dxs, negative_slope, out=dxs)  # ... and now 1.0 or a, exactly
        dxs *= dout[s, ...]

    for_each_slice(rows_in, dout, dx)
    return dx


def tanh_forward(x: Array) -> tuple[Array, Cache]:
    """x: any shape -> out = tanh(x); the cache is out (the derivative is 1 - out**2). The DRTP reference
    code's hidden activation."""
    xp = array_namespace(x)
    out = xp.tanh(x)
    return out, out


def tanh_backward(dout: Array, cache: Cache) -> Array:
    """dout: same shape as x -> dx = dout * (1 - tanh(x)**2)."""
    return dout * (1.0 - cache * cache)


# --- forward mode ------------------------------------------------------------------------------------------
# An elementwise op's Jacobian is diagonal, hence symmetric: the output tangent for an input tangent dx is
# the same product with the local derivative that backward applies to dout. So each JVP is its backward,
# called on the tangent.


def relu_jvp(cache: Cache, dx: Array) -> Array:
    """dx: the input tangent, x's shape -> dout = dx where x > 0, else 0 (the cache from relu_forward)."""
    return relu_backward(dx, cache)


def leaky_relu_jvp(cache: Cache, dx: Array) -> Array:
    """dx: the input tangent, x's shape -> dout = dx * (1 if x > 0 else negative_slope)."""
    return leaky_relu_backward(dx, cache)


def tanh_jvp(cache: Cache, dx: Array) -> Array:
    """dx: the input tangent, x's shape -> dout = dx * (1 - tanh(x)**2)."""
    return tanh_backward(dx, cache)
