"""Optimizers and learning-rate schedules, written out.

An optimizer holds a list of `Parameter`s and updates `p.data` from `p.grad` in `step()`. Parameters whose
`grad` is None are skipped (their block did not run this step). Each optimizer can save and restore its
state (`state_dict` / `load_state_dict`) as host NumPy arrays for checkpoints.

`train()` and `eval()`, called by the training loop before training and before evaluating, do nothing except
for the schedule-free optimizers, which train at y and evaluate at x (docs/protocol.md, section 2).

On CuPy, SGD (with or without momentum, NAG), Adam and AdamW update each parameter with one fused kernel
(tinydgl/kernels/elementwise.py: the same arithmetic as the readable form below, in one launch instead of
up to 13); NumPy runs the readable form. TINYDGL_FUSED_KERNELS=0 turns the fused kernels off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .backend import Array, array_namespace, asarray, is_numpy_like, to_numpy
from .kernels.elementwise import fused_update, has_fused_updates
from .nn.module import Parameter


class Optimizer:
    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("The optimizer got no parameters to train.")
        if lr <= 0:
            raise ValueError(f"The learning rate must be positive, got {lr}.")
        self.lr = lr
        self.base_lr = lr  # what epoch schedules (`scheduled_lr`) scale; lr is the rate in use
        self.steps = 0
        self.state: list[dict[str, Any]] = [
            dict() for _ in self.params
        ]  # per-parameter buffers (momentum, Adam moments)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def train(self) -> None:
        """Put the weights that training steps from into the parameters (a no-op except for schedule-free)."""

    def eval(self) -> None:
        """Put the weights to evaluate into the parameters (a no-op except for schedule-free)."""

    def step(self) -> None:
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self._update(p, state)

    def _update(self, p: Parameter, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # Optimizer-wide numbers besides lr and steps that a checkpoint must keep (schedule-free's averaging
    # weights and its train/eval mode); each is a plain float, int or bool attribute.
    scalar_names: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """{"lr", "steps", "buffers": {"<param index>.<name>": ndarray}, "counts": {...: int},
        "scalars": {name: number}}."""
        buffers = {
            f"{i}.{k}": to_numpy(v).copy()
            for i, s in enumerate(self.state)
            for k, v in s.items()
            if not isinstance(v, int)
        }
        counts = {f"{i}.{k}": v for i, s in enumerate(self.state) for k, v in s.items() if isinstance(v, int)}
        scalars = {name: getattr(self, name) for name in self.scalar_names}
        return {"lr": self.lr, "steps": self.steps, "buffers": buffers, "counts": counts, "scalars": scalars}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr, self.steps = state["lr"], state["steps"]
        for name in self.scalar_names:
            if name in state.get("scalars", {}):
                setattr(self, name, type(getattr(self, name))(state["scalars"][name]))
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

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0.")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, p: Parameter, state: dict[str, Any]) -> None:
        xp = array_namespace(p.data)
        if has_fused_updates(xp):  # the same update in one launch, p (and v) in place
            if self.momentum:
                if "velocity" not in state:
                    state["velocity"] = xp.zeros_like(p.grad)  # momentum * 0 + g = g: the first step's v
                fused_update(
                    "sgd_momentum",
                    xp,
                    p.grad,
                    self.lr,
                    self.weight_decay,
                    self.momentum,
                    1.0 if self.nesterov else 0.0,
                    p.data,
                    state["velocity"],
                )
            else:
                fused_update("sgd", xp, p.grad, self.lr, self.weight_decay, p.data)
            return
        g: Array = p.grad  # not None: step() skips the parameters without a gradient
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

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay

    def _decay(self, p: Parameter, g: Array) -> Array:
        return g + self.weight_decay * p.data if self.weight_decay else g

    def _fused_decay(self) -> tuple[float, float]:
        """(l2, shrink) of the fused kernel: Adam adds weight_decay * p to the gradient and shrinks nothing."""
        return self.weight_decay, 1.0

    def _update(self, p: Parameter, state: dict[str, Any]) -> None:
        xp = array_namespace(p.data)
        t = state.get("t", 0) + 1  # per parameter: a block that skips a step keeps its own count
        state["t"] = t
        if "m" not in state:
            state["m"], state["v"] = xp.zeros_like(p.grad), xp.zeros_like(p.grad)
        step_size = self.lr / (1 - self.beta1**t)  # bias corrections folded into two scalars
        root_correction = (1 - self.beta2**t) ** 0.5
        if has_fused_updates(xp):  # the readable form below in one launch, p, m and v in place
            l2, shrink = self._fused_decay()
            fused_update(
                "adam",
                xp,
                p.grad,
                step_size,
                self.beta1,
                1 - self.beta1,
                self.beta2,
                1 - self.beta2,
                root_correction,
                self.eps,
                l2,
                shrink,
                p.data,
                state["m"],
                state["v"],
            )
            return
        g = self._decay(p, p.grad)
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

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p: Parameter, g: Array) -> Array:
        return g

    def _fused_decay(self) -> tuple[float, float]:
        return 0.0, 1 - self.lr * self.weight_decay  # the kernel shrinks p first, as _update below

    def _update(self, p: Parameter, state: dict[str, Any]) -> None:
        if self.weight_decay and not has_fused_updates(array_namespace(p.data)):
            p.data = p.data * (1 - self.lr * self.weight_decay)
        super()._update(p, state)


class _ScheduleFree(Optimizer):
    """What both schedule-free optimizers share (Defazio et al., "The Road Less Scheduled", 2024): the
    iterate averaging and the train/eval swap (docs/protocol.md, section 2). The equations follow the copy
    in the official LLS code (an older variant of facebookresearch/schedule_free).

    Three sequences per parameter: z (the plain optimizer's iterates), x (a weighted average of the z's:
    the weights to evaluate) and y = beta * x + (1 - beta) * z (where gradients are taken). Only y and z
    are stored: the parameter holds y in train mode and x in eval mode, z lives in the state.
    Averaging weights: step k (0-based) has weight (k + 1)**r * lr_max**weight_lr_power, and
    c = weight / (sum of the weights so far) is how far x moves towards z. With r = 0 and a constant lr
    this is c = 1 / (k + 1): x is the plain average of every z so far.

    `step()` refuses to run in eval mode (it would take a gradient step from x). The training loop calls
    `train()` before training and `eval()` before evaluating, recalibrating batch norm or checkpointing.
    """

    scalar_names = ("lr_max", "weight_sum", "train_mode")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        beta: float,
        weight_decay: float,
        warmup_steps: int,
        r: float,
        weight_lr_power: float,
    ) -> None:
        super().__init__(params, lr)
        if not 0.0 < beta < 1.0:
            raise ValueError(f"The averaging coefficient (beta1 / momentum) must lie in (0, 1), got {beta}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.beta, self.weight_decay = beta, weight_decay
        self.warmup_steps, self.r, self.weight_lr_power = int(warmup_steps), r, weight_lr_power
        self.lr_max, self.weight_sum, self.train_mode = -1.0, 0.0, True

    def train(self) -> None:
        """x -> y = x + (1 - beta) * (z - x), i.e. beta * x + (1 - beta) * z."""
        if not self.train_mode:
            self._move_towards_z(1 - self.beta)
            self.train_mode = True

    def eval(self) -> None:
        """y -> x = y + (1 - 1 / beta) * (z - y), i.e. (y - (1 - beta) * z) / beta."""
        if self.train_mode:
            self._move_towards_z(1 - 1 / self.beta)
            self.train_mode = False

    def _move_towards_z(self, weight: float) -> None:
        for p, state in zip(self.params, self.state):
            if "z" in state:  # a parameter that has never had a gradient has no z yet: x = y = z
                p.data = p.data + weight * (state["z"] - p.data)

    def _step_size(self, k: int) -> float:
        """This step's learning rate (warm-up and, for Adam, bias correction folded in)."""
        raise NotImplementedError

    def _averaged_update(self, p: Parameter, state: dict[str, Any], lr_t: float, c: float) -> None:
        """One parameter's step at rate lr_t, its average x moving a fraction c of the way towards z."""
        raise NotImplementedError

    def step(self) -> None:
        if not self.train_mode:
            raise RuntimeError(
                f"{type(self).__name__}.step() in eval mode: the parameters hold the averaged "
                f"weights x, not the training point y. Call optimizer.train() (or "
                f"trainer.to_train_weights()) before training."
            )
        k = self.steps
        lr_t = self._step_size(k)
        self.lr_max = max(self.lr_max, lr_t)
        weight = (k + 1) ** self.r * self.lr_max**self.weight_lr_power
        self.weight_sum += weight
        c = weight / self.weight_sum
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                if "z" not in state:  # z starts at the parameter's value when it first learns
                    state["z"] = array_namespace(p.data).asarray(p.data, copy=True)
                self._averaged_update(p, state, lr_t, c)
        self.steps = k + 1

    def _warmup(self, k: int) -> float:
        return (k + 1) / self.warmup_steps if k < self.warmup_steps else 1.0


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-free AdamW, the optimizer of every table in the LLS paper. Per parameter, gradient g at y:

        v  = beta2 * v + (1 - beta2) * g**2
        gh = g / (sqrt(v) + eps) + weight_decay * y          (decay taken at y)
        y  = y + c * (z - y)
        y  = y + lr_t * (beta1 * (1 - c) - 1) * gh
        z  = z - lr_t * gh
    with lr_t = lr * warmup * sqrt(1 - beta2**(k + 1)): this older variant folds Adam's second-moment bias
    correction into the step size and has no first moment (the averaging plays its part).
    Defaults are the official copy's (lr 0.0025; the paper trains with 5e-3).
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ) -> None:
        super().__init__(params, lr, betas[0], weight_decay, warmup_steps, r, weight_lr_power)
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps

    def _step_size(self, k: int) -> float:
        return self.lr * self._warmup(k) * math.sqrt(1 - self.beta2 ** (k + 1))

    def _averaged_update(self, p: Parameter, state: dict[str, Any], lr_t: float, c: float) -> None:
        xp = array_namespace(p.data)
        g: Array = p.grad  # not None: step() skips the parameters without a gradient
        y, z = p.data, state["z"]
        v = state["v"] = self.beta2 * state.get("v", xp.zeros_like(g)) + (1 - self.beta2) * (g * g)
        gh = g / (xp.sqrt(v) + self.eps)
        if self.weight_decay:
            gh = gh + self.weight_decay * y
        y = y + c * (z - y)
        p.data = y + (lr_t * (self.beta1 * (1 - c) - 1)) * gh
        state["z"] = z - lr_t * gh


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD: the same construction with `momentum` in place of beta1, no second moment, and
    lr_t = lr * warmup. Per parameter, gradient g at y:

        g = g + weight_decay * y;  y = y + c * (z - y);  y = y + lr_t * (momentum * (1 - c) - 1) * g;
        z = z - lr_t * g
    Defaults are the official copy's (lr 1.0, momentum 0.9).
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ) -> None:
        super().__init__(params, lr, momentum, weight_decay, warmup_steps, r, weight_lr_power)
        self.momentum = momentum

    def _step_size(self, k: int) -> float:
        return self.lr * self._warmup(k)

    def _averaged_update(self, p: Parameter, state: dict[str, Any], lr_t: float, c: float) -> None:
        g: Array = p.grad  # not None: step() skips the parameters without a gradient
        y, z = p.data, state["z"]
        if self.weight_decay:
            g = g + self.weight_decay * y
        y = y + c * (z - y)
        p.data = y + (lr_t * (self.momentum * (1 - c) - 1)) * g
        state["z"] = z - lr_t * g


