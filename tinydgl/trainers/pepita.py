"""PEPITA: learning with two forward passes and no backward pass.

Where does each block's gradient come from? **From the difference between its two forward passes.** Pass 1
runs x and gives the error e = softmax(h_L) - onehot(y); pass 2 runs x + F e (F a fixed random matrix).
Hidden block l: dW_l = (h_l - h_l^mod) (outer) h_{l-1}^mod / N; last block: dW_L = e_mod (outer)
h_{L-1}^mod / N. Each signal goes to the block's Linear layer's own backward: no layer's math is copied
here, and no gradient crosses a block boundary. Networks: `--model mlp --no-batchnorm`.

Paper: Dellaferrera & Kreiman, "Error-driven input modulation: solving the credit assignment problem without
a backward pass", ICML 2022; official code GiorgiaD/PEPITA (fully connected, learn_type "ERIN").
Design notes (F, the optimizer, where we differ from the official code): docs/methods/pepita.md.
"""

import numpy as np

from .. import functional as F
from ..backend import asarray, default_rng, to_numpy
from ..nn import Flatten, LeakyReLU, Linear, ReLU, Tanh
from .base import Trainer
from .feedback_alignment import feedback_matrix, project

F_SCALE = 0.05  # the official code's scale of the error projection F (its --Bstd)
_ELEMENTWISE = (ReLU, Tanh, LeakyReLU)


def block_linear(block, last):
    """The one Linear layer of a PEPITA block: [Flatten] Linear [activation] (the last block: no activation).
    Any other layer is refused, with what to use instead."""
    linears = [layer for layer in block.layers if isinstance(layer, Linear)]
    allowed = (Flatten, Linear) if last else (Flatten, Linear, *_ELEMENTWISE)
    other = [type(layer).__name__ for layer in block.layers if not isinstance(layer, allowed)]
    if len(linears) != 1 or other:
        found = " -> ".join(type(layer).__name__ for layer in block.layers)
        raise ValueError(
            f"pepita trains fully connected blocks of Linear -> activation (the official fully connected "
            f"code, without batch norm or dropout), and the output block is one Linear; this model has a "
            f"block {found}. Use --model mlp --no-batchnorm."
        )
    return linears[0]


class PEPITATrainer(Trainer):
    """PEPITA on a fully connected network (docs/methods/pepita.md). f_scale: the scale of F (0.05)."""

    name = "pepita"
    forward_passes = 2  # the second, modulated pass is what the learning signal costs (train/compute.py)

    def __init__(self, model, make_optimizer, pepita_f_scale=F_SCALE, seed=0):
        super().__init__(model)
        blocks = model.layers
        self.linears = [block_linear(block, j == len(blocks) - 1) for j, block in enumerate(blocks)]
        if pepita_f_scale <= 0:
            raise ValueError(f"the scale of F must be positive, got {pepita_f_scale}.")
        self.f_scale = pepita_f_scale
        self.optimizer = make_optimizer(model.parameters())
        input_dim = int(np.prod(model.input_shape))
        dtype = model.parameters()[0].data.dtype
        # Stored as (classes, *input shape) so that project(e, F) is F e for each example, in the input's shape.
        projection = feedback_matrix(
            (model.num_classes, *model.input_shape), input_dim, default_rng([seed, 5005]), "kaiming", dtype
        )
        self.projection = projection * pepita_f_scale

    def optimizers(self):
        return [self.optimizer]

    def train_step(self, x, y):
        blocks = self.model.layers
        n = x.shape[0]
        # Pass 1, the clean input: only the activations are kept, nothing for a backward pass.
        clean, h = [], x
        for block in blocks:
            h = block.forward(h)
            block.forget()
            clean.append(h)
        loss, dlogits = F.softmax_cross_entropy(clean[-1], y)
        error = dlogits * n  # e = softmax(h_L) - onehot(y), per example
        # BEGIN SOLUTION a5-pepita-update
        # hint: pass 2 on x + project(error, self.projection); hidden block l: its Linear's backward of
        # hint: (h_l - h_l^mod) / N, then block.forget(); the last block: backward of (softmax(h_L^mod) - onehot(y)) / N;
        # hint: no input gradients
        # Pass 2, the input modulated by the error: every Linear keeps its (modulated) input.
        modulated, h = [], x + project(error, self.projection)
        for block in blocks:
            h = block.forward(h)
            modulated.append(h)
        # Where each block's gradient comes from: hidden blocks, the change the modulation made to their output;
        # the last block, the modulated pass's error. Each times the block's modulated input (Linear's backward).
        for block, linear, h_clean, h_mod in zip(blocks[:-1], self.linears, clean, modulated):
            linear.backward((h_clean - h_mod) / n, need_input_grad=False)  # dW = x_mod^T (h - h_mod) / N
            block.forget()  # the activation's cache: PEPITA uses no derivative of it
        error_mod = F.softmax(modulated[-1]) - F.one_hot(y, error.shape[1], error.dtype)  # no loss: no host sync
        blocks[-1].backward(error_mod / n, need_input_grad=False)  # dW = h_mod^T e_mod / N
        # END SOLUTION
        self.optimizer.step()
        return loss

    def resume_state(self):
        """Adds F (drawn from the seed at construction; saved so a resumed run uses exactly the same one)."""
        arrays, values = super().resume_state()
        return {**arrays, "pepita_projection": to_numpy(self.projection)}, values

    def load_resume_state(self, arrays, values):
        super().load_resume_state(arrays, values)
        if "pepita_projection" in arrays:
            self.projection = asarray(np.asarray(arrays["pepita_projection"]), like=self.projection)
