"""Batch normalisation over the batch (and spatial) axes, for (N, C) and (N, C, H, W) inputs.

Both passes see the input as a matrix `rows` of shape (N*H, W*C) (channels-last memory, a free view; column
w*C + c holds channel c; (N, C) inputs as they are), with per-channel vectors tiled W times, and build the
output channels-last; on NumPy they run on every core, with the same result at any thread count. Why this
layout and not a reduction over axes (0, 2, 3): docs/design/convolution.md, "Batch normalisation".
"""

from __future__ import annotations

from ..backend import Array, Namespace, array_namespace, is_numpy_like
from ..threads import blocked_sums, column_sums, for_each_slice, map_slices
from . import Cache


def _as_rows(x: Array) -> Array:
    """x: (N, C) -> itself; (N, C, H, W) -> (N*H, W*C), channels-last (a view when x is stored so)."""
    xp = array_namespace(x)
    if x.ndim == 2:
        return x
    if x.ndim == 4:
        n, c, h, w = x.shape
        return xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h, w * c))
    raise ValueError(f"batchnorm expects (N, C) or (N, C, H, W) input, got shape {tuple(x.shape)}.")


def _from_rows(rows: Array, shape: tuple[int, ...]) -> Array:
    """Undo `_as_rows`: back to `shape`, as an NCHW view of channels-last memory for 4-D shapes."""
    xp = array_namespace(rows)
    if len(shape) == 2:
        return rows
    n, c, h, w = shape
    return xp.permute_dims(xp.reshape(rows, (n, h, w, c)), (0, 3, 1, 2))


