"""Synthetic gradients: Decoupled Neural Interfaces (DNI) and their label-conditioned form (cDNI).

Where does each block's gradient come from? **From a synthesizer** — a small model `M_i` that looks at the
block's output `h_i` (and, for cDNI, the one-hot label) and predicts dL/dh_i. The block backpropagates that
prediction through itself only and steps at once (update unlocking). Each synthesizer learns by regression
on what block i+1 sends back to its input: the true gradient at the top, bootstrapped below.

    trainer = DNITrainer(model, lambda params: Adam(params, lr=1e-3), conditioned=True)   # cDNI
    loss = trainer.train_step(x, y)

Paper: Jaderberg et al., "Decoupled Neural Interfaces using Synthetic Gradients", ICML 2017.
Design notes (groups, why one process is slower than backprop): docs/methods/dni.md.
"""

import copy

import numpy as np

from .. import functional as F
from ..backend import array_namespace, default_rng, zeros_like_on
from ..nn import BatchNorm1d, BatchNorm2d, Conv2d, LeakyReLU, Linear, Module, ReLU, Sequential, Tanh
from ..nn.module import init_uniform
from .base import Trainer
from .local import block_output_shapes

SYNTHESIZERS = ("auto", "linear", "mlp", "conv", "mlp1")
PLACEMENTS = ("post-activation", "pre-activation")
UNITS = ("per-example", "raw")
ZERO_INITS = ("weight+bias", "weight")
ACTIVATIONS = (ReLU, LeakyReLU, Tanh)  # what "pre-activation" moves from a block to the group above


# --- synthesizers --------------------------------------------------------------------------------------


class ConcatLabel(Module):
    """cDNI for flat activations: (N, D) and a one-hot label (N, K) -> (N, D + K).

    Its input is a constant for the synthesizer (the block output and the label), so backward returns None.
    """

    def forward(self, h, label):
        xp = array_namespace(h)
        concat = getattr(xp, "concat", None) or xp.concatenate  # `concat` is the array-API name
        return concat([h, label], axis=1)

    def backward(self, dout, need_input_grad=False):
        return None

    def __repr__(self):
        return "ConcatLabel()"


class LabelBias2d(Module):
    """cDNI for conv activations: add a per-channel bias computed from the one-hot label, broadcast over space,
    to the synthesizer's input.

    h: (N, C, H, W), label: (N, K) one-hot -> h + reshape(Linear(K, C)(label), (N, C, 1, 1)). Concatenating
    K constant planes to a conv's input would do the same away from the borders; a bias is cheaper.
    """

    def __init__(self, num_classes, channels, rng, dtype):
        super().__init__()
        self.project = Linear(num_classes, channels, rng=rng, dtype=dtype)

    def children(self):
        return [self.project]

    def forward(self, h, label):
        xp = array_namespace(h)
        bias = self.project.forward(label)
        return h + xp.reshape(bias, (bias.shape[0], bias.shape[1], 1, 1))

    def backward(self, dout, need_input_grad=True):
        xp = array_namespace(dout)
        self.project.backward(xp.sum(dout, axis=(2, 3)), need_input_grad=False)  # the label needs no gradient
        return dout

    def __repr__(self):
        return f"LabelBias2d({self.project.in_features} -> {self.project.out_features} channels)"


class Synthesizer(Module):
    """M_i: predicts the gradient of the loss with respect to a block's output h (per example: "Units" in
    lessons/06-synthetic-gradients.md), optionally from the one-hot label too.

    forward(h, label=None) -> synthetic gradient with h's shape. backward(dout) fills the parameters'
    gradients (the synthesizer's inputs are constants, so nothing is returned).
    """

    def __init__(self, body: Sequential, conditioning: Module | None = None):
        super().__init__()
        self.body, self.conditioning = body, conditioning

    def children(self):
        return [self.body] + ([self.conditioning] if self.conditioning is not None else [])

    def forward(self, h, label=None):
        if self.conditioning is not None:
            h = self.conditioning.forward(h, label)
        return self.body.forward(h)

    def backward(self, dout, need_input_grad=False):
        trains_conditioning = self.conditioning is not None and bool(self.conditioning.parameters())
        d = self.body.backward(dout, need_input_grad=trains_conditioning)
        if trains_conditioning:
            self.conditioning.backward(d)
        return None

    def __repr__(self):
        inner = "\n".join("  " + line for m in self.children() for line in repr(m).splitlines())
        return f"Synthesizer(\n{inner}\n)"


