"""The similarity-matching loss of Nøkland & Eidnes, "Training neural networks with local error signals"
(ICML 2019; reference code anokland/local-loss, `similarity_matrix` and `loss_sup == 'sim'` in train.py).

A block's features should make two examples as similar as their labels are: the loss is the mean squared
difference between the examples' cosine-similarity matrix S(h) (N x N) and that of their one-hot labels.

    S(x): rows centred (each example minus its own mean over features), divided by 1e-8 + their length,
          S = xn @ xn^T clipped to [-1, 1]
    for feature maps (N, C, H, W) with C > 3 and H > 1, each channel is first summarised by its standard
    deviation over the spatial positions (unbiased, as torch.std), so S compares (N, C) vectors;
    other 4-D inputs are flattened.
"""

from __future__ import annotations

from ..backend import Array, array_namespace
from . import Cache
from .losses import float64_scalar, one_hot

EPS = 1e-8  # added to each row's length, as the reference code does


def similarity_matrix_forward(x: Array) -> tuple[Array, Cache]:
    """Adjusted cosine similarity of the rows of x. x: (N, D) or (N, C, H, W) -> S: (N, N), cache."""
    xp = array_namespace(x)
    n = x.shape[0]
    shape = tuple(x.shape)
    std_cache = None
    if x.ndim == 4 and x.shape[1] > 3 and x.shape[2] > 1:
        z = xp.reshape(x, (n, x.shape[1], -1))
        zc = z - xp.mean(z, axis=2, keepdims=True)
        std = xp.sqrt(xp.sum(zc * zc, axis=2) / (z.shape[2] - 1))
        std_cache = (zc, std)
        x = std
    else:
        x = xp.reshape(x, (n, -1))
    xc = x - xp.mean(x, axis=1, keepdims=True)
    length = xp.sqrt(xp.sum(xc * xc, axis=1, keepdims=True))
    xn = xc / (EPS + length)
    raw = xn @ xn.T
    inside = (raw >= -1.0) & (raw <= 1.0)  # the clip passes the gradient where it did not cut (as torch.clamp)
    return xp.clip(raw, -1.0, 1.0), (shape, std_cache, xc, length, xn, inside)


def similarity_matrix_backward(dS: Array, cache: Cache) -> Array:
    """dS: (N, N) -> dx with the input's shape."""
    xp = array_namespace(dS)
    shape, std_cache, xc, length, xn, inside = cache
    dS = xp.where(inside, dS, xp.zeros_like(dS))
    dxn = (dS + dS.T) @ xn
    # xn = xc / (eps + |xc|): d/dxc = dxn / (eps + |xc|) - xc (dxn . xc) / ((eps + |xc|)^2 |xc|)
    safe = xp.where(length > 0, length, xp.ones_like(length))
    radial = xp.sum(dxn * xc, axis=1, keepdims=True) / ((EPS + length) ** 2 * safe)
    dxc = dxn / (EPS + length) - xc * xp.where(length > 0, radial, xp.zeros_like(radial))
    dx = dxc - xp.mean(dxc, axis=1, keepdims=True)
    if std_cache is None:
        return xp.reshape(dx, shape)
    zc, std = std_cache
    # std = sqrt(sum(zc^2) / (P - 1)): d std / d z = zc / ((P - 1) std), zero where the channel is constant
    positions = zc.shape[2]
    scale = xp.where(std > 0, dx / ((positions - 1) * xp.where(std > 0, std, xp.ones_like(std))), xp.zeros_like(std))
    return xp.reshape(scale[:, :, None] * zc, shape)


def similarity_matrix_jvp(cache: Cache, dx: Array) -> Array:
    """Forward mode: dx, the input's tangent (x's shape) -> dS: (N, N), the tangent of S (the cache from forward).

    The same steps as forward, each by its derivative: the channel std (d std = <zc, dz> / ((P - 1) std)), the
    centring (linear), the division by the length (the tangent minus its radial part, scaled), and the product
    xn xn^T (product rule: dxn xn^T + xn dxn^T), where the clip did not cut.
    """
    xp = array_namespace(dx)
    shape, std_cache, xc, length, xn, inside = cache
    n = shape[0]
    if std_cache is None:
        dx = xp.reshape(dx, (n, -1))
    else:
        zc, std = std_cache
        dz = xp.reshape(dx, tuple(zc.shape))
        safe = xp.where(std > 0, std, xp.ones_like(std))
        dx = xp.where(std > 0, xp.sum(zc * dz, axis=2) / ((zc.shape[2] - 1) * safe), xp.zeros_like(std))
    dxc = dx - xp.mean(dx, axis=1, keepdims=True)
    safe = xp.where(length > 0, length, xp.ones_like(length))
    dlength = xp.where(length > 0, xp.sum(xc * dxc, axis=1, keepdims=True) / safe, xp.zeros_like(length))
    dxn = dxc / (EPS + length) - xc * (dlength / (EPS + length) ** 2)
    draw = dxn @ xn.T
    draw = draw + draw.T
    return xp.where(inside, draw, xp.zeros_like(draw))


def similarity_matching_loss(h: Array, y: Array, num_classes: int) -> tuple[Array, Array]:
    """MSE between S(h) and S(onehot(y)), the mean over the N x N entries (as F.mse_loss).

    h: (N, D) or (N, C, H, W) features, y: (N,) ints. Returns (loss: float, dh with h's shape).
    """
    xp = array_namespace(h)
    S, cache = similarity_matrix_forward(h)
    target, _ = similarity_matrix_forward(one_hot(y, num_classes, h.dtype))
    diff = S - target
    count = diff.shape[0] * diff.shape[1]
    return float64_scalar(xp.sum(diff * diff)) / count, similarity_matrix_backward((2.0 / count) * diff, cache)
