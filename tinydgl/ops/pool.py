"""Pooling: max, average and adaptive average, over windows of NCHW inputs (no padding).

Each of the k*k offsets inside a window is one strided slice of the whole batch (`x[:, i::s, j::s, :]`), on a
channels-last view of the input; outputs and gradients are NCHW views of channels-last arrays, and on NumPy
the batch is cut into one slice per thread. Why: docs/design/convolution.md, "Pooling".
"""

from __future__ import annotations

from ..backend import Array, Namespace, array_namespace, is_numpy_like, zeros_like_on
from ..threads import map_slices
from . import Cache

# A window's size or stride: one int for a square window, or (height, width).
Size = int | tuple[int, int]


def _fused(xp: Namespace, *arrays: Array) -> bool:
    """Whether the fused CuPy kernels of tinydgl/kernels/elementwise.py apply."""
    from ..kernels.elementwise import fused_for  # here: tinydgl.kernels imports the layers

    return fused_for(xp, *arrays)


def _pair(v: Size, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}.")
    return int(v[0]), int(v[1])


def _pool_geometry(x: Array, kernel_size: Size, stride: Size | None) -> tuple[int, int, int, int, int, int]:
    if x.ndim != 4:
        raise ValueError(f"pooling expects (N, C, H, W) input, got shape {tuple(x.shape)}.")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    h, w = x.shape[2], x.shape[3]
    if kh > h or kw > w or min(kh, kw, sh, sw) < 1:
        raise ValueError(f"pool window {kh}x{kw} (stride {sh}x{sw}) does not fit a {h}x{w} input.")
    return kh, kw, sh, sw, (h - kh) // sh + 1, (w - kw) // sw + 1


def _window_offset(i: int, j: int, sh: int, sw: int, oh: int, ow: int) -> tuple[slice, slice, slice, slice]:
    """The slice of a channels-last (N, H, W, C) array that picks, for every window, its element at offset (i, j)."""
    return (slice(None), slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw), slice(None))


def _nhwc(x: Array) -> Array:
    return array_namespace(x).permute_dims(x, (0, 2, 3, 1))


def _nchw(x_nhwc: Array) -> Array:
    return array_namespace(x_nhwc).permute_dims(x_nhwc, (0, 3, 1, 2))


def maxpool2d_forward(x: Array, kernel_size: Size, stride: Size | None = None) -> tuple[Array, Cache]:
    """Max pooling over kh x kw windows.

    x: (N, C, H, W). Returns out: (N, C, H_out, W_out), H_out = (H - kh) // sh + 1, and a cache.
    stride defaults to kernel_size; windows overlap when stride < kernel_size. The cache records which
    offset won in each window (the first one on ties).
    """
    kh, kw, sh, sw, oh, ow = _pool_geometry(x, kernel_size, stride)
    x_nhwc = _nhwc(x)
    out, winner = map_slices(lambda s: _maxpool_nhwc(x_nhwc[s, ...], kh, kw, sh, sw, oh, ow), x_nhwc)
    return _nchw(out), (tuple(x.shape), winner, kh, kw, sh, sw)


