"""Optimizers and learning-rate schedules, written out.

An optimizer holds a list of `Parameter`s and updates `p.data` from `p.grad` in `step()`. Parameters whose
`grad` is None are skipped (their block did not run this step). Each optimizer can save and restore its
state (`state_dict` / `load_state_dict`) as host NumPy arrays for checkpoints.
"""
import math

import numpy as np

from .backend import array_namespace, asarray, is_numpy_like, to_numpy


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("The optimizer got no parameters to train.")
        if lr <= 0:
            raise ValueError(f"The learning rate must be positive, got {lr}.")
        self.lr = lr
        self.steps = 0
        self.state = [dict() for _ in self.params]  # per-parameter buffers (momentum, Adam moments)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self._update(p, state)

    def _update(self, p, state):
        raise NotImplementedError

    def state_dict(self):
        """{"lr", "steps", "buffers": {"<param index>.<name>": ndarray}}."""
        buffers = {f"{i}.{k}": to_numpy(v).copy() for i, s in enumerate(self.state) for k, v in s.items() if not isinstance(v, int)}
        counts = {f"{i}.{k}": v for i, s in enumerate(self.state) for k, v in s.items() if isinstance(v, int)}
        return {"lr": self.lr, "steps": self.steps, "buffers": buffers, "counts": counts}

    def load_state_dict(self, state):
        self.lr, self.steps = state["lr"], state["steps"]
        self.state = [dict() for _ in self.params]
        for key, value in state["buffers"].items():
            i, name = key.split(".", 1)
            self.state[int(i)][name] = asarray(np.asarray(value), like=self.params[int(i)].data)
        for key, value in state.get("counts", {}).items():
            i, name = key.split(".", 1)
            self.state[int(i)][name] = int(value)


class SGD(Optimizer):
    """SGD with optional momentum, Nesterov momentum and L2 weight decay (PyTorch's update rule):

        g = grad + weight_decay * p;  v = momentum * v + g;  p -= lr * (g + momentum * v if nesterov else v)
    """

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0.")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, p, state):
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            v = state.get("velocity")
            v = g if v is None else self.momentum * v + g
            state["velocity"] = v
            g = g + self.momentum * v if self.nesterov else v
        p.data = p.data - self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; `weight_decay` adds an L2 term to the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay

    def _decay(self, p, g):
        return g + self.weight_decay * p.data if self.weight_decay else g

    def _update(self, p, state):
        xp = array_namespace(p.data)
        g = self._decay(p, p.grad)
        t = state.get("t", 0) + 1  # per parameter: a block that skips a step keeps its own count
        state["t"] = t
        if "m" not in state:
            state["m"], state["v"] = xp.zeros_like(g), xp.zeros_like(g)
        step_size = self.lr / (1 - self.beta1**t)  # bias corrections folded into two scalars
        root_correction = (1 - self.beta2**t) ** 0.5
        if is_numpy_like(xp):
            # In place: the same arithmetic without a fresh parameter-sized array per term (for a 1.3 M
            # parameter synthesizer the allocations cost more than the arithmetic).
            m, v = state["m"], state["v"]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            denom = xp.sqrt(v)
            denom /= root_correction
            denom += self.eps
            p.data -= step_size * (m / denom)
        else:
            m = self.beta1 * state["m"] + (1 - self.beta1) * g
            v = self.beta2 * state["v"] + (1 - self.beta2) * (g * g)
            state["m"], state["v"] = m, v
            p.data = p.data - step_size * m / (xp.sqrt(v) / root_correction + self.eps)


class AdamW(Adam):
    """Adam with *decoupled* weight decay (Loshchilov & Hutter 2019): p -= lr * weight_decay * p each step,
    instead of adding the decay to the gradient where Adam's scaling would distort it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p, g):
        return g

    def _update(self, p, state):
        if self.weight_decay:
            p.data = p.data * (1 - self.lr * self.weight_decay)
        super()._update(p, state)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def build_optimizer(name, params, lr, **kwargs):
    """`build_optimizer("adam", model.parameters(), lr=1e-3)`; names: sgd, adam, adamw."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}.")
    return OPTIMIZERS[name](params, lr=lr, **kwargs)


class StepLR:
    """Multiply the learning rate by `gamma` every `step_size` calls to `step()` (call it once per epoch)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lr, self.count = optimizer.lr, 0

    def lr_at(self, count):
        return self.base_lr * self.gamma ** (count // self.step_size)

    def step(self):
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)


class CosineLR:
    """Cosine decay from the base rate to `min_lr` over `total` calls to `step()`, then constant."""

    def __init__(self, optimizer, total, min_lr=0.0):
        self.optimizer, self.total, self.min_lr = optimizer, total, min_lr
        self.base_lr, self.count = optimizer.lr, 0

    def lr_at(self, count):
        progress = min(count, self.total) / self.total
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def step(self):
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