def _checked_kind(kind, shape, zero_init):
    """The synthesizer kind for per-example `shape` ("auto" resolved), or a ValueError saying what fits."""
    flat = len(shape) == 1
    if len(shape) not in (1, 3):
        raise ValueError(f"synthesizers handle activations of shape (N, D) or (N, C, H, W), got per-example {shape}.")
    if kind == "auto":
        kind = "mlp" if flat else "conv"
    if zero_init not in ZERO_INITS:
        raise ValueError(f"Unknown synthesizer zero_init {zero_init!r}; choose one of: {', '.join(ZERO_INITS)}.")
    if kind in ("mlp", "mlp1") and not flat:
        raise ValueError(
            f"the '{kind}' synthesizer is for flat activations, got per-example shape {shape}; use 'conv' or 'linear'."
        )
    if kind == "conv" and flat:
        raise ValueError(
            f"the 'conv' synthesizer is for 4-D activations, got per-example shape {shape}; use 'mlp' or 'linear'."
        )
    return kind


def _koz4k_first_layer(width, hidden, num_classes, rng, dtype):
    """koz4k's mlp1 first layer: Linear(width [+ K], hidden). For cDNI koz4k's BasicSynthesizer adds two Linear
    layers, input_trigger(h) + input_context(label), each drawn with PyTorch's bounds for its own fan-in: the
    label's rows (1/sqrt(K)) start larger than one Linear on [h, label] would draw them (1/sqrt(D + K)), and so
    does the bias (a sum of two)."""
    first = Linear(width + (num_classes or 0), hidden, rng=rng, dtype=dtype)
    if num_classes is not None:
        k, d = num_classes, width
        xp = array_namespace(first.weight.data)
        rows = [init_uniform(rng, (d, hidden), d**-0.5, dtype), init_uniform(rng, (k, hidden), k**-0.5, dtype)]
        first.weight.data = xp.concat(rows, axis=0)
        bias = init_uniform(rng, (hidden,), d**-0.5, dtype)
        first.bias.data = bias + init_uniform(rng, (hidden,), k**-0.5, dtype)
    return first


def build_synthesizer(kind, shape, num_classes, rng, dtype, hidden=None, conv_channels=128, zero_init="weight+bias"):
    """A synthesizer for activations of per-example `shape` ((D,) or (C, H, W)).

    kind: "linear" (one Linear, or one resolution-preserving 5x5 conv for 4-D activations); "mlp" (two
    hidden layers of `hidden` units, default 1024, with BN and ReLU, flat activations); "mlp1" (koz4k's
    examples/mnist-mlp synthesizer: one hidden ReLU layer of `hidden` units, default 256, no batch norm; for
    cDNI koz4k adds Linear(label) to the first layer's output, which is this Linear on [h, label]); "conv" (two 5x5 convs of
    `conv_channels` with BN and ReLU and a final 5x5 conv, all resolution-preserving, 4-D activations);
    "auto": mlp for flat activations, conv for 4-D ones. num_classes: None for DNI, K for cDNI.
    zero_init: "weight+bias" zeroes the last layer's weight and bias, so every synthetic gradient is exactly
    zero before training; "weight" (koz4k's) zeroes the weight only, the bias keeping its random init.
    """
    flat = len(shape) == 1
    kind = _checked_kind(kind, shape, zero_init)
    width = shape[0]
    conditioning = None
    if num_classes is not None:
        conditioning = ConcatLabel() if flat else LabelBias2d(num_classes, width, rng, dtype)
    width_in = width + (num_classes if num_classes is not None and flat else 0)

    def conv(cin, cout):
        return Conv2d(cin, cout, 5, padding=2, rng=rng, dtype=dtype)  # 5x5, "same" padding: keeps H x W

    if kind == "linear":
        layers = [Linear(width_in, width, rng=rng, dtype=dtype) if flat else conv(width_in, width)]
    elif kind == "mlp1":
        hidden = hidden or 256
        first = _koz4k_first_layer(width, hidden, num_classes, rng, dtype)
        layers = [first, ReLU(), Linear(hidden, width, rng=rng, dtype=dtype)]
    elif kind == "mlp":
        hidden = hidden or 1024
        layers = [
            Linear(width_in, hidden, rng=rng, dtype=dtype),
            BatchNorm1d(hidden, dtype=dtype),
            ReLU(),
            Linear(hidden, hidden, rng=rng, dtype=dtype),
            BatchNorm1d(hidden, dtype=dtype),
            ReLU(),
            Linear(hidden, width, rng=rng, dtype=dtype),
        ]
    elif kind == "conv":
        layers = [
            conv(width_in, conv_channels),
            BatchNorm2d(conv_channels, dtype=dtype),
            ReLU(),
            conv(conv_channels, conv_channels),
            BatchNorm2d(conv_channels, dtype=dtype),
            ReLU(),
            conv(conv_channels, width),
        ]
    else:
        raise ValueError(f"Unknown synthesizer {kind!r}; choose one of: {', '.join(SYNTHESIZERS)}.")
    # Zero-initialise the last layer, as Jaderberg et al. do: training starts from zero synthetic gradients,
    # so no block is pushed around by an untrained synthesizer's noise.
    last = layers[-1]
    for p in [last.weight] if zero_init == "weight" else last.parameters():
        p.data = zeros_like_on(p.data, p.shape)
    return Synthesizer(Sequential(*layers), conditioning)


