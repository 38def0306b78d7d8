"""Numerical gradient checking: central differences and a relative error, for notebooks and tests.

    from tinydgl.gradcheck import check_gradients
    errors = check_gradients(lambda x, w, b: F.linear_forward(x, w, b)[0],
                             lambda dout, cache: F.linear_backward(dout, cache), [x, w, b])

Use float64 NumPy arrays: with a step h, central differences are accurate to O(h^2) but rounding adds
O(eps / h), so in float32 nothing below ~1e-3 can be trusted.
"""

import numpy as np

from .backend import to_numpy


def numerical_gradient(f, x, dout, h=1e-6):
    """d<f(x), dout>/dx by central differences, one element of x at a time.

    f: a function of x (changed in place and restored) returning an array shaped like dout (or a scalar
    when dout is None). Returns an array shaped like x.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        # Copy each output at once: an op may return a view of x (flatten, a 1x1 pool), which the next
        # perturbation would change under our feet.
        x[i] = old + h
        plus = np.array(to_numpy(f(x)), dtype=np.float64)
        x[i] = old - h
        minus = np.array(to_numpy(f(x)), dtype=np.float64)
        x[i] = old
        diff = plus - minus
        grad[i] = np.sum(diff if dout is None else diff * dout) / (2 * h)
        it.iternext()
    return grad


def rel_error(a, b, floor=1e-12):
    """max|a - b| / (max|a| + max|b|): 0 for equal arrays, ~1 for unrelated ones.

    The error is measured against the gradient's overall scale, not entry by entry: an entry that is
    nearly zero (say 4e-7) is carried by central differences with an absolute error of ~1e-10 (rounding,
    eps / h), which entry-wise would look like a large relative error although the gradient is right.
    """
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}.")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)) + np.max(np.abs(b)), floor))


def check_gradients(forward, backward, inputs, seed=0, h=1e-6, wrt=None):
    """Compare an op's analytic gradients with numerical ones.

    forward(*inputs) -> (out, cache); backward(dout, cache) -> gradients in the order of `inputs`.
    `wrt` picks which inputs to check (default: all). A random upstream gradient `dout` makes the check
    cover every output element. Returns a list of relative errors, one per checked input.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    out, cache = forward(*inputs)
    # A stream of its own: were dout drawn like the inputs (default_rng(seed)), it could equal an input
    # up to scale, and e.g. batch norm maps exactly that direction to a zero gradient.
    dout = np.random.default_rng((seed, 1)).standard_normal(np.shape(out))
    analytic = backward(dout, cache)
    if not isinstance(analytic, (tuple, list)):
        analytic = (analytic,)
    errors = []
    for k in range(len(inputs)) if wrt is None else wrt:

        def f(xk, k=k):
            args = list(inputs)
            args[k] = xk
            return forward(*args)[0]

        numeric = numerical_gradient(f, inputs[k], dout, h)
        errors.append(rel_error(analytic[k], numeric))
    return errors
