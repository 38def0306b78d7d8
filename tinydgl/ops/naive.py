"""Naive loop versions of convolution and pooling: slow, obvious, and the reference the fast ops are tested
against. Read these first (lesson 3); they are written for NumPy arrays and small inputs only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import Cache


def conv2d_forward_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1, padding: int = 0, groups: int = 1
) -> tuple[np.ndarray, Cache]:
    """x: (N, C, H, W), w: (F, C // groups, KH, KW), b: (F,) or None -> out: (N, F, H_out, W_out), cache."""
    n, c, h, w_in = x.shape
    f, cg, kh, kw = w.shape
    fg = f // groups
    # BEGIN SOLUTION a1-conv-naive-forward
    # hint: pad x; out[i, k, r, s] = sum(patch * w[k]) + b[k]; filter k sees the channels of group k // fg
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w_in + 2 * padding - kw) // stride + 1
    out = np.zeros((n, f, oh, ow), dtype=x.dtype)
    for i in range(n):
        for k in range(f):
            g = k // fg  # filter k sees only the channels of its group
            for r in range(oh):
                for s in range(ow):
                    patch = x_pad[i, g * cg : (g + 1) * cg, r * stride : r * stride + kh, s * stride : s * stride + kw]
                    out[i, k, r, s] = np.sum(patch * w[k]) + (b[k] if b is not None else 0.0)
    # END SOLUTION
    return out, (x, w, b, stride, padding, groups)


def conv2d_backward_naive(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """dout: (N, F, H_out, W_out) -> dx, dw, db, each output pixel's gradient scattered back to its patch."""
    x, w, b, stride, padding, groups = cache
    n, f, oh, ow = dout.shape
    _, cg, kh, kw = w.shape
    fg = f // groups
    # BEGIN SOLUTION a1-conv-naive-backward
    # hint: loop as in forward; each dout[i, k, r, s] adds dout * patch to dw[k] and dout * w[k] to the patch of dx
    # hint: (work on the padded x, then crop); db sums dout over everything but the filter axis
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    for i in range(n):
        for k in range(f):
            g = k // fg
            for r in range(oh):
                for s in range(ow):
                    rows = slice(r * stride, r * stride + kh)
                    cols = slice(s * stride, s * stride + kw)
                    chans = slice(g * cg, (g + 1) * cg)
                    dw[k] += dout[i, k, r, s] * x_pad[i, chans, rows, cols]
                    dx_pad[i, chans, rows, cols] += dout[i, k, r, s] * w[k]
    h, w_in = x.shape[2], x.shape[3]
    dx = dx_pad[:, :, padding : padding + h, padding : padding + w_in]
    db = dout.sum(axis=(0, 2, 3)) if b is not None else None
    # END SOLUTION
    return dx, dw, db


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> Iterator[tuple[int, int, tuple[slice, slice]]]:
    n, c, h, w = x.shape
    for r in range((h - kh) // sh + 1):
        for s in range((w - kw) // sw + 1):
            yield r, s, (slice(r * sh, r * sh + kh), slice(s * sw, s * sw + kw))


def maxpool2d_forward_naive(x: np.ndarray, kernel_size: int, stride: int | None = None) -> tuple[np.ndarray, Cache]:
    """x: (N, C, H, W) -> out: (N, C, H_out, W_out), one window at a time."""
    stride = stride or kernel_size
    n, c, h, w = x.shape
    out = np.zeros((n, c, (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1), dtype=x.dtype)
    for r, s, (rows, cols) in _windows(x, kernel_size, kernel_size, stride, stride):
        out[:, :, r, s] = x[:, :, rows, cols].max(axis=(2, 3))
    return out, (x, kernel_size, stride)


def maxpool2d_backward_naive(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """dout -> dx: each window's gradient goes to the first position of its maximum (row-major order)."""
    x, k, stride = cache
    dx = np.zeros_like(x)
    # BEGIN SOLUTION a1-maxpool-naive-backward
    # hint: for every window (see _windows), image and channel, add dout to the position of the window's first
    # hint: maximum (np.argmax, np.unravel_index); windows may overlap
    for r, s, (rows, cols) in _windows(x, k, k, stride, stride):
        for i in range(x.shape[0]):
            for ch in range(x.shape[1]):
                window = x[i, ch, rows, cols]
                a, bb = np.unravel_index(np.argmax(window), window.shape)
                dx[i, ch, rows.start + a, cols.start + bb] += dout[i, ch, r, s]
    # END SOLUTION
    return dx


def avgpool2d_forward_naive(x: np.ndarray, kernel_size: int, stride: int | None = None) -> tuple[np.ndarray, Cache]:
    """x: (N, C, H, W) -> out: (N, C, H_out, W_out), the mean of each window."""
    stride = stride or kernel_size
    n, c, h, w = x.shape
    out = np.zeros((n, c, (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1), dtype=x.dtype)
    for r, s, (rows, cols) in _windows(x, kernel_size, kernel_size, stride, stride):
        out[:, :, r, s] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out, (x.shape, kernel_size, stride)


def avgpool2d_backward_naive(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """dout -> dx: each window's gradient shared equally among its k*k inputs."""
    x_shape, k, stride = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for r, s, (rows, cols) in _windows(dx, k, k, stride, stride):
        dx[:, :, rows, cols] += dout[:, :, r : r + 1, s : s + 1] / (k * k)
    return dx


def adaptive_avgpool2d_forward_naive(x: np.ndarray, output_size: int | tuple[int, int]) -> np.ndarray:
    """x: (N, C, H, W) -> out: (N, C, oh, ow); cell (i, j) averages rows [floor(i*H/oh), ceil((i+1)*H/oh))
    and the same rule for columns (PyTorch's adaptive pooling)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            r0, r1 = int(np.floor(i * h / oh)), int(np.ceil((i + 1) * h / oh))
            c0, c1 = int(np.floor(j * w / ow)), int(np.ceil((j + 1) * w / ow))
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out