# --- the trainer ---------------------------------------------------------------------------------------


class DNITrainer(Trainer):
    """Synthetic-gradient training (DNI; cDNI with `conditioned=True`). Why each default, with measurements:
    docs/methods/dni.md, "The options".

    make_optimizer(params) -> Optimizer: one per group of blocks and, unless `synth_optimizer` (same
        signature) is given, one per synthesizer.
    synthesizer: "linear" (default: one Linear, or one 5x5 conv for 4-D activations), "mlp", "conv" or "auto"
        (the paper's: MLP for flat activations, conv for 4-D ones).
    interfaces: indices of the blocks *after* which a synthesizer sits (default: every block but the last).
        Blocks between two interfaces are trained together by backprop.
    update_prob: each step, each group runs its backward pass and optimizer step with this probability (it
        still runs forward); draws are seeded with (seed, epoch, batch), so a resumed run repeats them.
    sg_scale: multiplies the synthetic gradient every group below the classifier is updated with.
    bp_lambda: BP(lambda): group i's estimate is (1 - lambda) * M_i(h_i) + lambda * delta_i, delta_i being
        what group i+1 sent back; 0 is DNI, 1 is backprop. For lambda > 0 the groups update top down.
    conditioned: cDNI: every synthesizer also sees the one-hot label.
    label_smoothing: for the task loss at the top, as in backprop.
    seed: the synthesizers' initial weights (sized by a dry forward pass on `model.input_shape`), and the draws.
    synth_hidden, synth_channels: width of the MLP synthesizer's hidden layers, channels of the conv one's.
    synth_placement: "post-activation" (default) or "pre-activation" (before the interface block's last
        activation, as koz4k's examples/mnist-mlp).
    synth_units: "per-example" (default: synthesizers predict N * dL/dh, so they hold at any batch size) or
        "raw" (dL/dh of the batch-mean loss, as koz4k's dni-pytorch).
    synth_zero_init: "weight+bias" (default) or "weight" (koz4k's): what of the last layer starts at zero.
    """

    name = "dni"
    parallel: tuple = ("module",)  # its groups run in parallel workers (runtime/registry.py)
    talks_back = True  # on those workers, each synthesizer's target comes back down a link
    pipeline_unit_name = "group(s) of blocks between synthesizers"

    def __init__(
        self,
        model,
        make_optimizer,
        synthesizer="linear",
        interfaces=None,
        update_prob=1.0,
        sg_scale=1.0,
        bp_lambda=0.0,
        conditioned=False,
        label_smoothing=0.0,
        seed=0,
        synth_optimizer=None,
        synth_hidden=None,
        synth_channels=128,
        synth_placement="post-activation",
        synth_units="per-example",
        synth_zero_init="weight+bias",
    ):
        super().__init__(model)
        if synth_placement not in PLACEMENTS:
            raise ValueError(f"Unknown synth_placement {synth_placement!r}; choose one of: {', '.join(PLACEMENTS)}.")
        if synth_units not in UNITS:
            raise ValueError(f"Unknown synth_units {synth_units!r}; choose one of: {', '.join(UNITS)}.")
        if synth_zero_init not in ZERO_INITS:
            raise ValueError(f"Unknown synth_zero_init {synth_zero_init!r}; choose one of: {', '.join(ZERO_INITS)}.")
        if synthesizer not in SYNTHESIZERS:
            raise ValueError(f"Unknown synthesizer {synthesizer!r}; choose one of: {', '.join(SYNTHESIZERS)}.")
        if not 0.0 < update_prob <= 1.0:
            raise ValueError(f"update_prob is a probability in (0, 1], got {update_prob}.")
        if not sg_scale > 0.0:
            raise ValueError(f"sg_scale must be positive, got {sg_scale}.")
        if not 0.0 <= bp_lambda <= 1.0:
            raise ValueError(f"bp_lambda mixes two gradients and must be in [0, 1], got {bp_lambda}.")
        blocks = list(model.layers)
        self.interfaces = self._check_interfaces(interfaces, len(blocks))
        bounds = [0] + [i + 1 for i in self.interfaces] + [len(blocks)]
        # A group is a view on consecutive blocks: the same layer objects, so no layer math is repeated here.
        self.synth_placement, self.synth_units, self.synth_zero_init = synth_placement, synth_units, synth_zero_init
        self.groups = self._build_groups(blocks, bounds, synth_placement)
        self.group_optimizers = [make_optimizer(g.parameters()) for g in self.groups]
        self.make_synth_optimizer = synth_optimizer or make_optimizer
        self.synthesizer_kind, self.synth_hidden, self.synth_channels = synthesizer, synth_hidden, synth_channels
        self.update_prob, self.sg_scale, self.bp_lambda = update_prob, sg_scale, bp_lambda
        self.conditioned, self.label_smoothing, self.seed = conditioned, label_smoothing, seed
        self.name = "cdni" if conditioned else "dni"
        self.synthesizer_losses = [None] * len(self.interfaces)  # last regression loss of each synthesizer
        self._epoch, self._batch = 0, 0
        self._held = []  # (h, label) of batches whose synthesizer target is still to come (parallel stages)
        self._updates, self._to_below = [True] * len(self.groups), None
        self._build_synthesizers(bounds)

    @staticmethod
    def _build_groups(blocks, bounds, placement):
        """The groups of blocks between interfaces. "pre-activation": each interface block's last layer, an
        activation, moves to the front of the group above (the synthesizer then reads what enters it)."""
        groups = [list(blocks[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        if placement == "pre-activation":
            for below, above in zip(groups[:-1], groups[1:]):
                layers = list(getattr(below[-1], "layers", [below[-1]]))
                if not isinstance(layers[-1], ACTIVATIONS):
                    raise ValueError(
                        f"synth_placement 'pre-activation' reads a block before its last activation, "
                        f"but this interface block ends with {type(layers[-1]).__name__} (mlp blocks end "
                        f"with their activation; conv blocks with a pool): use 'post-activation'."
                    )
                below[-1] = Sequential(*layers[:-1])
                above.insert(0, layers[-1])
        return [Sequential(*g) for g in groups]

    @staticmethod
    def _check_interfaces(interfaces, num_blocks):
        if interfaces is None:
            return list(range(num_blocks - 1))
        chosen = sorted(set(int(i) for i in interfaces))
        if chosen and (chosen[0] < 0 or chosen[-1] > num_blocks - 2):
            raise ValueError(
                f"interfaces are indices of blocks followed by a synthesizer, in 0..{num_blocks - 2} "
                f"for this {num_blocks}-block model (not the classifier); got {list(interfaces)}."
            )
        return chosen

    def _build_synthesizers(self, bounds):
        if getattr(self.model, "input_shape", None) is None:
            raise ValueError(
                "DNI sizes its synthesizers from the model's activations and needs model.input_shape "
                "(C, H, W): build the model with tinydgl.models.build_model, or set it by hand."
            )
        block_shapes = block_output_shapes(self.model)
        interface_shapes = [block_shapes[b - 1] for b in bounds[1:-1]]  # the output of each group but the top
        self.num_classes, self.dtype = block_shapes[-1][0], self.model.parameters()[0].data.dtype
        rng = default_rng(self.seed)
        self.synthesizers = [
            build_synthesizer(
                self.synthesizer_kind,
                shape,
                self.num_classes if self.conditioned else None,
                rng,
                self.dtype,
                hidden=self.synth_hidden,
                conv_channels=self.synth_channels,
                zero_init=self.synth_zero_init,
            )
            for shape in interface_shapes
        ]
        self.synth_optimizers = [self.make_synth_optimizer(m.parameters()) for m in self.synthesizers]

    def optimizers(self):
        return self.group_optimizers + self.synth_optimizers

    def auxiliary_modules(self):
        return {f"synth{i}": m for i, m in enumerate(self.synthesizers)}

    def start_epoch(self, epoch):
        self._epoch, self._batch = epoch, 0

    def resume_state(self):
        """Adds the step's position in the epoch, which seeds the draw of who updates (update_prob < 1)."""
        arrays, values = super().resume_state()
        return arrays, {**values, "batch": self._batch}

    def load_resume_state(self, arrays, values):
        super().load_resume_state(arrays, values)
        self._batch = int(values.get("batch", 0))

    # --- one step ------------------------------------------------------------------------------
    def _draw_updates(self):
        """Which groups update this step (all of them unless update_prob < 1)."""
        if self.update_prob >= 1.0:
            return [True] * len(self.groups)
        rng = np.random.default_rng([self.seed, self._epoch, self._batch])
        self._batch += 1
        return [bool(u) for u in rng.random(len(self.groups)) < self.update_prob]

    def train_step(self, x, y):
        loss, _ = self.stage_step(x, y)  # in one process the stage is every group
        if self.bp_lambda > 0.0:
            self.stage_finish(None)
        return loss

    # --- a stage: the groups first..last, what one worker of the module-parallel engine runs -------------
    # In one process the stage is the whole network and train_step is stage_step (+ stage_finish for
    # BP(lambda)). On the parallel runtime each worker holds a stage, a copy of this trainer with only its
    # groups and synthesizers (`stage`), and two links cross each boundary: activations go up, and the
    # target of the synthesizer below the boundary comes back down, later (`stage_message_below`,
    # `stage_learn_from_above`). Nothing else differs, so one worker (J=1) is this trainer exactly.
    first_group, last_group = 0, None  # the stage's groups (last None: up to the top)

    def _stage_bounds(self):
        return self.first_group, len(self.groups) - 1 if self.last_group is None else self.last_group

    def stage_step(self, x, y):
        """Forward through the stage's groups; each updates right after its forward (update unlocking)
        unless bp_lambda > 0, and a synthesizer whose target comes from this stage learns at once. Returns
        (loss, output): the task loss at the top (NaN in a lower stage) and the last group's output."""
        first, last = self._stage_bounds()
        top = len(self.groups) - 1
        self._updates = updates = self._draw_updates()
        label = F.one_hot(y, self.num_classes, self.dtype) if self.conditioned else None
        self._synthetic = [None] * top
        self.synthesizer_losses = [None] * top
        # The factor between the synthesizers' units and dL/dh of the batch-mean loss (lesson 6, "Units"):
        # the batch size for per-example units, 1 for raw ones (koz4k's), which _gradient and the targets use.
        self._batch_size = int(x.shape[0]) if self.synth_units == "per-example" else 1
        self._to_below = None
        loss, h = float("nan"), x
        for i in range(first, last + 1):
            h = self.groups[i].forward(h)  # its input, block i-1's output, is a constant: no gradient flows into it
            if i == top:
                loss, self._true_gradient = F.softmax_cross_entropy(h, y, self.label_smoothing)
            elif updates[i] or updates[i + 1]:  # needed to update group i, or as what M_i is trained on
                self._synthetic[i] = self.synthesizers[i].forward(h, label)
                if i == last and updates[i + 1]:  # M_i's target will come from the stage above, later
                    self._held.append((h.copy(), label))
            if self.bp_lambda == 0.0 and updates[i]:
                self._update_group(i, from_above=None)  # update unlocking: nothing above is awaited
        if self.bp_lambda == 0.0:
            self._synthetic = self._true_gradient = None
        return loss, h

    def stage_finish(self, from_above):
        """BP(lambda) only: update the stage's groups top down, once the stage above has sent back what
        its lowest group passed to its input (from_above; None at the top, or if that group did not update)."""
        first, last = self._stage_bounds()
        top = len(self.groups) - 1
        if last < top and from_above is not None:
            self._train_synthesizer(last, from_above)  # its prediction's cache is intact: nothing ran M_last since
            self._held.pop(0)
        for i in reversed(range(first, last + 1)):  # BP(lambda): each group waits for the gradient from above
            from_above = self._update_group(i, from_above) if self._updates[i] else None
        self._synthetic = self._true_gradient = None

    def stage_expects_from_above(self):
        """Whether the stage above will send back a target for this step's batch (its lowest group updates)."""
        first, last = self._stage_bounds()
        return last < len(self.groups) - 1 and self._updates[last + 1]

    def stage_message_below(self):
        """The target this step produced for the synthesizer of the stage below (per-example units), or None."""
        message, self._to_below = self._to_below, None
        return message

    def stage_learn_from_above(self, target):
        """Train the synthesizer at the top of this stage on a target that came back from the stage above,
        for the oldest batch still waiting for one (targets come back in the order batches went up). Its
        prediction is computed again on the activations kept for that batch: the cache of the first one is
        long gone (the synthesizer has predicted for later batches since). Returns the regression loss."""
        _, last = self._stage_bounds()
        h, label = self._held.pop(0)
        if self._synthetic is None:
            self._synthetic = [None] * (len(self.groups) - 1)
        self._synthetic[last] = self.synthesizers[last].forward(h, label)
        self._train_synthesizer(last, target)
        self._synthetic[last] = None
        return self.synthesizer_losses[last]

    def stage(self, first, last):
        """A copy of this trainer that holds only groups first..last and the synthesizers after them (the
        rest None, so it pickles small): what one worker of the module-parallel engine runs."""
        part = copy.copy(self)
        keep = range(first, last + 1)
        part.groups = [g if i in keep else None for i, g in enumerate(self.groups)]
        part.group_optimizers = [o if i in keep else None for i, o in enumerate(self.group_optimizers)]
        part.synthesizers = [m if i in keep else None for i, m in enumerate(self.synthesizers)]
        part.synth_optimizers = [o if i in keep else None for i, o in enumerate(self.synth_optimizers)]
        part.model = None  # the groups are the model's blocks; the rest of the model stays with the parent
        part.make_synth_optimizer = None  # (a function, often a lambda: it would not pickle; not needed there)
        part.first_group, part.last_group = first, last
        part._held = []
        return part

    def load_stage(self, part):
        """Copy what a worker's stage learned (groups, synthesizers, their optimizers) into this trainer."""
        first, last = part._stage_bounds()
        for i in range(first, last + 1):
            self.groups[i].load_state_dict(part.groups[i].state_dict())
            self.group_optimizers[i].load_state_dict(part.group_optimizers[i].state_dict())
            if i < len(self.synthesizers):
                self.synthesizers[i].load_state_dict(part.synthesizers[i].state_dict())
                self.synth_optimizers[i].load_state_dict(part.synth_optimizers[i].state_dict())
        self._batch = part._batch

    def stage_state(self):
        """This stage without its batches in flight (held inputs, synthetic gradients, a pending target):
        what a worker sends back, and `load_stage` reads."""
        part = copy.copy(self)
        part._held = []
        part._synthetic = part._true_gradient = part._to_below = None
        return part

    # --- on the module-parallel engines (runtime/stages.py): a worker runs a run of groups -------------
    def pipeline_units(self):
        return self.groups

    def pipeline_links(self):
        """(policy, replay_slots, reuse_cap): every group sees every batch once, in order."""
        if len(self.groups) < 2:
            raise ValueError("This DNI trainer has one group (no synthesizer): nothing to run in parallel.")
        return "fifo", None, None

    def pipeline_stage(self, group, batches_per_epoch, start_epoch):
        return SyntheticGradientStage(self.stage(group[0], group[-1]), batches_per_epoch, start_epoch)

    def load_pipeline_stage(self, group, state):
        self.load_stage(state)

    def pipeline_unit_step(self, j):
        """run(x, y): group j's step on a scratch copy (forward, its synthesizer's guess, backward, update),
        then what a worker holding it at a boundary does when the target comes back: its synthesizer learns."""
        scratch = copy.deepcopy(self.stage(j, j))
        scratch.bp_lambda = 0.0  # time the group and its synthesizer, not a wait for the stage above
        scratch.update_prob = 1.0

        def run(x, y):
            loss, out = scratch.stage_step(x, y)
            if scratch._held:
                scratch.stage_learn_from_above(out * 0)
            return loss, out

        return run

    def _gradient(self, i, from_above):
        """Where group i's output gradient comes from: the loss at the top, its synthesizer elsewhere."""
        # BEGIN SOLUTION a2-dni-gradient
        # hint: the top group gets self._true_gradient; the others self._synthetic[i] (for BP(lambda) mixed with
        # hint: from_above), scaled by sg_scale and back from per-example units (divide by the batch size)
        if i == len(self.groups) - 1:
            return self._true_gradient
        synthetic = self._synthetic[i]
        if from_above is not None:  # BP(lambda) only
            synthetic = (1.0 - self.bp_lambda) * synthetic + self.bp_lambda * from_above
        return (self.sg_scale / self._batch_size) * synthetic  # back from per-example units (class docstring)
        # END SOLUTION

    def _update_group(self, i, from_above):
        """Backpropagate group i's gradient through group i only, step its optimizer, and train the
        synthesizer below on what group i sends back. Returns that (unscaled) input gradient, or None."""
        dx = self.groups[i].backward(self._gradient(i, from_above), need_input_grad=i > 0)
        self.group_optimizers[i].step()
        if i == 0:
            return None
        # BEGIN SOLUTION a2-dni-synthesizer-target
        # hint: M_(i-1)'s target is dx in per-example units (times the batch size) and undone of sg_scale (except
        # hint: at the top); train M_(i-1) on it and return it
        scale = 1.0 if i == len(self.groups) - 1 else self.sg_scale
        # In per-example units, and undone of sg_scale: backward is linear in its output gradient, so this is
        # exactly what the unscaled estimate would have sent back.
        target = dx * (self._batch_size / scale)
        self._train_synthesizer(i - 1, target)
        return target
        # END SOLUTION

    def _train_synthesizer(self, i, target):
        """Regress M_i's last prediction onto `target` (a constant: bootstrapping, no gradient through it).
        In a stage that does not hold M_i (it sits on the worker below) the target is kept to be sent there."""
        if self.synthesizers[i] is None:
            self._to_below = target
            return
        loss, d_prediction = F.mse_loss(self._synthetic[i], target)
        if self.synth_units == "raw":
            # koz4k's loss: the squared error summed over an example's features, averaged over the batch
            # (its gradient 2 (M - target) / B). Averaged over the features too, the raw targets' tiny
            # gradients (~1e-8) would sit at Adam's eps and the synthesizer would barely learn.
            features = int(np.prod(target.shape[1:]))
            loss, d_prediction = loss * features, d_prediction * features
        self.synthesizer_losses[i] = loss
        self.synthesizers[i].backward(d_prediction)
        self.synth_optimizers[i].step()


class CDNITrainer(DNITrainer):
    """cDNI: DNI whose synthesizers also see the one-hot label (Jaderberg et al. 2017)."""

    name = "cdni"

    def __init__(self, model, make_optimizer, **options):
        options.setdefault("conditioned", True)
        super().__init__(model, make_optimizer, **options)


class SyntheticGradientStage:
    """The stage of a DNI/cDNI trainer on one worker (the stage interface: runtime/stages.py): `part` is
    `DNITrainer.stage(first, last)`, its groups and the synthesizers after them. batches_per_epoch and
    start_epoch tell it where epochs begin (update_prob's draws are seeded by epoch and batch, so every
    stage draws the same groups for a batch)."""

    def __init__(self, part, batches_per_epoch, start_epoch):
        self.part, self.batches_per_epoch, self.start_epoch = part, int(batches_per_epoch), int(start_epoch)
        self.waits_for_above = part.bp_lambda > 0.0 and part.last_group < len(part.groups) - 1
        self._step = 0

    def step(self, x, y, origin=None):
        if self._step % self.batches_per_epoch == 0:
            self.part.start_epoch(self.start_epoch + self._step // self.batches_per_epoch)
        self._step += 1
        loss, out = self.part.stage_step(x, y)
        if self.part.bp_lambda > 0.0 and not self.waits_for_above:
            self.part.stage_finish(None)  # the top stage: the true gradient is here
        return loss, out

    def message_below(self):
        return self.part.stage_message_below()

    def expects_from_above(self):
        return self.part.stage_expects_from_above()

    def learn_from_above(self, message):
        return self.part.stage_learn_from_above(message)

    def finish(self, message):
        self.part.stage_finish(message)

    def state(self):
        return self.part.stage_state()
