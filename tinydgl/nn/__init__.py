"""Layer objects built on tinydgl.functional: parameters, forward, backward(dout) -> dx, state dicts."""

from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    FullGradReLU,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Tanh,
)
from .module import Module, Parameter, Sequential
from .projection import ClassScale, FixedLinear, L2Normalize, LengthNormalize, PooledLinear, Scale

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "FullGradReLU",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Tanh",
    "ClassScale",
    "FixedLinear",
    "L2Normalize",
    "LengthNormalize",
    "PooledLinear",
    "Scale",
]
