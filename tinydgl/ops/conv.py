"""2-D convolution (cross-correlation, as in every deep-learning library) via im2col + one matrix product.

Every output pixel is a dot product between one kh x kw x C patch of the input and a filter: copy all
patches into the rows of `cols` (M = N*H_out*W_out rows, K = kh*kw*C columns) and the convolution is one
product `cols @ w_col`. x: (N, C, H, W), w: (F, C/groups, kh, kw) -> out: (N, F, H_out, W_out), stored
channels-last in memory. `cols` is built in batch slices that fit `WORKSPACE_BYTES` and never kept; with one
group, dx adds each kernel offset's product back (`_input_grad_by_offset`), with groups it scatters dcols
(`col2im`). `_im2col_sliced` is the portable twin of the strided fast path; copies run on every core.

Design notes (the layout choices and why, memory): docs/design/convolution.md; lesson 3 builds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array, Namespace, array_namespace, empty_like_on, is_numpy_like, zeros_like_on
from ..threads import column_sums, for_each_block, for_each_slice, is_numpy, matmul, matmul_tn
from . import Cache

# Largest patch matrix built at once (bytes). Larger batches are processed in slices of images. On the
# CPU a slice stays small (its copies and products run near the caches); on a GPU every slice costs its own
# launches, so a slice is far larger: a 3x3 conv over 64 channels at 32x32, batch 128 (302 MB of patches in
# float32), is one piece there instead of ten.
WORKSPACE_BYTES = 32 * 2**20
DEVICE_WORKSPACE_BYTES = 512 * 2**20


def _itemsize(dtype: Any) -> int:
    return getattr(dtype, "itemsize", 8)  # array_api_strict's dtypes do not say; assume the widest


def _image_slices(n: int, rows_per_image: int, k: int, itemsize: int, on_device: bool = False) -> list[tuple[int, int]]:
    """Consecutive (start, stop) slices of the batch whose patch matrices fit WORKSPACE_BYTES, or
    DEVICE_WORKSPACE_BYTES for GPU arrays (>= 1 image per slice)."""
    per_image = max(rows_per_image * k * itemsize, 1)
    step = max(1, (DEVICE_WORKSPACE_BYTES if on_device else WORKSPACE_BYTES) // per_image)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _on_gpu(xp: Namespace) -> bool:
    return getattr(xp, "__name__", "") == "cupy"


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: (size + 2*padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad_channels_last(x: Array, padding: int) -> Array:
    """x: (N, C, H, W) -> (N, H + 2p, W + 2p, C) channels-last, zero padded (a view when padding is 0)."""
    xp = array_namespace(x)
    x_nhwc = xp.permute_dims(x, (0, 2, 3, 1))
    if padding == 0:
        return x_nhwc
    n, h, w, c = x_nhwc.shape
    padded = zeros_like_on(x, (n, h + 2 * padding, w + 2 * padding, c))

    def images_in(s: slice) -> None:
        padded[s, padding : padding + h, padding : padding + w, :] = x_nhwc[s, ...]

    for_each_slice(images_in, x_nhwc, padded)
    return padded


def _im2col_strided(x_pad: Array, kh: int, kw: int, stride: int, oh: int, ow: int) -> Array:
    """NumPy/CuPy fast path: a zero-copy (N, oh, ow, kh, kw, C) window view of the padded input."""
    xp = array_namespace(x_pad)
    n, _, _, c = x_pad.shape
    s_n, s_h, s_w, s_c = x_pad.strides
    shape, strides = (n, oh, ow, kh, kw, c), (s_n, stride * s_h, stride * s_w, s_h, s_w, s_c)
    if xp is np:  # read-only, so a stray write cannot scribble over overlapping windows
        return np.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides)  # CuPy's has no `writeable`


def _im2col_sliced(x_pad: Array, kh: int, kw: int, stride: int, oh: int, ow: int) -> Array:
    """Portable path: stack the kh*kw offset slices into an (N, oh, ow, kh, kw, C) array."""
    xp = array_namespace(x_pad)
    n, _, _, c = x_pad.shape
    parts = [
        x_pad[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return xp.reshape(xp.stack(parts, axis=3), (n, oh, ow, kh, kw, c))


def im2col(x_pad: Array, kh: int, kw: int, stride: int, groups: int = 1, portable: bool | None = None) -> Array:
    """Patch matrix of a channels-last padded input.

    x_pad: (N, Hp, Wp, C) -> cols: (G, M, K) with M = N*oh*ow, K = kh*kw*(C/G); row m of group g holds
    the patch under output pixel m, ordered (kernel row, kernel column, channel).
    `portable=None` picks the strided fast path on NumPy/CuPy and the sliced path elsewhere.
    """
    xp = array_namespace(x_pad)
    n, hp, wp, c = x_pad.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if portable is None:
        portable = not is_numpy_like(xp)
    windows = (_im2col_sliced if portable else _im2col_strided)(x_pad, kh, kw, stride, oh, ow)
    m, cg = n * oh * ow, c // groups
    if groups == 1 and not portable:  # the one copy im2col must make, slice by slice (on every core for NumPy)
        cols = xp.empty((n, oh, ow, kh, kw, c), dtype=x_pad.dtype)

        def images_in(s: slice) -> None:
            cols[s, ...] = windows[s, ...]

        for_each_slice(images_in, cols)
        return xp.reshape(cols, (1, m, kh * kw * c))
    if groups == 1:
        return xp.reshape(windows, (1, m, kh * kw * c))  # the sliced path's stack is already that copy
    windows = xp.reshape(windows, (n, oh, ow, kh, kw, groups, cg))
    return xp.reshape(xp.permute_dims(windows, (5, 0, 1, 2, 3, 4, 6)), (groups, m, kh * kw * cg))


def col2im(dcols: Array, x_pad_shape: tuple[int, ...], kh: int, kw: int, stride: int, groups: int = 1) -> Array:
    """Adjoint of `im2col`: dcols (G, M, K) -> d x_pad (N, Hp, Wp, C), summing overlapping patches."""
    xp = array_namespace(dcols)
    n, hp, wp, c = x_pad_shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cg = c // groups
    if groups == 1:
        patches = xp.reshape(dcols, (n, oh, ow, kh, kw, c))
    else:
        patches = xp.reshape(dcols, (groups, n, oh, ow, kh, kw, cg))
        patches = xp.reshape(xp.permute_dims(patches, (1, 2, 3, 4, 5, 0, 6)), (n, oh, ow, kh, kw, c))
    dx_pad = zeros_like_on(dcols, x_pad_shape)
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride, :] += patches[
                :, :, :, i, j, :
            ]
    return dx_pad


def _add_into(target: Array, values: Array) -> None:
    """target += values, in place, one slice of the first axis per thread on NumPy. `values` is an array of
    target's shape, or one that broadcasts over its first axis (a tiled bias row)."""
    per_row = values.ndim == target.ndim and values.shape[0] == target.shape[0]

    def rows_in(s: slice) -> None:
        part = target[s, ...]
        part += values[s, ...] if per_row else values

    for_each_slice(rows_in, target)


