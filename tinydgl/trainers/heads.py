"""Auxiliary heads for DGL and the local-loss trainers: small classifiers (or losses) on a module's output,
built from the shared layers.

    head = aux_head("mlp-sr", shape, num_classes)   # (C, H, W) or (D,); also "mlp", "cnn", "linear", "pred", ...

DGL's heads ("mlp-sr", "mlp", "cnn", "linear") follow the DGL papers' code (`auxillary_classifier2`); the
local-loss heads ("pred", "sim", "predsim", `LocalLossHead`) follow Nøkland & Eidnes, "Training neural networks
with local error signals", ICML 2019 (anokland/local-loss). Each head's layers: docs/methods/auxiliary-heads.md.
"""

import math

from .. import functional as F
from ..backend import array_namespace, default_rng
from ..nn import AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, Module, ReLU, Sequential

CLASSIFIER_HEADS = ("mlp-sr", "mlp", "cnn", "linear")
LOCAL_LOSS_HEADS = ("pred", "sim", "predsim")
AUX_HEADS = CLASSIFIER_HEADS + LOCAL_LOSS_HEADS
PREDSIM_BETA = 0.99  # the reference code's default weight of the similarity loss in predsim
DECODER_FEATURES = 4096  # the reference's --dim-in-decoder: most features the pred classifier sees


def _mlp(width, num_classes, depth, rng, dtype):
    layers = []
    for _ in range(depth):
        layers += [Linear(width, width, rng=rng, dtype=dtype), BatchNorm1d(width, dtype=dtype), ReLU()]
    return layers + [Linear(width, num_classes, rng=rng, dtype=dtype)]


class LocalLossHead(Module):
    """Nøkland & Eidnes' local loss on a block's output h: pred, sim or both.

        loss = w_pred * CE(pred(h), y) + w_sim * MSE(S(sim(h)), S(onehot(y)))

    with (w_pred, w_sim) = (1 - beta, beta) for predsim, and a weight of 1 for a head that has one part only.
    `local_loss` is what `LocalModule` calls (it returns the gradient with respect to h); `forward` gives
    the pred part's logits, which greedy training uses to predict before its last stage.
    """

    def __init__(self, pred, sim, num_classes, beta=PREDSIM_BETA):
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"the predsim weight beta must lie in [0, 1], got {beta}.")
        self.pred, self.sim, self.num_classes, self.beta = pred, sim, num_classes, beta

    def children(self):
        return [m for m in (self.pred, self.sim) if m is not None]

    def forward(self, x):
        if self.pred is None:
            raise ValueError("the sim head has no classifier, so it cannot predict: use --aux pred or predsim.")
        return self.pred.forward(x)

    def local_loss(self, h, y, label_smoothing=0.0):
        """(loss: float, dh with h's shape)."""
        both = self.pred is not None and self.sim is not None
        loss, dh = 0.0, array_namespace(h).zeros_like(h)
        if self.pred is not None:
            weight = 1.0 - self.beta if both else 1.0
            pred_loss, dlogits = F.softmax_cross_entropy(self.pred.forward(h), y, label_smoothing)
            loss, dh = loss + weight * pred_loss, dh + self.pred.backward(weight * dlogits)
        if self.sim is not None:
            weight = self.beta if both else 1.0
            sim_loss, dfeatures = F.similarity_matching_loss(self.sim.forward(h), y, self.num_classes)
            loss, dh = loss + weight * sim_loss, dh + self.sim.backward(weight * dfeatures)
        return loss, dh


def pooled_side(channels, side, features=DECODER_FEATURES):
    """The side the pred classifier's input is average-pooled to: halved until channels * side^2 fits in
    `features`. (The reference doubles its pooling kernel alternately along height and width, so its maps
    may end up non-square; ours stay square: at most a factor 2 fewer features.)"""
    while channels * side * side > features and side > 1:
        side = math.ceil(side / 2)
    return side


def local_loss_head(kind, shape, num_classes, rng, dtype, beta=PREDSIM_BETA):
    """A `LocalLossHead` ("pred", "sim" or "predsim") for activations of `shape` ((C, H, W) or (D,))."""
    pred = sim = None
    if kind in ("pred", "predsim"):
        if len(shape) == 1:
            pred = Sequential(Linear(shape[0], num_classes, rng=rng, dtype=dtype))
        else:
            c, h, _ = shape
            side = pooled_side(c, h)
            pool = [AdaptiveAvgPool2d(side)] if side < h else []
            pred = Sequential(*pool, Flatten(), Linear(c * side * side, num_classes, rng=rng, dtype=dtype))
        classifier = pred.layers[-1]
        classifier.weight.data = classifier.weight.data * 0  # zero, as the reference (decoder_y.weight.data.zero_())
    if kind in ("sim", "predsim"):
        if len(shape) == 1:
            sim = Sequential(Linear(shape[0], shape[0], bias=False, rng=rng, dtype=dtype))
        else:
            sim = Sequential(Conv2d(shape[0], shape[0], 3, padding=1, bias=False, rng=rng, dtype=dtype))
    return LocalLossHead(pred, sim, num_classes, beta)


def aux_head(kind, shape, num_classes, seed=0, dtype="float32", beta=PREDSIM_BETA):
    """An auxiliary head for activations of `shape` ((C, H, W) or (D,)): a Sequential classifier, or a
    `LocalLossHead` for "pred", "sim", "predsim" (beta: predsim's weight of the similarity loss)."""
    if kind not in AUX_HEADS:
        raise ValueError(f"Unknown auxiliary head {kind!r}; choose one of: {', '.join(AUX_HEADS)}.")
    rng = default_rng(seed)
    if kind in LOCAL_LOSS_HEADS:
        return local_loss_head(kind, shape, num_classes, rng, dtype, beta)
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
            layers += [
                Conv2d(c, c, 3, padding=1, bias=False, rng=rng, dtype=dtype),
                BatchNorm2d(c, dtype=dtype),
                ReLU(),
            ]
        return Sequential(*layers, AdaptiveAvgPool2d(2), Flatten(), Linear(width, num_classes, rng=rng, dtype=dtype))
    return Sequential(
        AdaptiveAvgPool2d(2), BatchNorm2d(c, dtype=dtype), Flatten(), Linear(width, num_classes, rng=rng, dtype=dtype)
    )
