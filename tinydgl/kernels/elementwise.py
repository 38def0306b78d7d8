"""The optimizers' updates as one fused CuPy kernel each: one launch updates a parameter and all its state
(and batch norm, max pooling and LeakyReLU: one launch per pass).

    fused_update("adam", xp, g, step_size, ..., p, m, v)   # p, m, v are updated in place, on the GPU

The readable form (tinydgl/optim.py, what NumPy runs) is 13 array calls per Adam parameter, each a launch
on CuPy. Each kernel is written twice in `KERNELS`: `operation`, the CUDA C body CuPy compiles, and `twin`,
the same arithmetic on NumPy that the CPU stand-in for CuPy runs (`PYTHON_TWINS`). **The CUDA source is only
compiled on a real GPU: it has not run yet.** TINYDGL_FUSED_KERNELS=0 turns the fused updates off.

Design notes: docs/design/kernels.md, "The optimizers, batch norm and pooling as fused CuPy kernels".
"""

import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FusedKernel:
    name: str
    in_params: str
    out_params: str
    operation: str
    twin: Callable  # twin(*inputs, *outputs) -> the outputs' new values, in out_params order


def _adam_twin(g, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, root_correction, eps, l2, shrink, p, m, v):
    p = p * shrink
    grad = g + l2 * p
    m = beta1 * m + one_minus_beta1 * grad
    v = beta2 * v + one_minus_beta2 * (grad * grad)
    p = p - step_size * (m / (np.sqrt(v) / root_correction + eps))
    return p, m, v


def _sgd_twin(g, lr, weight_decay, p):
    return (p - lr * (g + weight_decay * p),)


def _sgd_momentum_twin(g, lr, weight_decay, momentum, nesterov, p, v):
    grad = g + weight_decay * p
    v = momentum * v + grad
    p = p - lr * (grad + momentum * v if nesterov else v)
    return p, v


KERNELS = {
    kernel.name: kernel
    for kernel in [
        # Adam and AdamW (optim.Adam._update): l2 = Adam's weight decay added to the gradient (0 for AdamW),
        # shrink = AdamW's decoupled decay 1 - lr * weight_decay (1 for Adam). Bias corrections are folded into
        # step_size = lr / (1 - beta1**t) and root_correction = sqrt(1 - beta2**t), computed on the host.
        FusedKernel(
            "tinydgl_adam",
            "T g, T step_size, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T root_correction, T eps, "
            "T l2, T shrink",
            "T p, T m, T v",
            """
        p = p * shrink;
        T grad = g + l2 * p;
        m = beta1 * m + one_minus_beta1 * grad;
        v = beta2 * v + one_minus_beta2 * (grad * grad);
        p = p - step_size * (m / (sqrt(v) / root_correction + eps));
        """,
            _adam_twin,
        ),
        # SGD without momentum: p -= lr * (g + weight_decay * p)
        FusedKernel(
            "tinydgl_sgd", "T g, T lr, T weight_decay", "T p", "p = p - lr * (g + weight_decay * p);", _sgd_twin
        ),
        # SGD with momentum, Nesterov's (NAG) when nesterov is 1. v starts at zero, so the first step's
        # v = momentum * 0 + g = g, as the readable form's.
        FusedKernel(
            "tinydgl_sgd_momentum",
            "T g, T lr, T weight_decay, T momentum, T nesterov",
            "T p, T v",
            """
        T grad = g + weight_decay * p;
        v = momentum * v + grad;
        p = p - lr * (nesterov != 0 ? grad + momentum * v : v);
        """,
            _sgd_momentum_twin,
        ),
    ]
}


def _running_stats_twin(mean, var, momentum, one_minus_momentum, unbias, running_mean, running_var):
    return (
        one_minus_momentum * running_mean + momentum * mean,
        one_minus_momentum * running_var + momentum * var * unbias,
    )


KERNELS["tinydgl_running_stats"] = FusedKernel(
    # batch norm's running statistics (ops/norm.py batchnorm_forward), both in one launch instead of nine:
    # new = (1 - momentum) * old + momentum * batch, the variance unbiased by count / (count - 1)
    "tinydgl_running_stats",
    "T mean, T var, T momentum, T one_minus_momentum, T unbias",
    "T running_mean, T running_var",
    """
    running_mean = one_minus_momentum * running_mean + momentum * mean;
    running_var = one_minus_momentum * running_var + momentum * var * unbias;
    """,
    _running_stats_twin,
)


# Batch norm over rows (ops/norm.py): `rows` is (M, W*C), channels-last, so element i belongs to channel
# i % channels (CuPy's `i` is the element's index in the output, row-major); per-channel vectors are `raw`
# (read at any index) instead of tiled W times, which saves a launch per vector.
def _channel_of(x, channels):
    """The channel of each element of rows `x`: what `i % channels` is in the CUDA source."""
    return np.arange(x.size).reshape(x.shape) % channels


def _bn_center_twin(x, mean, channels, y):
    return (x - mean[_channel_of(x, channels)],)


def _bn_scale_shift_twin(x, scale, shift, channels, y):
    c = _channel_of(x, channels)
    return (x * scale[c] + shift[c],)


