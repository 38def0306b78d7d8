"""Parameters and gradients as one flat vector, shape (P,), P = sum of p.size: what an all-reduce, a push to
a parameter server or a shared weights segment carries. flat = concat(p_0.ravel(), ..., p_k.ravel()) in the
optimizer's `params` order, the same in every worker (the same model), so the offsets are never sent.
"""

from __future__ import annotations

from ..backend import to_numpy


def flat_size(params):
    """P: how many numbers the flat vector of `params` holds."""
    return sum(p.data.size for p in params)


def gradients(params, engine):
    """[p.grad for p in params]; a parameter without a gradient is an error (`engine` says who needs it)."""
    for p in params:
        if p.grad is None:
            raise RuntimeError(
                f"Parameter of shape {p.shape} got no gradient; {engine} uses every parameter's gradient."
            )
    return [p.grad for p in params]


def pack(arrays, out, accumulate=False):
    """Write arrays [a_0, ...] (any shapes, NumPy or CuPy) into out (P,) on the host, one after the other;
    accumulate=True adds them to what out holds instead. Returns out."""
    offset = 0
    for a in arrays:
        if accumulate:
            out[offset : offset + a.size] += to_numpy(a).ravel()
        else:
            out[offset : offset + a.size] = to_numpy(a).ravel()
        offset += a.size
    return out


def unpack(flat, params):
    """Views of flat (P,), one per parameter, each shaped like p.data (no copy)."""
    views, offset = [], 0
    for p in params:
        views.append(flat[offset : offset + p.data.size].reshape(p.data.shape))
        offset += p.data.size
    return views


def set_gradients(params, flat):
    """p.grad = its part of flat (P,), copied, in p.data's dtype."""
    for p, view in zip(params, unpack(flat, params)):
        p.grad = view.astype(p.data.dtype, copy=True)


def set_weights(params, flat):
    """p.data = its part of flat (P,), in p.data's dtype; a view when the dtypes agree, so flat must be the
    caller's own copy (never a shared segment another process writes)."""
    for p, view in zip(params, unpack(flat, params)):
        p.data = view.astype(p.data.dtype, copy=False)
