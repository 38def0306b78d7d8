"""Forward-Forward (Hinton 2022): every layer learns from its own "goodness", in forward passes only.

Where does each layer's gradient come from? **From its own objective, on its own output**: positive data
(the image with its true label written into its first pixels) should give the layer a high goodness
g = sum(z**2), negative data (a wrong label) a low one; each layer's input is a constant. The trainer builds
its own network (LengthNormalize -> Linear -> ReLU blocks, widths `ff_hidden`) from the `mlp` it is handed.

    tinydgl train --trainer ff        # or: --recipe loewex-ff, the reference's SGD recipe

Paper: Hinton, "The Forward-Forward Algorithm", arXiv 2212.13345; reference code github.com/loeweX/Forward-Forward.
Design notes (the step, the two predictions, inputs, optimizer, differences from the reference):
docs/methods/forward-forward.md.
"""

import math

import numpy as np

from .. import functional as F
from ..backend import array_namespace, asarray, default_rng, to_numpy
from ..nn import BatchNorm1d, Flatten, FullGradReLU, LengthNormalize, Linear, Module, ReLU, Sequential
from .base import Trainer

FF_PREDICTIONS = ("linear", "goodness")
FF_RELU_GRADS = ("full", "true")
PEER_MOMENTUM = 0.9  # the reference's momentum of the running mean activities
PEER_START = 0.5  # ... and their starting value
LENGTH_EPS = 1e-8


class RunningMeans(Module):
    """Peer normalisation's running mean activity of every unit, one buffer per layer ("layer0", ...):
    state, not parameters (no optimizer sees them), checkpointed with the trainer's auxiliary modules."""

    def __init__(self, widths, dtype):
        super().__init__()
        self.buffers = {f"layer{i}": asarray(np.full((w,), PEER_START), dtype=dtype) for i, w in enumerate(widths)}

    def __repr__(self):
        return f"RunningMeans({len(self.buffers)} layers)"


def _described_input(model):
    """(input features, image shape or None, classes, dtype) of the fully connected model handed to FF;
    ValueError for any other model."""
    layers = []

    def walk(module):
        layers.append(module)
        for child in module.children():
            walk(child)

    walk(model)
    fully_connected = (Linear, BatchNorm1d)
    other = sorted({type(m).__name__ for m in layers if m.own_parameters() and not isinstance(m, fully_connected)})
    linears = [m for m in layers if isinstance(m, Linear)]
    if other or not linears:
        found = f"one with {', '.join(other)} layers" if other else "one without Linear layers"
        raise ValueError(
            f"ff trains a fully connected network of its own (widths: ff_hidden) and reads only the input "
            f"size and classes from the model it is given, which must be fully connected (--model mlp); "
            f"got {found}."
        )
    shape = getattr(model, "input_shape", None)
    classes = getattr(model, "num_classes", None) or linears[-1].out_features
    return linears[0].in_features, shape, int(classes), linears[0].weight.data.dtype


