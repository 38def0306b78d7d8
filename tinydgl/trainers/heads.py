"""Auxiliary heads for DGL: small classifiers attached to a module's output (built from the shared layers).

From the DGL papers' code (`auxillary_classifier2`):
- "mlp-sr" (the main one): average-pool to ceil(H/4) per side, three 1x1 conv + BN + ReLU, adaptive-average-pool
  to 2x2, flatten (4C), three Linear(4C, 4C) + BN + ReLU, Linear to the classes.
- "mlp" (cheap, used for the async experiments): adaptive-average-pool to 2x2, then the MLP part.
- "cnn": two 3x3 conv + BN + ReLU at full resolution, pool to 2x2, linear.
- "linear" (for teaching): pool to 2x2, BN, flatten, one Linear.
For flat (N, D) outputs, the conv and pooling parts are dropped and the MLP width is D.
"""
import math

from ..backend import default_rng
from ..nn import AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential

AUX_HEADS = ("mlp-sr", "mlp", "cnn", "linear")


def _mlp(width, num_classes, depth, rng, dtype):
    layers = []
    for _ in range(depth):
        layers += [Linear(width, width, rng=rng, dtype=dtype), BatchNorm1d(width, dtype=dtype), ReLU()]
    return layers + [Linear(width, num_classes, rng=rng, dtype=dtype)]


def aux_head(kind, shape, num_classes, seed=0, dtype="float32"):
    """An auxiliary classifier for activations of `shape` ((C, H, W) or (D,)): returns a Sequential."""
    if kind not in AUX_HEADS:
        raise ValueError(f"Unknown auxiliary head {kind!r}; choose one of: {', '.join(AUX_HEADS)}.")
    rng = default_rng(seed)
    if len(shape) == 1:
        width = shape[0]
        depth = {"mlp-sr": 3, "mlp": 3, "cnn": 1, "linear": 0}[kind]
        return Sequential(*_mlp(width, num_classes, depth, rng, dtype))
    c, h, _ = shape
    width = 4 * c
    if kind == "mlp-sr":
        layers = [AdaptiveAvgPool2d(math.ceil(h / 4))]
        for _ in range(3):
            layers += [Conv2d(c, c, 1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(c, dtype=dtype), ReLU()]
        return Sequential(*layers, AdaptiveAvgPool2d(2), Flatten(), *_mlp(width, num_classes, 3, rng, dtype))
    if kind == "mlp":
        return Sequential(AdaptiveAvgPool2d(2), Flatten(), *_mlp(width, num_classes, 3, rng, dtype))
    if kind == "cnn":
        layers = []
        for _ in range(2):
            layers += [Conv2d(c, c, 3, padding=1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(c, dtype=dtype), ReLU()]
        return Sequential(*layers, AdaptiveAvgPool2d(2), Flatten(), Linear(width, num_classes, rng=rng, dtype=dtype))
    return Sequential(AdaptiveAvgPool2d(2), BatchNorm2d(c, dtype=dtype), Flatten(), Linear(width, num_classes, rng=rng, dtype=dtype))