def _tiled(v: Array, rows: Array) -> Array:
    """A per-channel vector v: (C,) repeated to line up with the W*C columns of `rows`."""
    xp = array_namespace(v)
    return xp.tile(v, (rows.shape[1] // v.shape[0],))


def _channel_sums(rows: Array, channels: int) -> Array:
    """Per-channel sums of `rows`: ones @ rows gives one sum per column, then add up each channel's columns."""
    xp = array_namespace(rows)
    return xp.sum(xp.reshape(column_sums(rows), (-1, channels)), axis=0)


def _channel_dots(a: Array, b: Array, channels: int) -> Array:
    """Per-channel sums of a * b, for a and b shaped like `rows`."""
    xp = array_namespace(a, b)
    if is_numpy_like(xp):  # fast path: einsum needs no temporary array for a * b; NumPy adds blocks on all cores
        column_dots = blocked_sums(lambda s: xp.einsum("mk,mk->k", a[s], b[s]), a, b)
        return xp.sum(xp.reshape(column_dots, (-1, channels)), axis=0)
    return _channel_sums(a * b, channels)


def _scale_shift(x: Array, scale: Array, shift: Array | None = None) -> Array:
    """x * scale + shift for rows x and tiled vectors scale, shift (None: no shift), in one new array."""
    xp = array_namespace(x)
    if not is_numpy_like(xp):
        out = x * scale
        if shift is not None:
            out += shift  # in place: `out` is our own new array
        return out
    out = xp.empty_like(x)

    def rows_in(s: slice) -> None:  # NumPy/CuPy: written straight into out, on every core for NumPy
        xp.multiply(x[s, ...], scale, out=out[s, ...])
        if shift is not None:
            out[s, ...] += shift

    for_each_slice(rows_in, x)
    return out


def _shifted(x: Array, shift: Array) -> Array:
    """x - shift for rows x and a tiled vector shift, in one new array."""
    xp = array_namespace(x)
    if not is_numpy_like(xp):
        return x - shift
    out = xp.empty_like(x)
    for_each_slice(lambda s: xp.subtract(x[s, ...], shift, out=out[s, ...]), x)
    return out


def _fused(xp: Namespace, *arrays: Array) -> bool:
    """Whether to use the fused CuPy kernels of tinydgl/kernels/elementwise.py (CuPy, one dtype throughout)."""
    from ..kernels.elementwise import fused_for  # here: tinydgl.kernels imports the layers

    return fused_for(xp, *arrays)


def _fused_rows(name: str, xp: Namespace, rows: Array, *args: Array | float) -> Array:
    """Kernel `name` over rows-shaped input `rows`, into a new rows-shaped output (one launch)."""
    from ..kernels.elementwise import fused_update

    out = xp.empty_like(rows)
    fused_update(name, xp, rows, *args, out)
    return out


def _center(rows: Array, mean: Array, channels: int) -> Array:
    """rows - mean, per channel (the mean tiled along the columns), in one new array."""
    xp = array_namespace(rows)
    if _fused(xp, rows, mean):
        return _fused_rows("bn_center", xp, rows, mean, channels)
    return _shifted(rows, _tiled(mean, rows))


def _update_running_stats(
    xp: Namespace, running_mean: Array, running_var: Array, mean: Array, var: Array, momentum: float, unbias: float
) -> None:
    """In place: running = (1 - momentum) * running + momentum * batch (the variance times `unbias`).
    On CuPy one fused kernel (tinydgl/kernels/elementwise.py) does both, instead of nine launches."""
    from ..kernels.elementwise import fused_update

    if _fused(xp, running_mean, running_var, mean, var):
        fused_update("running_stats", xp, mean, var, momentum, 1.0 - momentum, unbias, running_mean, running_var)
        return
    running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    running_var[...] = (1.0 - momentum) * running_var + momentum * var * unbias


def batchnorm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    running_mean: Array | None,
    running_var: Array | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[Array, Cache]:
    """Normalise each channel to zero mean and unit variance, then scale by gamma and shift by beta.

    x: (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var: (C,).
    Training mode uses the batch statistics and updates running_mean / running_var *in place*
    (new = (1 - momentum) * old + momentum * batch; the running variance uses the unbiased batch variance,
    as PyTorch does). Evaluation mode uses the running statistics. Returns out (x's shape) and a cache.
    """
    xp = array_namespace(x)
    rows = _as_rows(x)
    channels = x.shape[1]
    count = x.size // channels
    if training:
        if count < 2:
            raise ValueError("batchnorm in training mode needs more than one value per channel (batch size >= 2).")
        mean = _channel_sums(rows, channels) / count
        centered = _center(rows, mean, channels)
        var = _channel_dots(centered, centered, channels) / count  # two passes: stable for any mean
        if running_mean is not None:
            _update_running_stats(xp, running_mean, running_var, mean, var, momentum, count / (count - 1))
    else:
        if running_mean is None:
            raise ValueError("batchnorm in evaluation mode needs running_mean and running_var.")
        mean, var = running_mean, running_var
        centered = _center(rows, mean, channels)
    inv_std = 1.0 / xp.sqrt(var + eps)
    # out = x_hat * gamma + beta with x_hat = centered * inv_std; the cache keeps `centered` and inv_std
    # rather than x_hat, which saves a pass over the activations here and costs none in backward.
    if _fused(xp, centered, gamma, beta):  # CuPy: one launch, the vectors read per channel, not tiled
        out = _fused_rows("bn_scale_shift", xp, centered, gamma * inv_std, beta, channels)
    else:
        out = _scale_shift(centered, _tiled(gamma * inv_std, rows), _tiled(beta, rows))
    return _from_rows(out, tuple(x.shape)), (centered, gamma, inv_std, training, tuple(x.shape))


def batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dout: x's shape -> dx (x's shape), dgamma (C,), dbeta (C,).

    In training mode the batch mean and variance depend on every input, which gives the compact form
    dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat)).
    """
    centered, gamma, inv_std, training, x_shape = cache  # x_hat = centered * inv_std
    rows = _as_rows(dout)
    channels = x_shape[1]
    count = rows.size // channels
    dbeta = _channel_sums(rows, channels)
    dgamma = _channel_dots(rows, centered, channels) * inv_std
    scale = gamma * inv_std
    if not training:
        return _from_rows(_scale_shift(rows, _tiled(scale, rows)), x_shape), dgamma, dbeta
    if _fused(array_namespace(rows), rows, centered, dgamma):  # CuPy: _batchnorm_dx in one launch
        dx = _fused_rows("bn_dx", array_namespace(rows), rows, centered, inv_std, dgamma, dbeta, scale, count, channels)
        return _from_rows(dx, x_shape), dgamma, dbeta
    dx = map_slices(
        lambda s: _batchnorm_dx(rows[s, ...], centered[s, ...], dgamma, dbeta, inv_std, scale, count), rows, centered
    )
    return _from_rows(dx, x_shape), dgamma, dbeta


def _batchnorm_dx(
    rows: Array, centered: Array, dgamma: Array, dbeta: Array, inv_std: Array, scale: Array, count: int
) -> Array:
    """dx for some rows of dout (`rows`) and of the centred input (`centered`), given the per-channel sums
    dgamma, dbeta over the whole batch. Called once for all rows, or once per thread for its slice."""
    # The formula, as scale * (dout - mean(dout) - centered * inv_std * mean(dout * x_hat)), built in
    # one new array with in-place steps: a second activation-sized temporary costs as much as a pass.
    # BEGIN SOLUTION a1-batchnorm-backward
    # hint: per channel, mean(dout) = dbeta / count and mean(dout * x_hat) = dgamma / count; _tiled lines a (C,)
    # hint: vector up with the columns of rows; x_hat = centered * inv_std
    dx = centered * _tiled(-inv_std * dgamma / count, rows)
    dx += rows
    dx -= _tiled(dbeta / count, rows)
    dx *= _tiled(scale, rows)
    # END SOLUTION
    return dx


def l2_normalize_forward(x: Array, eps: float = 1e-12) -> tuple[Array, Cache]:
    """Scale each row of x: (N, D) to unit Euclidean length: out = x / max(||x||, eps), as PyTorch's
    `F.normalize` does (eps keeps an all-zero row finite). Returns out (N, D) and a cache."""
    xp = array_namespace(x)
    if x.ndim != 2:
        raise ValueError(f"l2_normalize expects (N, D) input, got shape {tuple(x.shape)}.")
    norm = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))  # (N, 1)
    clipped = norm > eps
    denom = xp.where(clipped, norm, eps)
    out = x / denom
    return out, (out, denom, clipped)


def l2_normalize_backward(dout: Array, cache: Cache) -> Array:
    """dout: (N, D) -> dx: (N, D).

    Where the norm exceeds eps, out = x / ||x|| has dx = (dout - out * <dout, out>) / ||x||; where eps was
    used instead, the denominator is a constant and dx = dout / eps.
    """
    out, denom, clipped = cache
    xp = array_namespace(dout)
    # BEGIN SOLUTION a3-l2-normalize-backward
    # hint: remove from dout its component along out (a row-wise dot product), divide by the norm; where the norm
    # hint: was clipped to eps, dx = dout / eps
    radial = xp.sum(dout * out, axis=1, keepdims=True)
    return xp.where(clipped, (dout - out * radial) / denom, dout / denom)
    # END SOLUTION


def length_normalize_forward(x: Array, eps: float = 1e-8) -> tuple[Array, Cache]:
    """Forward-Forward's length normalisation: each row of x: (N, D) divided by its root mean square,
    out = x / (sqrt(mean(x**2)) + eps), so only the direction of the row is kept (its RMS becomes 1; an
    all-zero row stays zero). Unlike `l2_normalize_forward` the scale is the RMS, not the Euclidean length
    (a row of D units keeps a squared length of D, not 1), and eps is added, not a floor. Returns out and a
    cache."""
    xp = array_namespace(x)
    if x.ndim != 2:
        raise ValueError(f"length_normalize expects (N, D) input, got shape {tuple(x.shape)}.")
    rms = xp.sqrt(xp.mean(x * x, axis=1, keepdims=True))  # (N, 1)
    denom = rms + eps
    return x / denom, (x, rms, denom)


def length_normalize_backward(dout: Array, cache: Cache) -> Array:
    """dout: (N, D) -> dx: (N, D).

    With r = sqrt(mean(x**2)) and d = r + eps, out = x / d and dr/dx = x / (D r), so
    dx = dout / d - x * <dout, x> / (D r d**2). A zero row (r = 0) has x = 0 there: the second term is 0
    (taken as such, instead of 0 / 0), and dx = dout / eps.
    """
    x, rms, denom = cache
    xp = array_namespace(dout)
    radial = xp.sum(dout * x, axis=1, keepdims=True)  # <dout, x> per row
    safe_rms = xp.where(rms > 0, rms, xp.ones_like(rms))
    return dout / denom - x * (radial / (x.shape[1] * safe_rms * denom * denom))


# --- forward mode ------------------------------------------------------------------------------------------


def batchnorm_jvp(
    cache: Cache, dx: Array | None = None, dgamma: Array | None = None, dbeta: Array | None = None
) -> Array | None:
    """Forward mode: the output tangent of batch norm for tangents dx (x's shape), dgamma, dbeta: (C,)
    (None: that one does not move). Returns dout with x's shape.

    out = gamma * x_hat + beta, so dout = gamma * dx_hat + dgamma * x_hat + dbeta. In evaluation mode the
    statistics are constants and dx_hat = inv_std * dx. In training mode they move with the batch: with
    d mean = mean(dx) and d std = mean(x_hat * dx),
    dx_hat = inv_std * (dx - mean(dx) - x_hat * mean(x_hat * dx)) (per channel, over batch and space).
    """
    centered, gamma, inv_std, training, x_shape = cache  # x_hat = centered * inv_std
    channels = x_shape[1]
    count = centered.size // channels
    dout = None
    if dx is not None:
        rows = _as_rows(dx)
        if training:
            mean_dx = _channel_sums(rows, channels) / count
            mean_xhat_dx = _channel_dots(rows, centered, channels) * inv_std / count
            dx_hat = _shifted(rows, _tiled(mean_dx, rows))
            dx_hat -= centered * _tiled(inv_std * mean_xhat_dx, rows)
            dout = _scale_shift(dx_hat, _tiled(gamma * inv_std, rows))
        else:
            dout = _scale_shift(rows, _tiled(gamma * inv_std, rows))
    if dgamma is not None:
        part = _scale_shift(centered, _tiled(dgamma * inv_std, centered))
        dout = part if dout is None else dout + part
    if dbeta is not None:
        dout = dout + _tiled(dbeta, centered) if dout is not None else centered * 0.0 + _tiled(dbeta, centered)
    return None if dout is None else _from_rows(dout, x_shape)


def l2_normalize_jvp(cache: Cache, dx: Array) -> Array:
    """dx: (N, D) input tangent -> dout: (N, D). The Jacobian of x / ||x|| is (I - out out^T) / ||x||, a
    symmetric matrix (dout / eps where the norm was clipped), so the tangent goes through the backward's
    formula."""
    return l2_normalize_backward(dx, cache)


def length_normalize_jvp(cache: Cache, dx: Array) -> Array:
    """dx: (N, D) input tangent -> dout: (N, D). With r the row RMS and d = r + eps,
    dout = dx / d - x * <x, dx> / (D r d**2): the Jacobian I / d - x x^T / (D r d**2) is symmetric, so this
    is the backward's formula applied to the tangent."""
    return length_normalize_backward(dx, cache)