class FFTrainer(Trainer):
    """Forward-Forward (docs/methods/forward-forward.md). Options: ff_hidden (widths, default the reference's 3 x 1000),
    ff_relu_grad ("full" | "true"), peer_norm (weight, 0.03), ff_predict ("linear" | "goodness"),
    ff_classifier_lr_scale and ff_classifier_wd_scale (10, 10), input_mean and input_std (the loader's
    normalisation of channel 0, for the label pixels; 0 and 1: raw pixels), seed."""

    name = "ff"

    def __init__(
        self,
        model,
        make_optimizer,
        ff_hidden=(1000, 1000, 1000),
        ff_relu_grad="full",
        peer_norm=0.03,
        ff_predict="linear",
        ff_classifier_lr_scale=10.0,
        ff_classifier_wd_scale=10.0,
        input_mean=0.0,
        input_std=1.0,
        seed=0,
    ):
        hidden = [int(h) for h in ff_hidden]
        if len(hidden) < 2 or min(hidden) < 1:
            raise ValueError(
                f"ff_hidden must list 2 or more positive widths (both predictions read every layer "
                f"but the first), got {list(ff_hidden)}."
            )
        if ff_relu_grad not in FF_RELU_GRADS:
            raise ValueError(f"Unknown ff_relu_grad {ff_relu_grad!r}; choose one of: {', '.join(FF_RELU_GRADS)}.")
        if ff_predict not in FF_PREDICTIONS:
            raise ValueError(f"Unknown ff_predict {ff_predict!r}; choose one of: {', '.join(FF_PREDICTIONS)}.")
        if not peer_norm >= 0:
            raise ValueError(f"peer_norm must be 0 or more, got {peer_norm}.")
        if not input_std > 0:
            raise ValueError(f"input_std must be positive, got {input_std}.")
        if not (ff_classifier_lr_scale > 0 and ff_classifier_wd_scale >= 0):
            raise ValueError(
                f"ff_classifier_lr_scale must be positive and ff_classifier_wd_scale 0 or more, got "
                f"{ff_classifier_lr_scale} and {ff_classifier_wd_scale}."
            )
        features, shape, classes, dtype = _described_input(model)
        width = shape[-1] if shape is not None else features
        if width < classes:
            raise ValueError(
                f"ff writes the label into the first {classes} pixels of the first row, but the images "
                f"are {width} pixels wide."
            )
        self.num_classes, self.hidden = classes, hidden
        self.ff_relu_grad, self.peer_norm, self.ff_predict = ff_relu_grad, float(peer_norm), ff_predict
        rng = default_rng([seed, 5201])
        blocks, fan_in = [], features
        for i, h in enumerate(hidden):
            linear = Linear(fan_in, h, rng=rng, dtype=dtype)
            # the reference's init: N(0, std 1/sqrt(out_features)), biases 0
            linear.weight.data = asarray(rng.normal(0.0, 1.0 / math.sqrt(h), size=(fan_in, h)), dtype=dtype)
            linear.bias.data = asarray(np.zeros(h), dtype=dtype)
            activation = FullGradReLU() if ff_relu_grad == "full" else ReLU()
            blocks.append(Sequential(*([Flatten()] if i == 0 else []), LengthNormalize(LENGTH_EPS), linear, activation))
            fan_in = h
        super().__init__(Sequential(*blocks))
        self.model.input_shape, self.model.num_classes = shape, classes
        self.classifier = Linear(sum(hidden[1:]), classes, bias=False, rng=rng, dtype=dtype)
        self.classifier.weight.data = asarray(np.zeros((sum(hidden[1:]), classes)), dtype=dtype)
        self.running = RunningMeans(hidden, dtype)
        self.optimizer = make_optimizer(self.model.parameters())
        self.classifier_optimizer = make_optimizer(self.classifier.parameters())
        # base_lr too: the loop's epoch schedule sets lr = base_lr * factor every epoch (a constant schedule
        # included), so scaling lr alone would be undone at the first epoch (the classifier trained at 1e-3).
        self.classifier_optimizer.lr *= ff_classifier_lr_scale
        self.classifier_optimizer.base_lr *= ff_classifier_lr_scale
        if getattr(self.classifier_optimizer, "weight_decay", None):
            self.classifier_optimizer.weight_decay *= ff_classifier_wd_scale
        self.negatives_rng = default_rng([seed, 5202])  # the wrong labels of the negative samples
        self.last_step, self.last_evaluation = {}, {}
        self.input_mean, self.input_std = float(input_mean), float(input_std)

    def optimizers(self):
        return [self.optimizer, self.classifier_optimizer]

    def auxiliary_modules(self):
        return {"classifier": self.classifier, "peer_norm": self.running}

    # --- data ---------------------------------------------------------------------------------------
    def embed(self, x, labels):
        """Images x (N, ...) with `labels` (N, classes) written over the first `classes` pixels of the first
        row (flat indices 0..classes-1): (N, D) flat rows."""
        xp = array_namespace(x)
        flat = xp.reshape(x, (x.shape[0], -1))
        labels = xp.astype(labels, flat.dtype)
        if self.input_std != 1.0 or self.input_mean != 0.0:
            labels = (labels - self.input_mean) / self.input_std
        return xp.concat([labels, flat[:, self.num_classes :]], axis=1)

    def wrong_labels(self, y):
        """A uniformly drawn label other than y[i] for every i, from the seeded host generator.

        Only the random shifts travel to the device; y stays there (reading it back would make every step
        wait for the GPU)."""
        shift = self.negatives_rng.integers(1, self.num_classes, size=int(y.shape[0]))
        return (y + asarray(shift, dtype=y.dtype, like=y)) % self.num_classes

    def neutral(self, x):
        """The neutral sample: 1/classes in every label pixel."""
        uniform = np.full((int(x.shape[0]), self.num_classes), 1.0 / self.num_classes)
        return self.embed(x, asarray(uniform, dtype=x.dtype, like=x))

    # --- the step -----------------------------------------------------------------------------------
    def layer_loss(self, index, z, positives):
        """Layer `index`'s loss on its output z (2P, width), the first P rows positive: returns (loss, dz, BCE,
        peer penalty), loss = BCE + peer_norm * penalty, and moves the layer's running mean activities on
        (when peer_norm > 0)."""
        xp = array_namespace(z)
        rows, width = z.shape
        targets = asarray(np.r_[np.ones(positives), np.zeros(rows - positives)], dtype=z.dtype, like=z)
        goodness = xp.sum(z * z, axis=1)
        bce, dlogits = F.binary_cross_entropy_with_logits(goodness - width, targets)
        dz = (2.0 * dlogits)[:, None] * z
        penalty = 0.0
        if self.peer_norm:
            key = f"layer{index}"
            activity = xp.mean(z[:positives, :], axis=0)
            running = PEER_MOMENTUM * self.running.buffers[key] + (1 - PEER_MOMENTUM) * activity
            centred = running - xp.mean(running)
            penalty = F.float64_scalar(xp.mean(centred * centred))
            # d penalty / d r_j = 2 (r_j - mean r) / width; d r_j / d z_ij = (1 - momentum) / P, positive rows i
            push = (self.peer_norm * 2.0 * (1 - PEER_MOMENTUM) / (width * positives)) * centred
            dz = xp.concat([dz[:positives, :] + push[None, :], dz[positives:, :]], axis=0)
            self.running.buffers[key] = running
        return bce + self.peer_norm * penalty, dz, bce, penalty

    def train_step(self, x, y):
        xp = array_namespace(x)
        n = int(y.shape[0])
        positive = self.embed(x, F.one_hot(y, self.num_classes, x.dtype))
        negative = self.embed(x, F.one_hot(self.wrong_labels(y), self.num_classes, x.dtype))
        z = xp.concat([positive, negative], axis=0)
        total, bces, penalties = 0.0, [], []
        for index, block in enumerate(self.model.layers):
            z = block.forward(z)
            loss, dz, bce, penalty = self.layer_loss(index, z, n)
            block.backward(dz, need_input_grad=False)  # the gradient stops at this layer's input
            total += loss
            bces.append(bce)
            penalties.append(penalty)
        # the classifier at the weights this step started from, as the reference's single backward
        logits = self.classifier.forward(self._classifier_features(self.neutral(x)))
        ce, dlogits = F.softmax_cross_entropy(logits, y)
        self.classifier.backward(dlogits, need_input_grad=False)
        self.optimizer.step()
        self.classifier_optimizer.step()
        self.last_step = {"layer_bce": bces, "layer_peer_penalty": penalties, "classifier_loss": ce}
        return total

    def _activities(self, rows):
        """The outputs z_l of every layer for flat rows (N, D), in evaluation mode (nothing kept)."""
        self.model.eval()
        try:
            out = []
            for block in self.model.layers:
                rows = block.forward(rows)
                out.append(rows)
            return out
        finally:
            self.model.train()

    def _classifier_features(self, rows):
        """The classifier's input: the normalised activities n(z_l) of every layer but the first, side by side."""
        xp = array_namespace(rows)
        activities = self._activities(rows)[1:]
        return xp.concat([F.length_normalize_forward(z, LENGTH_EPS)[0] for z in activities], axis=1)

    # --- predictions ------------------------------------------------------------------------------
    def goodness_scores(self, x):
        """(N, classes): for each label, the summed goodness of every layer but the first with it embedded."""
        xp = array_namespace(x)
        n, classes = int(x.shape[0]), self.num_classes
        eye = asarray(np.eye(classes), dtype=x.dtype, like=x)
        labelled = [self.embed(x, xp.broadcast_to(eye[c : c + 1, :], (n, classes))) for c in range(classes)]
        rows = xp.concat(labelled, axis=0)  # label 0 for every image, then label 1, ...
        total = None
        for z in self._activities(rows)[1:]:
            g = xp.sum(z * z, axis=1)
            total = g if total is None else total + g
        return xp.permute_dims(xp.reshape(total, (classes, n)), (1, 0))

    def linear_scores(self, x):
        """(N, classes): the downstream classifier's logits on the neutral sample."""
        self.classifier.eval()
        try:
            return self.classifier.forward(self._classifier_features(self.neutral(x)))
        finally:
            self.classifier.train()

    def predict(self, x):
        """The scores of the prediction `ff_predict` chooses (argmax: the predicted label)."""
        return self.linear_scores(x) if self.ff_predict == "linear" else self.goodness_scores(x)

    def evaluate(self, batches) -> dict:
        """Both predictions' accuracy and cross-entropy; "accuracy" and "loss" are those of `ff_predict`."""
        correct = {name: 0 for name in FF_PREDICTIONS}
        loss_sum = {name: 0.0 for name in FF_PREDICTIONS}
        total = 0
        for x, y in batches:
            labels = to_numpy(y)
            for name, scores in (("linear", self.linear_scores(x)), ("goodness", self.goodness_scores(x))):
                loss, _ = F.softmax_cross_entropy(scores, y)
                correct[name] += int(np.sum(np.argmax(to_numpy(scores), axis=1) == labels))
                loss_sum[name] += loss * int(y.shape[0])
            total += int(y.shape[0])
        if total == 0:
            raise ValueError("evaluate() got no batches.")
        result = {"accuracy": correct[self.ff_predict] / total, "loss": float(loss_sum[self.ff_predict] / total)}
        for name in FF_PREDICTIONS:
            result[f"accuracy_{name}"], result[f"loss_{name}"] = correct[name] / total, float(loss_sum[name] / total)
        self.last_evaluation = {k: v for k, v in result.items() if k not in ("accuracy", "loss")}
        return result

    def recalibration_forward(self, x):
        """Nothing to recalibrate: FF's network has no batch norm (the loop skips this anyway)."""

    def stats(self):
        """The last step's per-layer BCE and peer penalty and classifier loss; the last evaluation's
        accuracy and loss of both predictions (which the command's metrics JSON keeps as trainer_stats)."""
        last_step = {
            k: [float(v) for v in vs] if isinstance(vs, list) else float(vs) for k, vs in self.last_step.items()
        }
        return {"predict": self.ff_predict, "last_step": last_step, "last_evaluation": self.last_evaluation}

    # --- exact resume -------------------------------------------------------------------------------
    def resume_state(self):
        arrays, values = super().resume_state()
        return arrays, {**values, "negatives_rng": self.negatives_rng.bit_generator.state}

    def load_resume_state(self, arrays, values):
        super().load_resume_state(arrays, values)
        if "negatives_rng" in values:
            self.negatives_rng.bit_generator.state = values["negatives_rng"]
