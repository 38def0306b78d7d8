"""Losses that return (loss, gradient): softmax cross-entropy and mean squared error.

A loss is a float64 scalar on the device it was computed on (`float64_scalar`): reading it on the host is a
sync on a GPU, so the training loop reads many steps' losses at once; on NumPy it is a `numpy.float64`,
a Python float.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array, arange_like, array_namespace


def float64_scalar(total: Array) -> Array:
    """A 0-d sum as a float64 scalar on its device, with no host sync: a 0-d CuPy array, or a `numpy.float64`
    (a Python float) on NumPy. Its bits are those of `float(total)`, so a loss computed from it, as
    `-float64_scalar(sum) / n`, equals the host arithmetic `-float(sum) / n` exactly."""
    xp = array_namespace(total)
    return total.astype(xp.float64) if hasattr(total, "astype") else xp.astype(total, xp.float64)


def softmax(logits: Array) -> Array:
    """logits: (N, C) -> probabilities (N, C). Subtracting the row max first keeps exp() from overflowing."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=1, keepdims=True)


def log_softmax(logits: Array) -> Array:
    """logits: (N, C) -> log-probabilities (N, C), computed stably as z - max - log(sum(exp(z - max)))."""
    xp = array_namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def one_hot(y: Array, num_classes: int, dtype: Any) -> Array:
    """y: (N,) integer labels -> (N, num_classes) one-hot rows of `dtype`, on y's device."""
    xp = array_namespace(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {tuple(y.shape)}.")
    return xp.astype(y[:, None] == arange_like(y, num_classes, dtype=y.dtype), dtype)


def softmax_cross_entropy(logits: Array, y: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """Mean cross-entropy of softmax(logits) against integer labels.

    logits: (N, C), y: (N,) ints in [0, C). With label smoothing s the target is (1 - s) * onehot + s / C,
    as in PyTorch. Returns (loss: float64 scalar, dlogits: (N, C)); dlogits = (softmax - target) / N.
    """
    xp = array_namespace(logits)
    if logits.ndim != 2 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"softmax_cross_entropy expects logits (N, C) and labels (N,); got {tuple(logits.shape)} and {tuple(y.shape)}."
        )
    n, num_classes = logits.shape
    # BEGIN SOLUTION a1-softmax-ce
    # hint: target = one_hot(y) (smoothed: (1-s)*onehot + s/C); loss = -mean over rows of sum(target * log_softmax)
    target = one_hot(y, num_classes, logits.dtype)
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / num_classes
    logp = log_softmax(logits)
    loss = -float64_scalar(xp.sum(target * logp)) / n
    dlogits = (xp.exp(logp) - target) / n
    # END SOLUTION
    return loss, dlogits


def mse_loss(pred: Array, target: Array) -> tuple[Array, Array]:
    """Mean over all elements of (pred - target)^2. Returns (loss: float64 scalar, dpred) with pred's shape."""
    xp = array_namespace(pred)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss shapes differ: pred {tuple(pred.shape)} vs target {tuple(target.shape)}.")
    # BEGIN SOLUTION a2-mse-loss
    # hint: the mean of (pred - target)**2 over all elements (a float64 scalar: float64_scalar) and its gradient
    diff = pred - target
    size = 1
    for s in pred.shape:
        size *= s
    return float64_scalar(xp.sum(diff * diff)) / size, (2.0 / size) * diff
    # END SOLUTION


def sigmoid_binary_cross_entropy(logits: Array, y: Array) -> tuple[Array, Array]:
    """Binary cross-entropy of sigmoid(logits) against one-hot targets, the mean over all N * C elements (as
    PyTorch's BCELoss after a sigmoid, the DRTP reference code's output loss).

    logits: (N, C), y: (N,) ints. Returns (loss: float64 scalar, dlogits = (sigmoid(logits) - onehot) / (N * C)).
    Computed from the logits, stably: max(z, 0) - z * t + log(1 + exp(-|z|)).
    """
    xp = array_namespace(logits)
    if logits.ndim != 2 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"sigmoid_binary_cross_entropy expects logits (N, C) and labels (N,); got "
            f"{tuple(logits.shape)} and {tuple(y.shape)}."
        )
    n, num_classes = logits.shape
    target = one_hot(y, num_classes, logits.dtype)
    elementwise = xp.maximum(logits, 0.0) - logits * target + xp.log(1.0 + xp.exp(-xp.abs(logits)))
    size = n * num_classes
    probability = 0.5 * (1.0 + xp.tanh(0.5 * logits))  # sigmoid, without overflow for large |z|
    return float64_scalar(xp.sum(elementwise)) / size, (probability - target) / size


