"""Layer objects: `Parameter`, the `Module` base class and `Sequential`.

A module wraps functional ops and keeps what they need between passes:

    out = layer.forward(x)      # stores the op's cache
    dx = layer.backward(dout)   # fills each parameter's .grad, returns the input gradient
    dout = layer.jvp(dx)        # forward mode, between the two: the output's tangent for the input's
                                # tangent dx and each parameter's .tangent (trainers/forward_gradient.py)

`backward` takes `dout` from *anywhere*: the layer above (backprop), a synthetic-gradient model (DNI),
an auxiliary head (DGL) or a local loss (LLS). That is what lets trainers decide where gradients come from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import Array, Backend, asarray, get_backend, to_backend, to_numpy


class Parameter:
    """A trainable array, its gradient (same shape; None until a backward pass) and its tangent: the
    direction it moves in for a forward-mode pass (`Module.jvp`; None: it does not move)."""

    def __init__(self, data: Array) -> None:
        self.data = data
        self.grad: Array | None = None
        self.tangent: Array | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: parameters, buffers (non-trained state such as BN running statistics), children.

    Subclasses set `self.<name> = Parameter(...)` / register buffers in `self.buffers`, and implement
    `forward(x)` and `backward(dout, need_input_grad=True)`.
    """

    def __init__(self) -> None:
        self.training = True
        self.buffers: dict = {}

    # --- the two passes -------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        """Store parameter gradients; return dx, or None when `need_input_grad` is False."""
        raise NotImplementedError

    def jvp(self, dx: Array | None) -> Array | None:
        """Forward mode, after `forward` in training mode: the output's tangent for the input's tangent dx
        (x's shape; None: the input does not move) and each parameter's `.tangent`. Reads the cache forward
        kept and leaves it for a later backward (so one forward serves many directions). Returns None when
        nothing moves."""
        raise NotImplementedError(f"{type(self).__name__} has no forward-mode derivative (jvp) yet.")

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def _remember(self, cache: Any) -> None:
        """Keep what backward needs: in training mode only, so evaluation holds no activations."""
        self._cache = cache if self.training else None

    def _recall(self) -> Any:
        """Hand the cache to backward and drop it: a block's activations are freed as soon as it has run
        backward (this is what lets local learning hold one block's activations at a time)."""
        cache, self._cache = getattr(self, "_cache", None), None
        if cache is None:
            raise RuntimeError(
                f"{self!r}.backward() needs a forward pass in training mode first (and runs once per forward)."
            )
        return cache

    def _peek(self) -> Any:
        """The cache, for a forward-mode pass, without dropping it (backward may still follow)."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{self!r}.jvp() needs a forward pass in training mode first, and runs before backward.")
        return cache

    def forget(self) -> None:
        """Drop any stored forward cache (here and in children) without running backward."""
        self._cache = None
        for child in self.children():
            child.forget()

    # --- structure ------------------------------------------------------------------------------
    def children(self) -> list[Module]:
        return []

    def own_parameters(self) -> dict[str, Parameter]:
        return {k: v for k, v in vars(self).items() if isinstance(v, Parameter)}

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter) for this module and its children, in a fixed order."""
        for name, p in self.own_parameters().items():
            yield prefix + name, p
        for i, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{i}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Array]]:
        for name, b in self.buffers.items():
            yield prefix + name, b
        for i, child in enumerate(self.children()):
            yield from child.named_buffers(f"{prefix}{i}.")

    def num_parameters(self) -> int:
        return int(sum(np.prod(p.shape) for p in self.parameters()))

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # --- saving and moving ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as host NumPy arrays, keyed by dotted name ("0.1.weight")."""
        state = {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: to_numpy(b).copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> Module:
        """Copy arrays from `state` (as returned by `state_dict`) into this module, on its backend.

        Raises a KeyError naming missing or unexpected keys and a ValueError on a shape mismatch.
        """
        params = dict(self.named_parameters())
        buffer_owners: dict[str, tuple[Module, str]] = {}
        self._collect_buffer_owners("", buffer_owners)
        expected = set(params) | set(buffer_owners)
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}.")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: checkpoint has shape {value.shape}, model has {p.shape}.")
            p.data = asarray(value.astype(to_numpy(p.data).dtype), like=p.data)
        for name, (owner, key) in buffer_owners.items():
            old = owner.buffers[key]
            owner.buffers[key] = asarray(np.asarray(state[name]).astype(to_numpy(old).dtype), like=old)
        return self

    def _collect_buffer_owners(self, prefix: str, out: dict[str, tuple[Module, str]]) -> None:
        for key in self.buffers:
            out[prefix + key] = (self, key)
        for i, child in enumerate(self.children()):
            child._collect_buffer_owners(f"{prefix}{i}.", out)

    def to(self, backend: Backend | None = None) -> Module:
        """Move every parameter and buffer to `backend` (default: the active one), e.g. another GPU."""
        backend = backend or get_backend()
        for p in self.own_parameters().values():
            p.data = to_backend(p.data, backend)
            p.grad = None
        self.buffers = {k: to_backend(v, backend) for k, v in self.buffers.items()}
        for child in self.children():
            child.to(backend)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    When the input needs no gradient (`need_input_grad=False`, e.g. a first block, or a block whose input
    is a constant in local learning), backward stops at the first layer with parameters and tells it not to
    compute its input gradient: layers before it (a max-pool, say) are skipped entirely.
    """

    def __init__(self, *layers: Module, local_pool: int | None = None) -> None:
        super().__init__()
        self.layers = list(layers)
        # Spatial size this block's output is pooled to by LLS's local loss (None: use the output as is).
        self.local_pool = local_pool
        # Width at which the official LLS code draws this block's random or trainable local matrix before
        # average-pooling its columns to the block's pooled size (None: drawn at that size; trainers/lls.py).
        self.local_width: int | None = None

    def children(self) -> list[Module]:
        return self.layers

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def jvp(self, dx: Array | None) -> Array | None:
        for layer in self.layers:
            dx = layer.jvp(dx)
        return dx

    def backward(self, dout: Array, need_input_grad: bool = True) -> Array | None:
        stop = 0
        if not need_input_grad:
            with_params = [i for i, layer in enumerate(self.layers) if layer.parameters()]
            stop = with_params[0] if with_params else len(self.layers)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            dout = self.layers[i].backward(dout, need_input_grad=need_input_grad or i > stop)
        for layer in self.layers[:stop]:
            layer.forget()  # skipped layers never run backward: free their activations now
        return dout if need_input_grad else None

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for layer in self.layers for line in repr(layer).splitlines())
        pool = f", local_pool={self.local_pool}" if self.local_pool is not None else ""
        return f"Sequential({pool.lstrip(', ')}\n{inner}\n)" if self.layers else "Sequential()"


def init_uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: Any) -> Array:
    """U(-bound, bound) drawn on the host from `rng`, placed on the active backend as `dtype`."""
    return asarray(rng.uniform(-bound, bound, size=shape), dtype=dtype)


def init_constant(shape: tuple[int, ...], value: float, dtype: Any) -> Array:
    return asarray(np.full(shape, value), dtype=dtype)
