"""Forward gradients: learning from directional derivatives computed in forward mode, with no backward pass
through the network.

Where does each block's gradient come from? **From a directional derivative**: draw a random direction v,
run the forward pass with its tangent (`Module.jvp`, the ops' `*_jvp`), read the loss's slope along v,
d = grad L . v, and take g = d v, an unbiased estimate of the gradient. `mode` "weight" perturbs the
parameters, "activity" each block's output; `loss` "global" or "local" (DGL-style modules with heads);
`guess="local"` pushes a local loss's gradient instead of a random direction (biased, far less noisy).

Papers: Baydin et al. 2022, "Gradients without backpropagation"; Ren et al., ICLR 2023, "Scaling forward
gradient with local losses"; Fournier et al., ICML 2023, "Can forward gradient match backpropagation?".
Design notes (each option, the per-example slopes, batch norm): docs/methods/forward-gradient.md.
"""

import math

from .. import functional as F
from ..backend import array_namespace, asarray, default_rng
from .dgl import head_factory
from .local import LocalModule, LocalTrainer, block_output_shapes, modules_from_groups, split_blocks

FG_MODES = ("weight", "activity")
FG_LOSSES = ("global", "local")
FG_GUESSES = ("random", "local")


class ForwardGradientModule(LocalModule):
    """A LocalModule whose gradient is estimated from directional derivatives (docs/methods/forward-gradient.md)."""

    def __init__(self, body, head, make_optimizer, mode, directions, rng, label_smoothing=0.0, guess_heads=None):
        # guess_heads: one auxiliary head per block but the last, whose local gradient is that block's guess
        # direction (guess "local"); None: random directions.
        self.guess_heads = guess_heads
        super().__init__(body, head, make_optimizer, label_smoothing)
        self.mode, self.directions, self.rng = mode, directions, rng

    def parameters(self):
        return super().parameters() + [p for head in (self.guess_heads or []) for p in head.parameters()]

    def random_direction(self, like):
        """A standard normal direction of `like`'s shape, drawn on the host (one seed, every backend)."""
        return asarray(self.rng.standard_normal(tuple(like.shape)), dtype=like.dtype, like=like)

    def logits_tangent(self, dout):
        """The tangent of the local logits, given the tangent dout of the body's output (None: it does not move)."""
        return dout if self.head is None else self.head.jvp(dout)

    def estimate_gradients(self, x, y):
        """Forward pass on a constant input x, then fill each parameter's .grad with the forward-gradient
        estimate averaged over `directions` directions. Returns (loss, output passed on as a constant)."""
        outputs = []  # each block's output (the body's forward, block by block)
        for block in self.body.layers:
            x = block.forward(x)
            outputs.append(x)
        logits = x if self.head is None else self.head.forward(x)
        if self.mode == "weight":
            loss = self._weight_perturbation(logits, y)
        elif self.guess_heads is not None:
            loss = self._guided_activity_perturbation(logits, y, outputs)
        else:
            loss = self._activity_perturbation(logits, y, outputs)
        return loss, x

    def _weight_perturbation(self, logits, y):
        xp = array_namespace(logits)
        params = self.parameters()
        estimates = [None] * len(params)
        # The loss's derivative along a direction is <dloss/dlogits, the logits' tangent> (the loss's own JVP,
        # `softmax_cross_entropy_row_jvp`), and dloss/dlogits is the same for every direction: computed once,
        # so the slopes stay on the device and a step makes one host sync (the reported loss), not 2K.
        loss, dloss_dlogits = F.softmax_cross_entropy(logits, y, self.label_smoothing)
        for _ in range(self.directions):
            for p in params:
                p.tangent = self.random_direction(p.data)
            # BEGIN SOLUTION a5-forward-gradient
            # hint: the slope along the tangents: <dloss_dlogits, the logits' tangent> (self.body.jvp(None), then
            # hint: self.logits_tangent); each estimates[i] gathers slope * p.tangent, averaged over the directions
            slope = xp.sum(dloss_dlogits * self.logits_tangent(self.body.jvp(None)))
            # The gradient's estimate along this direction: the slope times the direction itself.
            for i, p in enumerate(params):
                share = (slope / self.directions) * p.tangent
                estimates[i] = share if estimates[i] is None else estimates[i] + share
            # END SOLUTION
        for p, g in zip(params, estimates):
            p.grad, p.tangent = g, None
        self.body.forget()
        if self.head is not None:
            self.head.forget()
        return loss

    def _activity_perturbation(self, logits, y, outputs):
        xp = array_namespace(logits)
        blocks = self.body.layers
        output_grads = [None] * len(blocks)
        for _ in range(self.directions):
            tangent, pushes = None, []
            for block, out in zip(blocks, outputs):
                tangent = block.jvp(tangent)  # the directions pushed into the blocks below, carried up
                push = self.random_direction(out)
                tangent = push if tangent is None else tangent + push
                pushes.append(push)
            # One slope per example: example n's loss along its own directions. Each example's estimate
            # then carries only its own direction's noise, not the batch's (Ren et al. section 3).
            loss, slopes = F.softmax_cross_entropy_row_jvp(
                logits, y, self.logits_tangent(tangent), self.label_smoothing
            )
            for i, push in enumerate(pushes):
                share = xp.reshape(slopes * (1.0 / self.directions), (-1,) + (1,) * (push.ndim - 1)) * push
                output_grads[i] = share if output_grads[i] is None else output_grads[i] + share
        if self.head is not None:
            _, dlogits = F.softmax_cross_entropy(logits, y, self.label_smoothing)
            self.head.backward(dlogits, need_input_grad=False)  # the head's exact local gradient
        for block, grad in zip(blocks, output_grads):
            block.backward(grad, need_input_grad=False)  # through this block's own layers only
        return loss

    def local_guesses(self, logits, y, outputs):
        """Each block's guess direction (its output's shape): the gradient of its auxiliary head's loss (which
        also gives the head its own gradient), and for the last block the loss's gradient itself."""
        guesses = []
        for head, out in zip(self.guess_heads, outputs):
            _, dlocal = F.softmax_cross_entropy(head.forward(out), y, self.label_smoothing)
            guesses.append(head.backward(dlocal))
        return guesses + [F.softmax_cross_entropy(logits, y, self.label_smoothing)[1]]

    def _guided_activity_perturbation(self, logits, y, outputs):
        xp = array_namespace(logits)
        blocks = self.body.layers
        for k, guess in enumerate(self.local_guesses(logits, y, outputs)):
            tangent = guess  # pushed into block k's output alone, carried up to the loss
            for block in blocks[k + 1 :]:
                tangent = block.jvp(tangent)
            loss, slopes = F.softmax_cross_entropy_row_jvp(logits, y, tangent, self.label_smoothing)
            # Project the global gradient on the guess, example by example: <grad L_n, guess_n> / |guess_n|^2.
            axes = tuple(range(1, guess.ndim))
            weights = slopes / (xp.sum(guess * guess, axis=axes) + 1e-16)
            blocks[k].backward(xp.reshape(weights, (-1,) + (1,) * len(axes)) * guess, need_input_grad=False)
        return loss

    def step(self, x, y):
        """One local update from the forward-gradient estimate: returns (loss, output passed on as a constant)."""
        loss, out = self.estimate_gradients(x, y)
        self.optimizer.step()
        return loss, out