class NAG(SGD):
    """Nesterov's accelerated gradient as `torch.optim.SGD(nesterov=True)` computes it (the DRTP reference
    code's default optimizer, momentum 0.9):

        g = grad + weight_decay * p;  v = momentum * v + g  (v = g at the first step);  p -= lr * (g + momentum * v)
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "adamw-sf": ScheduleFreeAdamW,
    "sgd-sf": ScheduleFreeSGD,
    "nag": NAG,
}


def build_optimizer(name: str, params: Iterable[Parameter], lr: float, **kwargs: Any) -> Optimizer:
    """`build_optimizer("adam", model.parameters(), lr=1e-3)`; names: sgd, adam, adamw, adamw-sf, sgd-sf, nag."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}.")
    return OPTIMIZERS[name](params, lr=lr, **kwargs)


class StepLR:
    """Multiply the learning rate by `gamma` every `step_size` calls to `step()` (call it once per epoch)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lr, self.count = optimizer.lr, 0

    def lr_at(self, count: int) -> float:
        return self.base_lr * self.gamma ** (count // self.step_size)

    def step(self) -> None:
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)


class CosineLR:
    """Cosine decay from the base rate to `min_lr` over `total` calls to `step()`, then constant."""

    def __init__(self, optimizer: Optimizer, total: int, min_lr: float = 0.0) -> None:
        self.optimizer, self.total, self.min_lr = optimizer, total, min_lr
        self.base_lr, self.count = optimizer.lr, 0

    def lr_at(self, count: int) -> float:
        progress = min(count, self.total) / self.total
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def step(self) -> None:
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)


# --- per-epoch schedules for the shared loop (`tinydgl.train.fit(..., lr_schedule=NAME)`) ---------------------
def _cooldown(epoch: int, epochs: int) -> float:
    """Forward-Forward's reference schedule as loeweX/Forward-Forward's src/utils.py computes it, with its
    0-based epoch e0 = epoch - 1: 1 while e0 <= E // 2, then 2 (1 + E - e0) / E. So E = 1 trains at 1,
    E = 5 at 1, 1, 1, 1.2, 0.8 (a 1-based reading would give 2 and 1, 1, 1.2, 0.8, 0.4)."""
    e0 = epoch - 1
    return 1.0 if e0 <= epochs // 2 else 2.0 * (1 + epochs - e0) / epochs


def _steps(epoch: int, epochs: int) -> float:
    """x0.1 after 60% of the epochs and x0.01 after 90%: PEPITA's reference schedule (GiorgiaD/PEPITA: eta
    x0.1 at epochs 60 and 90 of 100, i.e. from 1-based epoch 61 and 91)."""
    return 0.1 ** ((epoch > 0.6 * epochs) + (epoch > 0.9 * epochs))


LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda epoch, epochs: 1.0,
    "cooldown": _cooldown,
    "steps": _steps,
}


def scheduled_lr(optimizers: Iterable[Optimizer], schedule: str, epoch: int, epochs: int) -> None:
    """Set every optimizer's rate for (1-based) `epoch` of `epochs`: its base_lr times the schedule's factor.
    Depends on the epoch alone, so a resumed run sets the same rates as an uninterrupted one."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr schedule {schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}.")
    factor = LR_SCHEDULES[schedule](epoch, epochs)
    for optimizer in optimizers:
        optimizer.lr = optimizer.base_lr * factor