def binary_cross_entropy_with_logits(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Mean binary cross-entropy of sigmoid(logits) against float targets in [0, 1] of the same shape (as
    PyTorch's BCEWithLogitsLoss; Forward-Forward's per-layer loss, with targets 1 for positive and 0 for
    negative samples). Stable for logits of any size: max(z, 0) - z * t + log(1 + exp(-|z|)).
    Returns (loss: float64 scalar, dlogits = (sigmoid(logits) - targets) / size)."""
    xp = array_namespace(logits, targets)
    if tuple(logits.shape) != tuple(targets.shape):
        raise ValueError(
            f"binary_cross_entropy_with_logits shapes differ: logits {tuple(logits.shape)} vs "
            f"targets {tuple(targets.shape)}."
        )
    size = 1
    for s in logits.shape:
        size *= s
    elementwise = xp.maximum(logits, 0.0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    probability = 0.5 * (1.0 + xp.tanh(0.5 * logits))  # sigmoid, without overflow for large |z|
    return float64_scalar(xp.sum(elementwise)) / size, (probability - targets) / size


# --- forward mode ------------------------------------------------------------------------------------------
# A loss is a scalar: its tangent along dlogits is the inner product of its gradient with dlogits.


def softmax_jvp(logits: Array, dlogits: Array) -> Array:
    """logits, dlogits: (N, C) -> the tangent of softmax(logits): p * (dlogits - <p, dlogits>) per row."""
    xp = array_namespace(logits)
    p = softmax(logits)
    return p * (dlogits - xp.sum(p * dlogits, axis=1, keepdims=True))


def log_softmax_jvp(logits: Array, dlogits: Array) -> Array:
    """logits, dlogits: (N, C) -> the tangent of log_softmax(logits): dlogits - <softmax, dlogits> per row."""
    xp = array_namespace(logits)
    return dlogits - xp.sum(softmax(logits) * dlogits, axis=1, keepdims=True)


def softmax_cross_entropy_jvp(
    logits: Array, y: Array, dlogits: Array, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """logits, dlogits: (N, C), y: (N,) -> (loss, dloss: float64 scalars on the device), the loss and its directional
    derivative along dlogits: -mean over rows of <target, log_softmax_jvp(logits, dlogits)>."""
    xp = array_namespace(logits)
    loss, rows = softmax_cross_entropy_row_jvp(logits, y, dlogits, label_smoothing)
    return loss, float64_scalar(xp.sum(rows))


def softmax_cross_entropy_row_jvp(
    logits: Array, y: Array, dlogits: Array, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """As `softmax_cross_entropy_jvp`, with the directional derivative left as its N terms, one per row:
    (loss: float, drows: (N,)), drows summing to dloss. Row n is the derivative of example n's share of the
    loss (activity perturbation uses them, one direction per example)."""
    xp = array_namespace(logits)
    # The loss is -mean_n <target_n, log_softmax(z_n)>; its derivative along dz is, row by row,
    # <dloss/dz_n, dz_n> with dloss/dz_n = (softmax(z_n) - target_n) / N, the loss's own gradient.
    loss, dloss_dlogits = softmax_cross_entropy(logits, y, label_smoothing)
    return loss, xp.sum(dloss_dlogits * dlogits, axis=1)


def mse_loss_jvp(pred: Array, target: Array, dpred: Array) -> tuple[Array, Array]:
    """pred, target, dpred: same shape -> (loss: float, dloss = mean of 2 (pred - target) * dpred)."""
    loss, dloss_dpred = mse_loss(pred, target)
    return loss, float64_scalar(array_namespace(pred).sum(dloss_dpred * dpred))


def sigmoid_binary_cross_entropy_jvp(logits: Array, y: Array, dlogits: Array) -> tuple[Array, Array]:
    """logits, dlogits: (N, C), y: (N,) -> (loss, dloss = <sigmoid(logits) - onehot, dlogits> / (N * C))."""
    loss, grad = sigmoid_binary_cross_entropy(logits, y)
    return loss, float64_scalar(array_namespace(logits).sum(grad * dlogits))


def binary_cross_entropy_with_logits_jvp(logits: Array, targets: Array, dlogits: Array) -> tuple[Array, Array]:
    """logits, targets, dlogits: same shape -> (loss, dloss = <sigmoid(logits) - targets, dlogits> / size)."""
    loss, grad = binary_cross_entropy_with_logits(logits, targets)
    return loss, float64_scalar(array_namespace(logits).sum(grad * dlogits))