def _check_conv_args(x: Array, w: Array, b: Array | None, stride: int, padding: int, groups: int) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(
            f"conv2d expects x (N, C, H, W) and w (F, C/groups, KH, KW); got {tuple(x.shape)}, {tuple(w.shape)}."
        )
    c, f = x.shape[1], w.shape[0]
    if groups < 1 or c % groups or f % groups:
        raise ValueError(f"groups={groups} must divide both input channels ({c}) and filters ({f}).")
    if w.shape[1] != c // groups:
        raise ValueError(
            f"conv2d weight has {w.shape[1]} input channels per group, but the input has {c} channels "
            f"in {groups} group(s), i.e. {c // groups} per group."
        )
    if b is not None and tuple(b.shape) != (f,):
        raise ValueError(f"conv2d bias must have shape ({f},), got {tuple(b.shape)}.")
    if stride < 1 or padding < 0:
        raise ValueError(f"conv2d needs stride >= 1 and padding >= 0, got stride={stride}, padding={padding}.")
    if x.shape[2] + 2 * padding < w.shape[2] or x.shape[3] + 2 * padding < w.shape[3]:
        raise ValueError(f"conv2d kernel {tuple(w.shape[2:])} is larger than the padded input {tuple(x.shape[2:])}.")


def weight_columns(w: Array, groups: int = 1) -> Array:
    """w (F, Cg, KH, KW) -> w_col (G, K, F/G) with K = KH*KW*Cg, rows ordered (kernel row, kernel column,
    channel) like im2col's columns."""
    xp = array_namespace(w)
    f, cg, kh, kw = w.shape
    return xp.reshape(
        xp.permute_dims(xp.reshape(w, (groups, f // groups, cg, kh, kw)), (0, 3, 4, 2, 1)),
        (groups, kh * kw * cg, f // groups),
    )


def conv2d_forward(
    x: Array,
    w: Array,
    b: Array | None = None,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    portable: bool | None = None,
) -> tuple[Array, Cache]:
    """Convolution of NCHW images with zero padding.

    x: (N, C, H, W), w: (F, C // groups, KH, KW), b: (F,) or None.
    Returns out: (N, F, H_out, W_out) with H_out = (H + 2*padding - KH) // stride + 1, and a cache.
    `out` is stored channels-last in memory (docs/design/convolution.md); its shape and values are NCHW.
    """
    _check_conv_args(x, w, b, stride, padding, groups)
    xp = array_namespace(x, w, b)
    n = x.shape[0]
    f, cg, kh, kw = w.shape
    x_pad = _pad_channels_last(x, padding)
    w_col = weight_columns(w, groups)
    oh = conv_output_size(x.shape[2], kh, stride, padding)
    ow = conv_output_size(x.shape[3], kw, stride, padding)
    rows = oh * ow  # output pixels per image
    cache = (x_pad, w_col, tuple(w.shape), tuple(x.shape), stride, padding, groups, b is not None, portable)
    if groups == 1 and not portable and is_numpy(x_pad, w_col):
        out_flat = _forward_in_blocks(x_pad, w_col[0, ...], b, kh, kw, stride, oh, ow)
        return xp.permute_dims(xp.reshape(out_flat, (n, oh, ow, f)), (0, 3, 1, 2)), cache
    out_flat = empty_like_on(x, (n * rows, f))  # (M, F)
    for start, stop in _image_slices(n, rows, kh * kw * cg * groups, _itemsize(x.dtype), _on_gpu(xp)):
        cols = im2col(x_pad[start:stop, ...], kh, kw, stride, groups, portable)  # (G, rows * images, K)
        if groups == 1:  # a plain 2-D product, written in place (on NumPy: in blocks of rows, on every core)
            matmul(cols[0, ...], w_col[0, ...], out=out_flat[start * rows : stop * rows, :])
        else:
            out_flat[start * rows : stop * rows, :] = xp.reshape(
                xp.permute_dims(cols @ w_col, (1, 0, 2)), (cols.shape[1], f)
            )
    # The same memory as (N*H_out, W_out*F) rows: NumPy adds a bias tiled to W_out*F numbers much faster than
    # a (F,) bias broadcast over (M, F), whose inner loop runs only F numbers at a time.
    out_rows = xp.reshape(out_flat, (n * oh, ow * f))
    if b is not None:
        _add_into(out_rows, xp.tile(b, (ow,)))  # in place: out_rows is a new array
    out = xp.permute_dims(xp.reshape(out_rows, (n, oh, ow, f)), (0, 3, 1, 2))
    return out, cache


def conv2d_backward(
    dout: Array, cache: Cache, compute_dx: bool = True, feedback: Array | None = None
) -> tuple[Array | None, Array, Array | None]:
    """dout: (N, F, H_out, W_out) -> dx: (N, C, H, W), dw: (F, C // groups, KH, KW), db: (F,) or None.

    `compute_dx=False` skips the input gradient (returns dx=None): a first layer, or a block whose input is
    a constant in local learning, needs none. feedback: a fixed array of the weight's shape that carries the
    gradient to the input in place of the weight (feedback alignment); dw and db do not depend on it.
    """
    x_pad, w_col, w_shape, x_shape, stride, padding, groups, has_bias, portable = cache
    if feedback is not None:
        if tuple(feedback.shape) != tuple(w_shape):
            raise ValueError(
                f"conv2d feedback must have the weight's shape {tuple(w_shape)}, got {tuple(feedback.shape)}."
            )
        w_col = weight_columns(feedback, groups)
    xp = array_namespace(dout)
    f, cg, kh, kw = w_shape
    n = x_pad.shape[0]
    m = dout.shape[0] * dout.shape[2] * dout.shape[3]
    rows = m // n
    dout_flat = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (m, f))  # free when dout is channels-last
    if groups == 1 and not portable and is_numpy(x_pad, w_col, dout_flat):
        dx_pad, dw_col, db = _backward_in_blocks(dout_flat, x_pad, w_col[0, ...], kh, kw, stride, compute_dx, has_bias)
        dw = xp.reshape(xp.permute_dims(xp.reshape(dw_col, (1, kh, kw, cg, f)), (0, 4, 3, 1, 2)), w_shape)
        dx = None
        if dx_pad is not None:  # compute_dx
            h, w = x_shape[2], x_shape[3]
            dx = xp.permute_dims(dx_pad[:, padding : padding + h, padding : padding + w, :], (0, 3, 1, 2))
        return dx, dw, db
    db = column_sums(dout_flat) if has_bias else None  # ones @ dout_flat, by BLAS (see ops.norm)
    if groups > 1:
        dout_g = xp.permute_dims(xp.reshape(dout_flat, (m, groups, f // groups)), (1, 0, 2))  # (G, M, F/G)
    dw_col = None
    for start, stop in _image_slices(n, rows, kh * kw * cg * groups, _itemsize(dout.dtype), _on_gpu(xp)):
        cols = im2col(x_pad[start:stop, ...], kh, kw, stride, groups, portable)  # rebuilt: the cache holds x_pad
        if groups == 1:
            part = xp.reshape(matmul_tn(cols[0, ...], dout_flat[start * rows : stop * rows, :]), (1, kh * kw * cg, f))
        else:
            part = cols.mT @ dout_g[:, start * rows : stop * rows, :]
        dw_col = part if dw_col is None else dw_col + part  # (G, K, F/G)
    dw = xp.reshape(xp.permute_dims(xp.reshape(dw_col, (groups, kh, kw, cg, f // groups)), (0, 4, 3, 1, 2)), w_shape)
    dx = None
    if compute_dx:
        if groups == 1:
            dx_pad = _input_grad_by_offset(dout_flat, w_col[0, ...], tuple(x_pad.shape), kh, kw, stride)
        else:
            dx_pad = col2im(dout_g @ w_col.mT, tuple(x_pad.shape), kh, kw, stride, groups)  # via dcols: (G, M, K)
        h, w = x_shape[2], x_shape[3]
        dx = xp.permute_dims(dx_pad[:, padding : padding + h, padding : padding + w, :], (0, 3, 1, 2))
    return dx, dw, db


def conv2d_input(cache: Cache) -> Array:
    """The input x: (N, C, H, W) a forward pass saw, recovered from its cache (an NCHW view of the padded,
    channels-last copy the cache keeps, without the padding)."""
    x_pad, _, _, x_shape, _, padding, _, _, _ = cache
    xp = array_namespace(x_pad)
    h, w = x_shape[2], x_shape[3]
    return xp.permute_dims(x_pad[:, padding : padding + h, padding : padding + w, :], (0, 3, 1, 2))


def conv2d_jvp(cache: Cache, dx: Array | None = None, dw: Array | None = None, db: Array | None = None) -> Array | None:
    """Forward mode: the output tangent of a convolution, from its forward's cache and tangents
    dx: (N, C, H, W), dw: (F, C // groups, KH, KW), db: (F,) of the input and parameters (None: that one
    does not move). Returns dout: (N, F, H_out, W_out), or None when nothing moves.

    Convolution is bilinear in (x, w), so by the product rule dout = conv(dx, w) + conv(x, dw) + db: the
    forward op itself, run on the tangents with the same stride, padding and groups.
    """
    x_pad, w_col, w_shape, x_shape, stride, padding, groups, _, portable = cache
    xp = array_namespace(x_pad)
    dout = None
    if dx is not None:
        f, cg, kh, kw = w_shape
        # w, back from its columns (G, KH*KW*Cg, F/G): the inverse of `weight_columns`
        w = xp.reshape(xp.permute_dims(xp.reshape(w_col, (groups, kh, kw, cg, f // groups)), (0, 4, 3, 1, 2)), w_shape)
        dout = conv2d_forward(dx, w, db, stride, padding, groups, portable)[0]
        db = None
    if dw is not None:
        part = conv2d_forward(conv2d_input(cache), dw, db, stride, padding, groups, portable)[0]
        dout = part if dout is None else dout + part
    elif db is not None:  # only the bias moves: every output pixel of filter f moves by db[f]
        oh = conv_output_size(x_shape[2], w_shape[2], stride, padding)
        ow = conv_output_size(x_shape[3], w_shape[3], stride, padding)
        dout = zeros_like_on(x_pad, (x_shape[0], w_shape[0], oh, ow)) + xp.reshape(db, (1, w_shape[0], 1, 1))
    return dout


def _input_grad_by_offset(
    dout_flat: Array, w_col: Array, x_pad_shape: tuple[int, ...], kh: int, kw: int, stride: int
) -> Array:
    """d x_pad (N, Hp, Wp, C) from dout_flat (M, F) and w_col (K, F), for groups == 1.

    The same sum as col2im(dout_flat @ w_col^T), one kernel offset at a time: offset (i, j) saw the slice
    x_pad[:, i::stride, j::stride, :] through the weights w[:, :, i, j], so its share of the gradient,
    dout_flat @ w[:, :, i, j]^T, is one contiguous (M, C) block added back onto that slice. This never
    builds the (M, K) matrix of patch gradients (as large as `cols`) and adds whole rows at a time.
    """
    xp = array_namespace(dout_flat)
    n, hp, wp, c = x_pad_shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    w_offsets = xp.reshape(w_col, (kh, kw, c, w_col.shape[1]))  # rows of w_col are ordered (i, j, channel)
    dx_pad = zeros_like_on(dout_flat, x_pad_shape)
    fast = is_numpy_like(xp)
    share = empty_like_on(dout_flat, (dout_flat.shape[0], c)) if fast else None  # one (M, C) buffer for all offsets
    for i in range(kh):
        for j in range(kw):
            window = (
                slice(None),
                slice(i, i + stride * (oh - 1) + 1, stride),
                slice(j, j + stride * (ow - 1) + 1, stride),
                slice(None),
            )
            if not fast:
                dx_pad[window] += xp.reshape(dout_flat @ w_offsets[i, j, ...].mT, (n, oh, ow, c))
                continue
            matmul(dout_flat, w_offsets[i, j, ...].mT, out=share)  # (M, C)
            _add_into(dx_pad[window], xp.reshape(share, (n, oh, ow, c)))
    return dx_pad


# --- NumPy fast path: the same products, a cache-sized block of images at a time -------------------------
# Above, the patch matrix of a whole slice of the batch (up to WORKSPACE_BYTES) is written to memory and read
# back by the product, and each offset's input gradient, an (M, C) array, is written and read back again.
# On the CPU each of those passes costs about as much as the arithmetic. Here one block of images (its patch
# matrix about BLOCK_BYTES, so it stays in cache) is copied, multiplied, given its bias, and in backward
# also gives its share of dw and db and its input gradient, before the next block starts. Blocks of different
# images are independent, so the threads of `tinydgl.threads` take a run of blocks each; the blocks depend
# only on the shapes, and the per-block sums of dw and db are added in block order, so every bit of the
# result is the same at any thread count. Tests check this path against the one above.
BLOCK_BYTES = 2 * 2**20


def _image_blocks(n: int, rows_per_image: int, k: int, itemsize: int) -> list[slice]:
    """(start, stop) image ranges whose patch matrices are about BLOCK_BYTES (at least one image)."""
    per_image = max(rows_per_image * k * itemsize, 1)
    step = max(1, BLOCK_BYTES // per_image)
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def _forward_in_blocks(
    x_pad: Array, w_col: Array, b: Array | None, kh: int, kw: int, stride: int, oh: int, ow: int
) -> Array:
    """out_flat (M, F) = im2col(x_pad) @ w_col (+ b), a block of images at a time. x_pad: (N, Hp, Wp, C)."""
    xp = array_namespace(x_pad)
    n, c = x_pad.shape[0], x_pad.shape[3]
    rows, k, f = oh * ow, kh * kw * c, w_col.shape[1]
    windows = _im2col_strided(x_pad, kh, kw, stride, oh, ow)  # a view; each block copies its part
    out_flat = empty_like_on(x_pad, (n * rows, f))
    bias = None if b is None else xp.tile(b, (ow,))  # a bias row per row of W_out*F outputs, see conv2d_forward
    blocks = _image_blocks(n, rows, k, x_pad.itemsize)

    def block(i: int) -> None:
        s = blocks[i]
        cols = xp.reshape(windows[s], (-1, k))  # the copy im2col makes, one block at a time
        out = out_flat[s.start * rows : s.stop * rows]
        xp.matmul(cols, w_col, out=out)  # one BLAS call (single-threaded while tinydgl's threads run blocks)
        if bias is not None:
            out_rows = xp.reshape(out, (-1, ow * f))
            out_rows += bias

    for_each_block(block, len(blocks), x_pad.nbytes + out_flat.nbytes, products=True)
    return out_flat


def _backward_in_blocks(
    dout_flat: Array, x_pad: Array, w_col: Array, kh: int, kw: int, stride: int, compute_dx: bool, has_bias: bool
) -> tuple[Array | None, Array, Array | None]:
    """(dx_pad or None, dw_col (K, F), db or None) from dout_flat (M, F), a block of images at a time: each
    block rebuilds its patch matrix for dw, adds its column sums for db, and adds each kernel offset's input
    gradient (see `_input_grad_by_offset`) onto its own images of dx_pad."""
    xp = array_namespace(dout_flat)
    n, hp, wp, c = x_pad.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    rows, k, f = oh * ow, kh * kw * c, w_col.shape[1]
    windows = _im2col_strided(x_pad, kh, kw, stride, oh, ow)
    w_offsets = xp.reshape(w_col, (kh, kw, c, f))
    dx_pad = zeros_like_on(x_pad, tuple(x_pad.shape)) if compute_dx else None
    blocks = _image_blocks(n, rows, k, x_pad.itemsize)
    dw_parts: list[Array] = [None] * len(blocks)  # filled by block(i)
    db_parts: list[Array] = [None] * len(blocks)
    ones = xp.ones_like(dout_flat[: (blocks[0].stop - blocks[0].start) * rows, 0])

    def block(i: int) -> None:
        s = blocks[i]
        d = dout_flat[s.start * rows : s.stop * rows]  # (rows in the block, F)
        dw_parts[i] = xp.reshape(windows[s], (-1, k)).T @ d
        if has_bias:
            db_parts[i] = ones[: d.shape[0]] @ d
        if dx_pad is not None:  # compute_dx
            dx_block = dx_pad[s]
            for a in range(kh):
                for e in range(kw):
                    share = xp.reshape(d @ w_offsets[a, e].T, (s.stop - s.start, oh, ow, c))
                    dx_block[:, a : a + stride * (oh - 1) + 1 : stride, e : e + stride * (ow - 1) + 1 : stride, :] += (
                        share
                    )

    for_each_block(block, len(blocks), x_pad.nbytes + dout_flat.nbytes, products=True)
    dw_col, db = dw_parts[0], db_parts[0]
    for i in range(1, len(blocks)):  # in block order: the same sums at any thread count
        dw_col = dw_col + dw_parts[i]
        if has_bias:
            db = db + db_parts[i]
    return dx_pad, dw_col, db
