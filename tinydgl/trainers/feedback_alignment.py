"""The feedback-alignment family: FA, DFA, sign-DFA, DRTP, and the "shallow" floor.

Where does each block's gradient come from? **From fixed random matrices** instead of the transposed
weights of the blocks above. The forward pass is backprop's and the output layer learns from the true
gradient; every hidden block l gets a signal delta_l in place of dL/dh_l and back-propagates it inside
itself only: FA sends each layer's gradient down through a fixed random B (dx = dout @ B^T); DFA
delta_l = e @ B_l (e = softmax(z) - onehot(y)); sDFA sign(e) @ B_l; DRTP onehot(y) @ B_l (the label alone);
shallow: no signal, only the output layer learns. Every B is drawn once from the run's seed.

Papers: FA, Lillicrap et al., Nature Communications 2016; DFA, Nøkland, NeurIPS 2016; DRTP, sDFA and the
shallow floor, Frenkel, Lefebvre, Bol, Frontiers in Neuroscience 2021.
Design notes (the output loss, `feedback_scale` "mean" vs "sum", which engines): docs/methods/feedback-alignment.md.
"""

import math

import numpy as np

from .. import functional as F
from ..backend import array_namespace, asarray, default_rng
from ..nn import Conv2d, Linear, Sequential
from .backprop import BackpropTrainer, OutputLoss
from .base import Trainer
from .local import LocalModule, LocalTrainer, block_output_shapes

FEEDBACK_INITS = ("kaiming", "lls-dnn")
FEEDBACK_SCALES = ("mean", "sum")


# The output layer's loss: softmax cross-entropy (tinydgl's default), or sigmoid + binary cross-entropy
# against one-hot targets, the DRTP reference code's (mean over N * classes, as PyTorch's BCELoss).
def _check_scale(feedback_scale):
    if feedback_scale not in FEEDBACK_SCALES:
        raise ValueError(f"Unknown feedback_scale {feedback_scale!r}; choose one of: {', '.join(FEEDBACK_SCALES)}.")
    return feedback_scale


def feedback_matrix(shape, fan_in, rng, init="kaiming", dtype="float32"):
    """A fixed random feedback array of `shape`, drawn on the host from `rng`.

    init="kaiming": U[-sqrt(6 / fan_in), sqrt(6 / fan_in)], PyTorch's kaiming_uniform_ at its defaults, as
    the DRTP reference code draws B. init="lls-dnn": 1e-4 * U[0, 1), the official LLS-DNN code's DFA.
    """
    if init == "kaiming":
        bound = math.sqrt(6.0 / fan_in)
        values = rng.uniform(-bound, bound, size=shape)
    elif init == "lls-dnn":
        values = 1e-4 * rng.random(size=shape)
    else:
        raise ValueError(f"Unknown feedback_init {init!r}; choose one of: {', '.join(FEEDBACK_INITS)}.")
    return asarray(values, dtype=dtype)


def project(signal, feedback):
    """signal (N, classes) @ feedback (classes, *shape) -> (N, *shape): a block's delta from the signal."""
    xp = array_namespace(signal, feedback)
    classes = feedback.shape[0]
    flat = signal @ xp.reshape(feedback, (classes, -1))
    return xp.reshape(flat, (signal.shape[0], *feedback.shape[1:]))


def block_feedback(model, rng, init, dtype):
    """One B_l of shape (classes, *shape of h_l) for every hidden block (fan_in: the size of h_l)."""
    shapes = block_output_shapes(model)
    return [feedback_matrix((shapes[-1][0], *shape), int(np.prod(shape)), rng, init, dtype) for shape in shapes[:-1]]


def _dtype(model):
    return model.parameters()[0].data.dtype


# --- FA ---------------------------------------------------------------------------------------------
class FATrainer(BackpropTrainer):
    """Feedback alignment: backprop's train_step, with a fixed random B in every linear/conv layer's
    input gradient (`Linear.feedback`, `Conv2d.feedback`, used by the ops' backward). The step's loss is
    OutputLoss's (ce, or the reference code's sigmoid + bce), as backprop's."""

    name = "fa"
    parallel: tuple = ()
    parallel_note = "FA sends gradients down the whole chain, as backprop does"

    def __init__(self, model, make_optimizer, feedback_init="kaiming", loss="ce", label_smoothing=0.0, seed=0):
        super().__init__(model, make_optimizer, label_smoothing, loss)
        rng = default_rng([seed, 5001])
        self.feedback_init = feedback_init
        for layer in _parametrised_layers(model):
            w = layer.weight.data
            # PyTorch's fan_in for this weight: in_features (tinydgl stores Linear as (in, out)), or C/g*k*k
            fan_in = int(w.shape[0]) if isinstance(layer, Linear) else int(np.prod(w.shape[1:]))
            layer.feedback = feedback_matrix(tuple(w.shape), fan_in, rng, feedback_init, _dtype(model))

    # train_step is backprop's (ce or bce: `BackpropTrainer`); the layers' feedback does the rest.


def _parametrised_layers(module):
    if isinstance(module, (Linear, Conv2d)):
        yield module
    for child in module.children():
        yield from _parametrised_layers(child)


