"""Elementwise nonlinearities: ReLU and LeakyReLU."""
from ..backend import array_namespace


def relu_forward(x):
    """x: any shape -> out = max(x, 0), same shape; the cache is the mask of positive inputs."""
    xp = array_namespace(x)
    positive = x > 0
    return xp.where(positive, x, 0.0), positive


def relu_backward(dout, cache):
    """dout: same shape as x -> dx. The gradient passes where x > 0 (at x == 0 we use 0, as PyTorch does)."""
    xp = array_namespace(dout)
    return xp.where(cache, dout, 0.0)


def leaky_relu_forward(x, negative_slope=0.01):
    """x: any shape -> out = x where x > 0, else negative_slope * x."""
    xp = array_namespace(x)
    positive = x > 0
    return xp.where(positive, x, negative_slope * x), (positive, negative_slope)


def leaky_relu_backward(dout, cache):
    """dout: same shape as x -> dx = dout * (1 if x > 0 else negative_slope)."""
    positive, negative_slope = cache
    xp = array_namespace(dout)
    return xp.where(positive, dout, negative_slope * dout)