def _bn_dx_twin(dout, centered, inv_std, dgamma, dbeta, scale, count, channels, dx):
    c = _channel_of(dout, channels)
    return ((centered * (-inv_std[c] * dgamma[c] / count) + dout - dbeta[c] / count) * scale[c],)


for _kernel in [
    FusedKernel(
        "tinydgl_bn_center", "T x, raw T mean, int32 channels", "T y", "y = x - mean[i % channels];", _bn_center_twin
    ),
    FusedKernel(
        "tinydgl_bn_scale_shift",
        "T x, raw T scale, raw T shift, int32 channels",
        "T y",
        "const int c = i % channels; y = x * scale[c] + shift[c];",
        _bn_scale_shift_twin,
    ),
    # training-mode dx = scale * (dout - mean(dout) - x_hat * mean(dout * x_hat)), per channel
    # mean(dout) = dbeta / count and x_hat * mean(dout * x_hat) = centered * inv_std * dgamma / count
    FusedKernel(
        "tinydgl_bn_dx",
        "T dout, T centered, raw T inv_std, raw T dgamma, raw T dbeta, raw T scale, T count, int32 channels",
        "T dx",
        """
        const int c = i % channels;
        dx = (centered * (-inv_std[c] * dgamma[c] / count) + dout - dbeta[c] / count) * scale[c];
        """,
        _bn_dx_twin,
    ),
]:
    KERNELS[_kernel.name] = _kernel


# Max pooling (ops/pool.py), channels-last windows: one launch per window offset k = i * kw + j (was five),
# the running max `out` and the winning offset `winner` updated in place; and backward, one launch per
# offset writing dout where that offset won (was four). `W` is the winners' integer type (int8 or int32).
def _maxpool_step_twin(candidate, k, out, winner):
    better = candidate > out  # strict: an earlier offset keeps ties
    return np.maximum(out, candidate), np.maximum(winner, better.astype(winner.dtype) * k)


def _maxpool_share_twin(dout, winner, k, dx):
    return ((winner == k).astype(dout.dtype) * dout,)


for _kernel in [
    FusedKernel(
        "tinydgl_maxpool_step",
        "T candidate, int32 k",
        "T out, W winner",
        """
                const bool better = candidate > out;
                if (better) winner = k;
                if (better || candidate != candidate) out = candidate;  // NaN wins, as in maximum()
                """,
        _maxpool_step_twin,
    ),
    FusedKernel(
        "tinydgl_maxpool_share",
        "T dout, W winner, int32 k",
        "T dx",
        "dx = (winner == k ? (T)1 : (T)0) * dout;",
        _maxpool_share_twin,
    ),
]:
    KERNELS[_kernel.name] = _kernel


# LeakyReLU with 0 <= slope <= 1 (ops/activation.py): out = max(x, slope * x) and the mask x > 0 in one
# launch (was three); backward dx = (1 if x > 0 else slope) * dout in one (was three).
def _leaky_relu_twin(x, slope, out, positive):
    return np.maximum(x, x * slope), x > 0


def _leaky_relu_backward_twin(dout, positive, slope, dx):
    return (np.maximum(positive.astype(dout.dtype), slope) * dout,)


for _kernel in [
    FusedKernel(
        "tinydgl_leaky_relu",
        "T x, T slope",
        "T out, bool positive",
        """
                const T ax = x * slope;
                positive = x > 0;
                out = (x != x || x >= ax) ? x : ax;  // max(x, slope * x), NaN kept as maximum() keeps it
                """,
        _leaky_relu_twin,
    ),
    FusedKernel(
        "tinydgl_leaky_relu_backward",
        "T dout, bool positive, T slope",
        "T dx",
        "dx = (positive ? (T)1 : slope) * dout;",
        _leaky_relu_backward_twin,
    ),
]:
    KERNELS[_kernel.name] = _kernel

PYTHON_TWINS = {name: kernel.twin for name, kernel in KERNELS.items()}

_compiled = weakref.WeakKeyDictionary()  # namespace -> {kernel name: its ElementwiseKernel} (compiled on first call)


def fused_update(name, xp, *args):
    """Run kernel `name` (without its "tinydgl_" prefix) of `KERNELS` on CuPy namespace `xp`: `args` are
    its inputs then its outputs, in the order of in_params and out_params; the outputs are updated in place."""
    kernel = KERNELS[f"tinydgl_{name}"]
    kernels = _compiled.setdefault(xp, {})
    if kernel.name not in kernels:
        kernels[kernel.name] = xp.ElementwiseKernel(kernel.in_params, kernel.out_params, kernel.operation, kernel.name)
    kernels[kernel.name](*args)


def fused_for(xp, *arrays):
    """Whether the layers' fused kernels apply to `arrays`: CuPy with fusion on, and one float dtype among
    them (a kernel's `T` is one type; mixed dtypes take the readable form)."""
    return has_fused_updates(xp) and len({a.dtype for a in arrays}) == 1


def has_fused_updates(xp):
    """True when `xp` is CuPy (it has ElementwiseKernel) and TINYDGL_FUSED_KERNELS is not 0."""
    from . import fused_enabled

    return getattr(xp, "__name__", "") == "cupy" and hasattr(xp, "ElementwiseKernel") and fused_enabled()