def _maxpool_nhwc(x_nhwc: Array, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> tuple[Array, Array]:
    """Max pooling of channels-last images x_nhwc: (n, H, W, C) -> out: (n, oh, ow, C) and winner, the
    offset i * kw + j that won in each window."""
    xp = array_namespace(x_nhwc)
    out = x_nhwc[_window_offset(0, 0, sh, sw, oh, ow)]
    winner = zeros_like_on(x_nhwc, out.shape, dtype=xp.int8 if kh * kw < 128 else xp.int32)
    if _fused(xp, x_nhwc) and kh * kw > 1:  # CuPy: the loop below, one launch per offset
        from ..kernels.elementwise import fused_update

        out = xp.array(out)  # our own copy, updated in place (the view belongs to x)
        for k in range(1, kh * kw):
            fused_update("maxpool_step", xp, x_nhwc[_window_offset(k // kw, k % kw, sh, sw, oh, ow)], k, out, winner)
        return out, winner
    out_is_ours = False
    for i in range(kh):
        for j in range(kw):
            if i == 0 and j == 0:
                continue
            candidate = x_nhwc[_window_offset(i, j, sh, sw, oh, ow)]
            better = candidate > out  # strict: an earlier offset keeps ties
            # Offsets are visited in increasing order, so "offset k if better, else the old winner" is a max.
            winner = xp.maximum(winner, xp.astype(better, winner.dtype) * (i * kw + j))
            if is_numpy_like(xp) and out_is_ours:
                xp.maximum(out, candidate, out=out)  # in place: saves allocating a new output per offset
            else:
                out = xp.maximum(out, candidate)
            out_is_ours = True  # (the first `out` was a view of x, which must not be written)
    return out, winner


def maxpool2d_backward(dout: Array, cache: Cache) -> Array:
    """dout: (N, C, H_out, W_out) -> dx: (N, C, H, W). Each window's gradient goes to its (first) max."""
    x_shape, winner, kh, kw, sh, sw = cache
    dout_nhwc = _nhwc(dout)
    dx = map_slices(
        lambda s: _maxpool_backward_nhwc(dout_nhwc[s, ...], winner[s, ...], x_shape, kh, kw, sh, sw), dout_nhwc, winner
    )
    return _nchw(dx)


def _maxpool_backward_nhwc(
    dout_nhwc: Array, winner: Array, x_shape: tuple[int, ...], kh: int, kw: int, sh: int, sw: int
) -> Array:
    """dout_nhwc: (n, oh, ow, C) and its windows' winners -> dx: (n, H, W, C), channels-last."""
    xp = array_namespace(dout_nhwc)
    _, c, h, w = x_shape
    n, oh, ow = dout_nhwc.shape[0], dout_nhwc.shape[1], dout_nhwc.shape[2]
    dx = zeros_like_on(dout_nhwc, (n, h, w, c))
    if _fused(xp, dout_nhwc) and sh >= kh and sw >= kw:  # CuPy, windows apart: one launch per offset
        from ..kernels.elementwise import fused_update

        for k in range(kh * kw):
            fused_update("maxpool_share", xp, dout_nhwc, winner, k, dx[_window_offset(k // kw, k % kw, sh, sw, oh, ow)])
        return dx
    for i in range(kh):
        for j in range(kw):
            share = xp.astype(winner == i * kw + j, dout_nhwc.dtype)
            share *= dout_nhwc
            if sh >= kh and sw >= kw:  # windows do not overlap: each input is in one window at most
                dx[_window_offset(i, j, sh, sw, oh, ow)] = share
            else:
                dx[_window_offset(i, j, sh, sw, oh, ow)] += share
    return dx


def avgpool2d_forward(x: Array, kernel_size: Size, stride: Size | None = None) -> tuple[Array, Cache]:
    """Average pooling over kh x kw windows. x: (N, C, H, W) -> out: (N, C, H_out, W_out), cache."""
    kh, kw, sh, sw, oh, ow = _pool_geometry(x, kernel_size, stride)
    x_nhwc = _nhwc(x)
    out: Array = None  # the sum of each window's kh * kw offsets
    for i in range(kh):
        for j in range(kw):
            part = x_nhwc[_window_offset(i, j, sh, sw, oh, ow)]
            out = part if out is None else out + part
    return _nchw(out * (1.0 / (kh * kw))), (tuple(x.shape), kh, kw, sh, sw)


def avgpool2d_backward(dout: Array, cache: Cache) -> Array:
    """dout: (N, C, H_out, W_out) -> dx: (N, C, H, W); each input gets 1/(kh*kw) of each window it is in."""
    (n, c, h, w), kh, kw, sh, sw = cache
    oh, ow = dout.shape[2], dout.shape[3]
    share = _nhwc(dout) * (1.0 / (kh * kw))
    dx = zeros_like_on(dout, (n, h, w, c))
    for i in range(kh):
        for j in range(kw):
            dx[_window_offset(i, j, sh, sw, oh, ow)] += share
    return _nchw(dx)


def adaptive_windows(size: int, out_size: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling windows: window i covers [floor(i*size/out), ceil((i+1)*size/out)).

    Windows may differ in length and overlap when size is not a multiple of out_size
    (size 7 -> 2 gives [0, 4) and [3, 7)).
    """
    return [((i * size) // out_size, -((-(i + 1) * size) // out_size)) for i in range(out_size)]


def adaptive_avgpool2d_forward(x: Array, output_size: Size) -> tuple[Array, Cache]:
    """Average-pool x: (N, C, H, W) to out: (N, C, oh, ow) with PyTorch's window rule (`adaptive_windows`).

    Averaging over a rectangle is separable, so we pool the rows first, then the columns:
    oh + ow slice-means instead of oh * ow.
    """
    xp = array_namespace(x)
    if x.ndim != 4:
        raise ValueError(f"adaptive_avgpool2d expects (N, C, H, W) input, got shape {tuple(x.shape)}.")
    oh, ow = _pair(output_size, "output_size")
    h, w = x.shape[2], x.shape[3]
    if min(oh, ow) < 1:
        raise ValueError(f"output_size must be positive, got {output_size!r}.")
    rows, cols = adaptive_windows(h, oh), adaptive_windows(w, ow)
    x_nhwc = _nhwc(x)
    out = map_slices(lambda s: _adaptive_avgpool_nhwc(x_nhwc[s, ...], rows, cols, xp), x_nhwc)
    return _nchw(out), (tuple(x.shape), rows, cols)


def _adaptive_avgpool_nhwc(
    x_nhwc: Array, rows: list[tuple[int, int]], cols: list[tuple[int, int]], xp: Namespace
) -> Array:
    """Channels-last images x_nhwc: (n, H, W, C) -> (n, oh, ow, C), rows first, then columns."""
    pooled_rows = xp.stack([xp.mean(x_nhwc[:, a:b, :, :], axis=1) for a, b in rows], axis=1)  # (n, oh, W, C)
    return xp.stack([xp.mean(pooled_rows[:, :, a:b, :], axis=2) for a, b in cols], axis=2)  # (n, oh, ow, C)


def adaptive_avgpool2d_backward(dout: Array, cache: Cache) -> Array:
    """dout: (N, C, oh, ow) -> dx: (N, C, H, W), undoing the two separable means in reverse order."""
    x_shape, rows, cols = cache
    dout_nhwc = _nhwc(dout)
    return _nchw(
        map_slices(lambda s: _adaptive_avgpool_backward_nhwc(dout_nhwc[s, ...], x_shape, rows, cols), dout_nhwc)
    )


def _adaptive_avgpool_backward_nhwc(
    dout_nhwc: Array, x_shape: tuple[int, ...], rows: list[tuple[int, int]], cols: list[tuple[int, int]]
) -> Array:
    """dout_nhwc: (n, oh, ow, C) -> dx: (n, H, W, C), channels-last."""
    _, c, h, w = x_shape
    n = dout_nhwc.shape[0]
    d_rows = zeros_like_on(dout_nhwc, (n, len(rows), w, c))
    for j, (a, b) in enumerate(cols):
        d_rows[:, :, a:b, :] += dout_nhwc[:, :, j : j + 1, :] * (1.0 / (b - a))
    dx = zeros_like_on(dout_nhwc, (n, h, w, c))
    for i, (a, b) in enumerate(rows):
        dx[:, a:b, :, :] += d_rows[:, i : i + 1, :, :] * (1.0 / (b - a))
    return dx


# --- forward mode ------------------------------------------------------------------------------------------


def maxpool2d_jvp(cache: Cache, dx: Array) -> Array:
    """dx: (N, C, H, W) input tangent -> dout: (N, C, H_out, W_out). Each window's output is its winning
    input, so its tangent is that input's tangent (the winner recorded by the forward pass)."""
    _, winner, kh, kw, sh, sw = cache
    dx_nhwc = _nhwc(dx)
    return _nchw(
        map_slices(lambda s: _maxpool_jvp_nhwc(dx_nhwc[s, ...], winner[s, ...], kh, kw, sh, sw), dx_nhwc, winner)
    )


def _maxpool_jvp_nhwc(dx_nhwc: Array, winner: Array, kh: int, kw: int, sh: int, sw: int) -> Array:
    """dx_nhwc: (n, H, W, C) and the windows' winners (n, oh, ow, C) -> dout: (n, oh, ow, C)."""
    xp = array_namespace(dx_nhwc)
    oh, ow = winner.shape[1], winner.shape[2]
    dout = None
    for i in range(kh):
        for j in range(kw):
            share = xp.astype(winner == i * kw + j, dx_nhwc.dtype) * dx_nhwc[_window_offset(i, j, sh, sw, oh, ow)]
            dout = share if dout is None else dout + share
    return dout


def avgpool2d_jvp(cache: Cache, dx: Array) -> Array:
    """dx: (N, C, H, W) input tangent -> dout: (N, C, H_out, W_out). Averaging is linear: the forward op
    applied to the tangent."""
    _, kh, kw, sh, sw = cache
    return avgpool2d_forward(dx, (kh, kw), (sh, sw))[0]


def adaptive_avgpool2d_jvp(cache: Cache, dx: Array) -> Array:
    """dx: (N, C, H, W) input tangent -> dout: (N, C, oh, ow): the (linear) forward op on the tangent."""
    _, rows, cols = cache
    return adaptive_avgpool2d_forward(dx, (len(rows), len(cols)))[0]
