"""Layer objects built on tinydgl.functional: parameters, forward, backward(dout) -> dx, state dicts."""
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
)
from .module import Module, Parameter, Sequential
from .projection import ClassScale, FixedLinear, L2Normalize, PooledLinear, Scale

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten",
    "LeakyReLU", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential",
    "ClassScale", "FixedLinear", "L2Normalize", "PooledLinear", "Scale",
]
