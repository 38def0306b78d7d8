"""Decoupled Greedy Learning (Belilovsky, Eickenberg, Oyallon, ICML 2020) and sequential greedy training.

Where does each block's gradient come from? **From its module's auxiliary head** (`tinydgl.trainers.heads`):
module j minimises CE(y, g_j(f_j(x_{j-1}))) and passes f_j(x_{j-1}) on as a constant. The last module's
head is the network's own classifier. `aux` picks the head: a classifier (mlp-sr, mlp, cnn, linear), or one of
Nøkland & Eidnes' local losses (pred, sim, predsim; `heads.LocalLossHead`), which makes this the reference
code's layer-wise training of "Training neural networks with local error signals" (ICML 2019).

- `DGLTrainer` (Algorithm 1): every batch visits every module in order; all modules learn at once.
- `GreedyTrainer` (Bengio et al. 2007; Belilovsky et al. 2019): module 1 alone for E epochs, then it is
  frozen (batch-norm statistics included) and module 2 trains on its outputs, and so on.
"""

from .heads import PREDSIM_BETA, aux_head
from .local import LocalTrainer, modules_from_groups, split_blocks


def head_factory(model, aux, seed, predsim_beta=PREDSIM_BETA):
    """make_head(j, shape, block) for `modules_from_groups`: module j's auxiliary head of kind `aux` (on a
    block output of `shape`), seeded from `seed` + 1000 + j in the model's dtype. Used by dgl and fg."""

    def make_head(j, shape, block):
        dtype = model.parameters()[0].data.dtype
        return aux_head(aux, shape, model.num_classes, seed=seed + 1000 + j, dtype=dtype, beta=predsim_beta)

    return make_head


class DGLTrainer(LocalTrainer):
    """Synchronous DGL. modules=K or boundaries=[...] cut the hidden blocks (default: one module per block)."""

    name = "dgl"

    def __init__(
        self,
        model,
        make_optimizer,
        aux="mlp",
        modules=None,
        boundaries=None,
        label_smoothing=0.0,
        seed=0,
        predsim_beta=PREDSIM_BETA,
    ):
        super().__init__(model)
        self.groups = split_blocks(len(model.layers) - 1, modules, boundaries)
        make_head = head_factory(model, aux, seed, predsim_beta)
        self.modules = modules_from_groups(model, self.groups, make_head, make_optimizer, label_smoothing)


class GreedyTrainer(DGLTrainer):
    """Sequential greedy layer-wise training: one module at a time, `epochs_per_module` epochs each.

    Earlier modules are frozen (evaluation mode: their batch-norm statistics no longer move) and only
    forward their output; later modules wait. Until the last stage, predictions use the current module's
    auxiliary head, since the layers above it are still untrained.
    """

    name = "greedy"
    parallel: tuple = ()
    parallel_note = "greedy trains one module at a time"

    def __init__(
        self,
        model,
        make_optimizer,
        epochs_per_module=1,
        aux="mlp",
        modules=None,
        boundaries=None,
        label_smoothing=0.0,
        seed=0,
        predsim_beta=PREDSIM_BETA,
    ):
        if aux == "sim":
            raise ValueError(
                "greedy predicts with the current module's head until its last stage, and the sim head "
                "has no classifier: use --aux predsim or pred (or --trainer dgl with --aux sim)."
            )
        super().__init__(model, make_optimizer, aux, modules, boundaries, label_smoothing, seed, predsim_beta)
        if epochs_per_module < 1:
            raise ValueError(f"epochs_per_module must be at least 1, got {epochs_per_module}.")
        self.epochs_per_module = epochs_per_module
        self.stage = 0

    def start_epoch(self, epoch):
        self.stage = min(epoch // self.epochs_per_module, len(self.modules) - 1)

    def to_train_weights(self):
        # Only the current module trains. Frozen modules keep their evaluation weights (a schedule-free
        # optimizer's average x) for good, rather than swapping x -> y -> x every epoch.
        for j, module in enumerate(self.modules):
            if j == self.stage:
                module.optimizer.train()
            else:
                module.optimizer.eval()

    def recalibration_forward(self, x):
        # Frozen modules' statistics stay put, as in training; the current module (and the head that
        # makes the predictions until the last stage) re-estimates its own.
        for module in self.modules[: self.stage]:
            module.body.eval()
            x = module.forward(x)
        current = self.modules[self.stage]
        current.body.train()
        x = current.body.forward(x)
        if current.head is not None:
            current.head.train()
            current.head.forward(x)
            current.head.forget()
        current.body.forget()

    def train_step(self, x, y):
        for module in self.modules[: self.stage]:
            module.body.eval()  # frozen: batch norm uses its running statistics and they stay put
            x = module.forward(x)
        current = self.modules[self.stage]
        current.body.train()
        loss, _ = current.step(x, y)
        return loss

    def predict(self, x):
        self.model.eval()
        try:
            for module in self.modules[: self.stage + 1]:
                x = module.forward(x)
            current = self.modules[self.stage]
            if current.head is None:
                return x
            current.head.eval()
            logits = current.head.forward(x)
            current.head.train()
            return logits
        finally:
            self.model.train()
            for module in self.modules[: self.stage]:
                module.body.eval()
