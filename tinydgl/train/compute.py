"""Compute next to accuracy: the multiply-accumulates (MACs) one training step costs, counted from the shapes
of what actually runs (on a copy of the trainer, so counting changes nothing).

    macs = step_macs(trainer, x, y)   # per sample: {"forward", "signal", "weight_gradients", "total"}

forward: the model's own layers; weight_gradients: their weight gradients; signal: everything else the method
computes to get those. What each part holds, and what is and is not counted: docs/design/measurements.md.
"""

import copy
import math

from ..nn import Conv2d, FixedLinear, Linear, PooledLinear


def _layer_macs(layer, x, out):
    """MACs of one forward of `layer` on x giving out."""
    if isinstance(layer, Linear):
        return int(x.shape[0]) * layer.in_features * layer.out_features
    n, f, h, w = (int(s) for s in out.shape)
    return n * f * h * w * (layer.in_channels // layer.groups) * layer.kernel_size**2


class MacCounter:
    """Context manager: while active, counts the MACs of every layer's forward and backward (see module)."""

    def __init__(self, model):
        self.model_layers = {id(m) for m in _walk(model)}
        self.counts = {"forward": 0, "signal": 0, "weight_gradients": 0}
        self._last = {}  # id(layer) -> MACs of its last forward (its backward costs follow from it)

    def _add(self, layer, kind, macs):
        own = id(layer) in self.model_layers
        if kind == "forward":
            self.counts["forward" if own else "signal"] += macs
        elif kind == "weight":
            self.counts["weight_gradients" if own else "signal"] += macs
        else:
            self.counts["signal"] += macs

    def __enter__(self):
        from ..trainers import feedback_alignment, pepita

        self._saved = []

        def patch(owner, name, make):
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, make(original))

        for cls in (Linear, Conv2d):
            patch(cls, "forward", self._parametrised_forward)
            patch(cls, "backward", self._parametrised_backward)
            patch(cls, "jvp", self._parametrised_jvp)
        for cls in (FixedLinear, PooledLinear):
            patch(cls, "forward", self._fixed_forward)
            patch(cls, "backward", self._fixed_backward)
        patch(feedback_alignment, "project", self._projection)
        patch(pepita, "project", self._projection)
        return self

    def _parametrised_forward(self, original):
        counter = self

        def forward(layer, x):
            out = original(layer, x)
            counter._last[id(layer)] = macs = _layer_macs(layer, x, out)
            counter._add(layer, "forward", macs)
            return out

        return forward

    def _parametrised_backward(self, original):
        counter = self

        def backward(layer, dout, need_input_grad=True):
            macs = counter._last.get(id(layer), 0)
            counter._add(layer, "weight", macs)
            if need_input_grad:
                counter._add(layer, "input", macs)
            return original(layer, dout, need_input_grad)

        return backward

    def _parametrised_jvp(self, original):  # forward mode: one product per moving input and moving weight
        counter = self

        def jvp(layer, dx):
            macs = counter._last.get(id(layer), 0)
            products = (dx is not None) + (layer.weight.tangent is not None)
            counter._add(layer, "tangent", macs * products)
            return original(layer, dx)

        return jvp

    def _fixed_forward(self, original):
        counter = self

        def forward(layer, x):
            if isinstance(layer, FixedLinear):
                rows, cols = layer.buffers["matrix"].shape
            else:  # PooledLinear: a (rows, width) weight pooled to (rows, cols) by a (width, cols) matrix
                rows, cols = layer.weight.shape[0], layer.buffers["pool"].shape[1]
            counter._last[id(layer)] = macs = int(x.shape[0]) * int(rows) * int(cols)
            if isinstance(layer, PooledLinear):  # forming the pooled weight, once per batch
                macs += int(math.prod(layer.weight.shape)) * int(layer.buffers["pool"].shape[1])
            counter._add(layer, "forward", macs)
            return original(layer, x)

        return forward

    def _fixed_backward(self, original):
        counter = self

        def backward(layer, dout, need_input_grad=True):
            macs = counter._last.get(id(layer), 0)
            if isinstance(layer, PooledLinear):
                counter._add(
                    layer, "weight", macs + int(math.prod(layer.weight.shape)) * int(layer.buffers["pool"].shape[1])
                )
            if need_input_grad:
                counter._add(layer, "input", macs)
            return original(layer, dout, need_input_grad)

        return backward

    def _projection(self, original):
        counter = self

        def project(signal, feedback):
            counter.counts["signal"] += int(signal.shape[0]) * int(math.prod(feedback.shape))
            return original(signal, feedback)

        return project

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def _walk(module):
    yield module
    for child in module.children():
        yield from _walk(child)


def step_macs(trainer, x, y):
    """MACs per sample of one `train_step(x, y)`, counted on a copy of the trainer: a dict with forward,
    signal, weight_gradients and total (docs/design/measurements.md)."""
    twin = copy.deepcopy(trainer)
    twin.to_train_weights()
    twin.model.train()
    with MacCounter(twin.model) as counter:
        twin.train_step(x, y)
    passes = getattr(trainer, "forward_passes", 1)
    if passes > 1:  # only the first pass is what inference costs; the others are spent on the learning signal
        extra = counter.counts["forward"] * (passes - 1) // passes
        counter.counts["forward"] -= extra
        counter.counts["signal"] += extra
    n = int(y.shape[0])
    per_sample = {k: v / n for k, v in counter.counts.items()}
    per_sample["total"] = sum(per_sample.values())
    return per_sample