# --- DFA and sign-DFA -------------------------------------------------------------------------------
class DFATrainer(OutputLoss, Trainer):
    """Direct feedback alignment: every hidden block gets the output error through its own B_l."""

    name = "dfa"
    parallel_note = "DFA needs each batch's output error sent back to every module; not yet"

    def __init__(
        self,
        model,
        make_optimizer,
        feedback_init="kaiming",
        loss="ce",
        label_smoothing=0.0,
        seed=0,
        feedback_scale="mean",
    ):
        super().__init__(model)
        self._init_loss(loss, label_smoothing)
        self.feedback_scale = _check_scale(feedback_scale)
        self.optimizer = make_optimizer(model.parameters())
        self.feedback_init = feedback_init
        self.feedback = block_feedback(model, default_rng([seed, 5002]), feedback_init, _dtype(model))

    def optimizers(self):
        return [self.optimizer]

    def error_signal(self, dlogits, y):
        """What is projected to the hidden blocks: the output error e, as the loss's gradient divides it
        (by N, or N * classes with bce) with feedback_scale "mean", per sample with "sum" (docs/methods/feedback-alignment.md)."""
        if self.feedback_scale == "sum":
            per_sample = dlogits.shape[0] * (dlogits.shape[1] if self.loss == "bce" else 1)
            return dlogits * per_sample
        return dlogits

    def train_step(self, x, y):
        blocks = self.model.layers
        h = x
        for block in blocks:
            h = block.forward(h)
        loss, dlogits = self.output_loss(h, y)
        blocks[-1].backward(dlogits, need_input_grad=False)  # the output layer: the true gradient, kept there
        # BEGIN SOLUTION a4-dfa-signal
        # hint: every hidden block l (all but the last) gets delta_l = project(signal, B_l), the signal being
        # hint: self.error_signal(dlogits, y), B_l its entry of self.feedback; it back-propagates delta_l inside
        # hint: itself only: block.backward(delta_l, need_input_grad=False)
        signal = self.error_signal(dlogits, y)
        for block, feedback in zip(blocks[:-1], self.feedback):
            block.backward(project(signal, feedback), need_input_grad=False)  # nothing crosses to the block below
        # END SOLUTION
        self.optimizer.step()
        return loss


class SignDFATrainer(DFATrainer):
    """sDFA: only the sign of each output error is sent back (one bit per class)."""

    name = "sdfa"
    parallel_note = "sDFA needs each batch's output error sent back to every module; not yet"

    def error_signal(self, dlogits, y):
        xp = array_namespace(dlogits)
        sign = xp.sign(dlogits)
        return sign if self.feedback_scale == "sum" else sign / dlogits.shape[0]


# --- DRTP ---------------------------------------------------------------------------------------------
class RandomTargetModule(LocalModule):
    """A hidden block that learns from a fixed random projection of the label (DRTP): no head, no loss."""

    def __init__(self, body, feedback, make_optimizer, feedback_scale="mean"):
        super().__init__(body, None, make_optimizer)
        self.feedback, self.feedback_scale = feedback, _check_scale(feedback_scale)

    def local_loss(self, out, y):
        """(nan: DRTP has no loss here, delta = onehot(y) @ B / N; with feedback_scale "sum", onehot(y) @ B)."""
        if self.feedback_scale == "sum":
            return math.nan, project(F.one_hot(y, int(self.feedback.shape[0]), out.dtype), self.feedback)
        # BEGIN SOLUTION a4-drtp-target
        # hint: return (math.nan, delta): delta = onehot(y) @ B / N, with F.one_hot(y, classes, out.dtype), B =
        # hint: self.feedback (classes = its first dimension) and project(); N is the batch size
        target = F.one_hot(y, int(self.feedback.shape[0]), out.dtype)
        return math.nan, project(target, self.feedback) / out.shape[0]
        # END SOLUTION


class OutputModule(LocalModule):
    """The classifier block as a local module whose loss is the trainer's output loss (ce or bce)."""

    def __init__(self, body, make_optimizer, output_loss):
        super().__init__(body, None, make_optimizer)
        self.output_loss = output_loss

    def local_loss(self, out, y):
        return self.output_loss(out, y)


class DRTPTrainer(OutputLoss, LocalTrainer):
    """Direct random target projection: each hidden block is a module learning from the label alone; the
    classifier block learns from the loss on the (constant) output of the last hidden block."""

    name = "drtp"

    def __init__(
        self,
        model,
        make_optimizer,
        feedback_init="kaiming",
        loss="ce",
        label_smoothing=0.0,
        seed=0,
        feedback_scale="mean",
    ):
        super().__init__(model)
        self._init_loss(loss, label_smoothing)
        self.feedback_init, self.feedback_scale = feedback_init, _check_scale(feedback_scale)
        blocks = model.layers
        feedback = block_feedback(model, default_rng([seed, 5003]), feedback_init, _dtype(model))
        self.modules = [
            RandomTargetModule(Sequential(block), b, make_optimizer, feedback_scale)
            for block, b in zip(blocks[:-1], feedback)
        ]
        self.modules.append(OutputModule(Sequential(blocks[-1]), make_optimizer, self.output_loss))


# --- shallow ---------------------------------------------------------------------------------------
class ShallowTrainer(OutputLoss, Trainer):
    """The floor: hidden blocks stay at their initial weights (batch norm still normalises with batch
    statistics, as in every other trainer); only the output layer learns, from the true gradient."""

    name = "shallow"

    def __init__(self, model, make_optimizer, loss="ce", label_smoothing=0.0):
        super().__init__(model)
        self._init_loss(loss, label_smoothing)
        self.optimizer = make_optimizer(model.layers[-1].parameters())

    def optimizers(self):
        return [self.optimizer]

    def train_step(self, x, y):
        blocks = self.model.layers
        h = x
        for block in blocks[:-1]:
            h = block.forward(h)
            block.forget()  # no backward will come: drop what forward kept for it
        logits = blocks[-1].forward(h)
        loss, dlogits = self.output_loss(logits, y)
        blocks[-1].backward(dlogits, need_input_grad=False)
        self.optimizer.step()
        return loss
