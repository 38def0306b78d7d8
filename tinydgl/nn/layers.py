"""The layer library: each layer wraps one functional op (tinydgl.functional) and owns its parameters.

Initialisation follows PyTorch's defaults (weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BN
gamma = 1, beta = 0), so runs can be compared with the papers' official PyTorch code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .. import functional as F
from ..backend import Array, default_rng
from ..ops import Cache
from ..ops.pool import Size
from .module import Module, Parameter, init_constant, init_uniform


def tangent_of(parameter: Parameter | None) -> Array | None:
    """A parameter's forward-mode tangent, or None for a missing parameter (a layer without bias)."""
    return None if parameter is None else parameter.tangent


class Linear(Module):
    """y = x @ W + b. x: (N, in_features) -> (N, out_features); W is stored (in_features, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rng: np.random.Generator | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        rng = rng if rng is not None else default_rng()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(init_uniform(rng, (in_features, out_features), bound, dtype))
        self.bias = Parameter(init_uniform(rng, (out_features,), bound, dtype)) if bias else None
        self.in_features, self.out_features = in_features, out_features
        # None: the input gradient goes through W (backprop). A fixed array of W's shape: through it instead
        # (feedback alignment, trainers/feedback_alignment.py).
        self.feedback: Array | None = None

    def forward(self, x: Array) -> Array:
        out, cache = F.linear_forward(x, self.weight.data, self.bias.data if self.bias else None)
        self._remember(cache)
        return out

    def jvp(self, dx: Array | None) -> Array | None:
        return F.linear_jvp(self._peek(), dx, self.weight.tangent, tangent_of(self.bias))

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        dx, self.weight.grad, db = F.linear_backward(
            dout, self._recall(), compute_dx=need_input_grad, feedback=self.feedback
        )
        if self.bias is not None:
            self.bias.grad = db
        return dx

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None})"


class Conv2d(Module):
    """2-D convolution, NCHW. x: (N, C_in, H, W) -> (N, C_out, H_out, W_out); weight (C_out, C_in/groups, k, k)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
        rng: np.random.Generator | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}.")
        rng = rng if rng is not None else default_rng()
        k = kernel_size
        fan_in = (in_channels // groups) * k * k
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(init_uniform(rng, (out_channels, in_channels // groups, k, k), bound, dtype))
        self.bias = Parameter(init_uniform(rng, (out_channels,), bound, dtype)) if bias else None
        self.stride, self.padding, self.groups = stride, padding, groups
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.feedback: Array | None = None  # as in Linear: a fixed array of the weight's shape for feedback alignment

    def forward(self, x: Array) -> Array:
        bias = self.bias.data if self.bias is not None else None
        out, cache = F.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding, self.groups)
        self._remember(cache)
        return out

    def jvp(self, dx: Array | None) -> Array | None:
        return F.conv2d_jvp(self._peek(), dx, self.weight.tangent, tangent_of(self.bias))

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        dx, self.weight.grad, db = F.conv2d_backward(
            dout, self._recall(), compute_dx=need_input_grad, feedback=self.feedback
        )
        if self.bias is not None:
            self.bias.grad = db
        return dx

    def __repr__(self) -> str:
        extra = f", groups={self.groups}" if self.groups != 1 else ""
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}{extra}, bias={self.bias is not None})"
        )


class _BatchNorm(Module):
    _ndim: int  # of the input: 2 (BatchNorm1d) or 4 (BatchNorm2d)

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, dtype: str = "float32") -> None:
        super().__init__()
        self.weight = Parameter(init_constant((num_features,), 1.0, dtype))  # gamma
        self.bias = Parameter(init_constant((num_features,), 0.0, dtype))  # beta
        self.buffers = {
            "running_mean": init_constant((num_features,), 0.0, dtype),
            "running_var": init_constant((num_features,), 1.0, dtype),
        }
        self.num_features, self.momentum, self.eps = num_features, momentum, eps

    def forward(self, x: Array) -> Array:
        if x.ndim != self._ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got input of shape {tuple(x.shape)}.")
        out, cache = F.batchnorm_forward(
            x,
            self.weight.data,
            self.bias.data,
            self.buffers["running_mean"],
            self.buffers["running_var"],
            self.training,
            self.momentum,
            self.eps,
        )
        self._remember(cache)
        return out

    def jvp(self, dx: Array | None) -> Array | None:
        return F.batchnorm_jvp(self._peek(), dx, self.weight.tangent, self.bias.tangent)

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        dx, self.weight.grad, self.bias.grad = F.batchnorm_backward(dout, self._recall())
        return dx

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_features})"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) inputs: per-feature statistics over the batch."""

    _ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs: per-channel statistics over batch and space."""

    _ndim = 4


class _Stateless(Module):
    """A layer without parameters: forward/backward/jvp are one functional op's."""

    _backward: Callable[[Array, Cache], Array]  # the op's backward(dout, cache)
    _jvp: Callable[[Cache, Array], Array]  # the op's jvp(cache, dx)

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        cache = self._recall()
        return self._backward(dout, cache) if need_input_grad else None

    def jvp(self, dx: Array | None) -> Array | None:
        cache = self._peek()
        return None if dx is None else self._jvp(cache, dx)


