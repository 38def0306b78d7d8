"""Layers that local losses are built from: L2 normalisation, a projection on a fixed matrix, scalings.

LLS (tinydgl.trainers.lls) assembles its local classifier from these plus the ordinary pooling layers:

    AdaptiveAvgPool2d(p) -> Flatten -> L2Normalize -> FixedLinear(basis) [-> ClassScale m | Linear M] -> Scale(1/T)
"""

from __future__ import annotations

from .. import functional as F
from ..backend import Array, array_namespace
from .module import Module, Parameter


class L2Normalize(Module):
    """Each row of (N, D) scaled to unit length (see F.l2_normalize_forward)."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Array) -> Array:
        out, cache = F.l2_normalize_forward(x, self.eps)
        self._remember(cache)
        return out

    def jvp(self, dx: Array | None) -> Array | None:
        cache = self._peek()
        return None if dx is None else F.l2_normalize_jvp(cache, dx)

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        cache = self._recall()
        return F.l2_normalize_backward(dout, cache) if need_input_grad else None

    def __repr__(self) -> str:
        return "L2Normalize()"


class LengthNormalize(Module):
    """Each row of (N, D) divided by its root mean square plus eps: Forward-Forward's length normalisation
    (see F.length_normalize_forward), which passes on only the direction of a layer's activity."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Array) -> Array:
        out, cache = F.length_normalize_forward(x, self.eps)
        self._remember(cache)
        return out

    def jvp(self, dx: Array | None) -> Array | None:
        cache = self._peek()
        return None if dx is None else F.length_normalize_jvp(cache, dx)

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        cache = self._recall()
        return F.length_normalize_backward(dout, cache) if need_input_grad else None

    def __repr__(self) -> str:
        return "LengthNormalize()"


class FixedLinear(Module):
    """out = x @ matrix.T with a fixed (never trained) matrix of shape (out_features, in_features).

    The matrix is a buffer, not a parameter: no optimizer sees it, and it is built once, not per step.
    """

    def __init__(self, matrix: Array) -> None:
        super().__init__()
        self.buffers = {"matrix": matrix}

    def forward(self, x: Array) -> Array:
        return x @ self.buffers["matrix"].T

    def jvp(self, dx: Array | None) -> Array | None:
        return None if dx is None else self.forward(dx)  # linear in x: the forward of the tangent

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        return dout @ self.buffers["matrix"] if need_input_grad else None

    def __repr__(self) -> str:
        rows, cols = self.buffers["matrix"].shape
        return f"FixedLinear({cols} -> {rows}, fixed)"


class PooledLinear(Module):
    """out = x @ (weight @ pool).T: a learnable (out_features, width) matrix whose columns are average-pooled
    to x's in_features by a fixed (width, in_features) matrix `pool` (the official LocalLosses head draws
    its classifier at one width for blocks of several sizes). With width == in_features, pool = I and this
    is a plain Linear without bias. x: (N, in_features) -> (N, out_features)."""

    def __init__(self, weight: Array, pool: Array) -> None:
        super().__init__()
        self.weight = Parameter(weight)
        self.buffers = {"pool": pool}

    def forward(self, x: Array) -> Array:
        effective = self.weight.data @ self.buffers["pool"]  # (out, in)
        self._remember((x, effective))
        return x @ effective.T

    def jvp(self, dx: Array | None) -> Array | None:
        x, effective = self._peek()
        dout = None if dx is None else dx @ effective.T
        if self.weight.tangent is not None:  # product rule: x @ (dweight @ pool).T
            part = x @ (self.weight.tangent @ self.buffers["pool"]).T
            dout = part if dout is None else dout + part
        return dout

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        x, effective = self._recall()
        self.weight.grad = (dout.T @ x) @ self.buffers["pool"].T
        return dout @ effective if need_input_grad else None

    def __repr__(self) -> str:
        rows, cols = self.weight.shape
        return f"PooledLinear({self.buffers['pool'].shape[1]} -> {rows}, drawn {cols} wide)"


class Scale(Module):
    """out = factor * x for a constant factor (e.g. 1 / temperature)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: Array) -> Array:
        return x * self.factor

    def jvp(self, dx: Array | None) -> Array | None:
        return None if dx is None else dx * self.factor

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        return dout * self.factor if need_input_grad else None

    def __repr__(self) -> str:
        return f"Scale({self.factor:g})"


class ClassScale(Module):
    """A learnable scale per output column: out = x * m, x: (N, K), m: (K,)."""

    def __init__(self, m: Array) -> None:
        super().__init__()
        self.m = Parameter(m)

    def forward(self, x: Array) -> Array:
        self._remember(x)
        return x * self.m.data

    def jvp(self, dx: Array | None) -> Array | None:
        x = self._peek()
        dout = None if dx is None else dx * self.m.data
        if self.m.tangent is not None:  # product rule: x * dm
            dout = x * self.m.tangent if dout is None else dout + x * self.m.tangent
        return dout

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        xp = array_namespace(dout)
        self.m.grad = xp.sum(dout * self._recall(), axis=0)
        return dout * self.m.data if need_input_grad else None

    def __repr__(self) -> str:
        return f"ClassScale({self.m.shape[0]})"