class ForwardGradientTrainer(LocalTrainer):
    """Forward-gradient training. fg_mode: weight or activity perturbation; fg_loss: global (the network's
    loss) or local (DGL's modules and auxiliary heads, `aux`, default a linear head); fg_directions: K
    directions averaged per step; fg_guess: random directions, or local (guesses from auxiliary heads)."""

    name = "fg"

    def __init__(
        self,
        model,
        make_optimizer,
        fg_mode="weight",
        fg_loss="global",
        fg_directions=1,
        fg_guess="random",
        aux="linear",
        modules=None,
        boundaries=None,
        label_smoothing=0.0,
        seed=0,
    ):
        super().__init__(model)
        if fg_mode not in FG_MODES:
            raise ValueError(f"fg mode must be one of {', '.join(FG_MODES)}, got {fg_mode!r}.")
        if fg_loss not in FG_LOSSES:
            raise ValueError(f"fg loss must be one of {', '.join(FG_LOSSES)}, got {fg_loss!r}.")
        if int(fg_directions) < 1:
            raise ValueError(f"fg directions must be at least 1, got {fg_directions}.")
        if fg_guess not in FG_GUESSES:
            raise ValueError(f"fg guess must be one of {', '.join(FG_GUESSES)}, got {fg_guess!r}.")
        if fg_guess == "local" and (fg_mode, fg_loss, int(fg_directions)) != ("activity", "global", 1):
            raise ValueError(
                "--fg-guess local projects the global loss's gradient on a local one: use it with "
                "--fg-mode activity --fg-loss global, and one direction (the guess is one direction)."
            )
        if fg_loss == "global" and (modules is not None or boundaries):
            raise ValueError("--modules/--boundaries cut the network for local losses: use them with --fg-loss local.")
        self.fg_mode, self.fg_loss, self.fg_directions = fg_mode, fg_loss, int(fg_directions)
        num_hidden = len(model.layers) - 1
        if fg_loss == "global" or num_hidden == 0:
            groups = [list(range(num_hidden))] if num_hidden else [[]]
        else:
            groups = split_blocks(num_hidden, modules, boundaries)
        # DGL's bodies and heads (no optimizers yet: the modules below make their own)
        plain = modules_from_groups(model, groups, head_factory(model, aux, seed), lambda params: None)
        self.fg_guess = fg_guess
        guess_heads = None
        if fg_guess == "local":  # one auxiliary head per hidden block, as DGL's
            make_head, shapes = head_factory(model, aux, seed), block_output_shapes(model)
            guess_heads = [make_head(j, shapes[j], model.layers[j]) for j in range(num_hidden)]
        self.direction_rng = default_rng(seed + 2000)  # the directions' own generator, apart from the weights'
        self.modules = [
            ForwardGradientModule(
                m.body,
                m.head,
                make_optimizer,
                fg_mode,
                self.fg_directions,
                self.direction_rng,
                label_smoothing,
                guess_heads,
            )
            for m in plain
        ]

    def auxiliary_modules(self):
        guess_heads = {f"guess{j}": head for m in self.modules for j, head in enumerate(m.guess_heads or [])}
        return {**super().auxiliary_modules(), **guess_heads}

    def resume_state(self):
        arrays, values = super().resume_state()
        return arrays, {**values, "fg_direction_rng": self.direction_rng.bit_generator.state}

    def load_resume_state(self, arrays, values):
        super().load_resume_state(arrays, values)
        if "fg_direction_rng" in values:
            self.direction_rng.bit_generator.state = values["fg_direction_rng"]

    def estimate_gradients(self, x, y):
        """Fill every parameter's .grad with its estimate, module by module, without updating. Returns the loss."""
        loss = math.nan
        for module in self.modules:
            loss, x = module.estimate_gradients(x, y)
        return loss