class ReLU(_Stateless):
    def forward(self, x: Array) -> Array:
        out, cache = F.relu_forward(x)
        self._remember(cache)
        return out

    _backward = staticmethod(F.relu_backward)
    _jvp = staticmethod(F.relu_jvp)

    def __repr__(self) -> str:
        return "ReLU()"


class FullGradReLU(Module):
    """max(x, 0) forward; backward passes the incoming gradient unchanged, for every unit (the
    Forward-Forward reference's `ReLU_full_grad`: a straight-through estimator, the derivative taken as 1
    even where the unit is off)."""

    def forward(self, x: Array) -> Array:
        out, _ = F.relu_forward(x)
        self._remember(True)  # nothing to keep but the fact that a forward ran
        return out

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        self._recall()
        return dout if need_input_grad else None

    def __repr__(self) -> str:
        return "FullGradReLU()"


class Tanh(_Stateless):
    def forward(self, x: Array) -> Array:
        out, cache = F.tanh_forward(x)
        self._remember(cache)
        return out

    _backward = staticmethod(F.tanh_backward)
    _jvp = staticmethod(F.tanh_jvp)

    def __repr__(self) -> str:
        return "Tanh()"


class LeakyReLU(_Stateless):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Array) -> Array:
        out, cache = F.leaky_relu_forward(x, self.negative_slope)
        self._remember(cache)
        return out

    _backward = staticmethod(F.leaky_relu_backward)
    _jvp = staticmethod(F.leaky_relu_jvp)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


class MaxPool2d(_Stateless):
    def __init__(self, kernel_size: Size, stride: Size | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Array) -> Array:
        out, cache = F.maxpool2d_forward(x, self.kernel_size, self.stride)
        self._remember(cache)
        return out

    _backward = staticmethod(F.maxpool2d_backward)
    _jvp = staticmethod(F.maxpool2d_jvp)

    def __repr__(self) -> str:
        return f"MaxPool2d({self.kernel_size}, stride={self.stride or self.kernel_size})"


class AvgPool2d(_Stateless):
    def __init__(self, kernel_size: Size, stride: Size | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Array) -> Array:
        out, cache = F.avgpool2d_forward(x, self.kernel_size, self.stride)
        self._remember(cache)
        return out

    _backward = staticmethod(F.avgpool2d_backward)
    _jvp = staticmethod(F.avgpool2d_jvp)

    def __repr__(self) -> str:
        return f"AvgPool2d({self.kernel_size}, stride={self.stride or self.kernel_size})"


class AdaptiveAvgPool2d(_Stateless):
    def __init__(self, output_size: Size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Array) -> Array:
        out, cache = F.adaptive_avgpool2d_forward(x, self.output_size)
        self._remember(cache)
        return out

    _backward = staticmethod(F.adaptive_avgpool2d_backward)
    _jvp = staticmethod(F.adaptive_avgpool2d_jvp)

    def __repr__(self) -> str:
        return f"AdaptiveAvgPool2d({self.output_size})"


class Flatten(_Stateless):
    def forward(self, x: Array) -> Array:
        out, cache = F.flatten_forward(x)
        self._remember(cache)
        return out

    _backward = staticmethod(F.flatten_backward)
    _jvp = staticmethod(lambda cache, dx: F.flatten_jvp(dx))

    def __repr__(self) -> str:
        return "Flatten()"


class Dropout(_Stateless):
    """Inverted dropout with its own seeded host generator (part of the checkpointed state)."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.p = p
        self.rng = rng if rng is not None else default_rng()

    def forward(self, x: Array) -> Array:
        out, cache = F.dropout_forward(x, self.p, self.training, self.rng)
        self._remember(cache)
        return out

    _backward = staticmethod(F.dropout_backward)
    _jvp = staticmethod(F.dropout_jvp)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
