"""LLS: local learning through neural activity synchronisation (Apolinario, Roy, Roy, WACV 2025).

Where does each block's gradient come from? **From a fixed basis**: block l's output is pooled to
p_l x p_l, flattened, L2-normalised and projected on a fixed matrix B_l (n_classes x d_l) whose rows are
waves of different frequencies; cross-entropy of those logits / T against the label gives the block its
gradient. Nothing is learned in that projection (LLS), except an optional per-class scale m (LLS-M) or a
class-mixing matrix M (LLS-MxM). The classifier is trained on the constant output of the last hidden block.

Paper: arXiv 2405.15868; official code: github.com/mapolinario94/LLS-DNN. The local head is assembled from shared layers:

    AdaptiveAvgPool2d(p) -> Flatten -> L2Normalize -> FixedLinear(B) [-> ClassScale(m) | Linear(M)] -> Scale(1/T)
"""

import numpy as np

from ..backend import asarray, default_rng
from ..nn import (
    AdaptiveAvgPool2d,
    ClassScale,
    FixedLinear,
    Flatten,
    L2Normalize,
    Linear,
    PooledLinear,
    Scale,
    Sequential,
)
from ..ops.pool import adaptive_windows
from .local import LocalModule, LocalTrainer, block_output_shapes

WAVEFORMS = ("sin", "square", "cosine", "random")


def lls_basis(n_classes, d, waveform="sin", rng=None):
    """The fixed basis B: (n_classes, d), a float64 NumPy array.

    With t = 0..d-1 and f = linspace(50, 512, n_classes):
      sin:    B[k, t] = sin(f[k] * t)          (the official code's default, named "cosine" there)
      square: sign(sin(f[k] * t))              (the paper's Tables 2 and 3)
      cosine: f = linspace(100, 512, n_classes), B[k, t] = cos(pi * f[k] * (t + 0.5) / d)  (first public code;
              beware: when 512 / d is an integer the last row degenerates, e.g. all zeros for d = 512,
              so the last class gets no local signal. Kept as specified; lesson 9 explores it)
      random: 0.1 * N(0, 1), an ablation (used without L2 normalisation). The official code draws it at a
              fixed width and average-pools its columns to d: `lls_head` does the same (block.local_width).
    """
    if waveform not in WAVEFORMS:
        raise ValueError(f"Unknown waveform {waveform!r}; choose one of: {', '.join(WAVEFORMS)}.")
    # BEGIN SOLUTION a3-lls-basis
    # hint: follow the docstring: t = 0..d-1 as a row, one frequency per class as a column (np.linspace), broadcast
    t = np.arange(d, dtype=np.float64)[None, :]
    if waveform == "random":
        rng = rng if rng is not None else default_rng(0)
        return 0.1 * rng.standard_normal((n_classes, d))
    if waveform == "cosine":
        f = np.linspace(100, 512, n_classes)[:, None]
        return np.cos(np.pi * f * (t + 0.5) / d)
    f = np.linspace(50, 512, n_classes)[:, None]
    basis = np.sin(f * t)
    return np.sign(basis) if waveform == "square" else basis
    # END SOLUTION


def column_pooling(width, d):
    """The (width, d) matrix P with M @ P = M's columns adaptive-average-pooled from `width` to `d`
    (PyTorch's adaptive_avg_pool1d windows, `ops.pool.adaptive_windows`; d > width repeats columns)."""
    pool = np.zeros((width, d))
    for i, (start, stop) in enumerate(adaptive_windows(width, d)):
        pool[start:stop, i] = 1.0 / (stop - start)
    return pool


def _pooled_features(shape, local_pool):
    """The layers that pool a block's output for its local loss, and the resulting length d."""
    if len(shape) == 3:
        pool = local_pool if local_pool is not None else 1
        return [AdaptiveAvgPool2d(pool), Flatten()], shape[0] * pool * pool
    return [], shape[0]


def lls_head(
    shape,
    local_pool,
    n_classes,
    waveform="sin",
    temperature=0.5,
    modulation=None,
    seed=0,
    dtype="float32",
    local_width=None,
    basis_size=None,
):
    """The local classifier of one block whose output has `shape` ((C, H, W) or (D,)).

    modulation: None (LLS), "m" (LLS-M: a learnable vector, 0.01 * N(0, 1)) or "mxm" (LLS-MxM: a learnable
    n_classes x n_classes matrix, 0.01 * N(0, 1)). basis_size: R rows of the basis instead of n_classes
    (LLS-MxM-reduced; M is then R x n_classes). local_width: for waveform "random", the width the official
    code draws the matrix at before pooling its columns to d (None: drawn at d).
    """
    rng = default_rng(seed)
    layers, d = _pooled_features(shape, local_pool)
    rows = n_classes if basis_size is None else int(basis_size)
    if waveform != "random":
        layers.append(L2Normalize())
        basis = lls_basis(rows, d, waveform, rng)
    else:
        width = d if local_width is None else int(local_width)
        basis = lls_basis(rows, width, waveform, rng) @ column_pooling(width, d)
    layers.append(FixedLinear(asarray(basis, dtype=dtype)))
    if modulation == "m":
        layers.append(ClassScale(asarray(0.01 * rng.standard_normal(n_classes), dtype=dtype)))
    elif modulation == "mxm":
        mix = Linear(rows, n_classes, bias=False, rng=rng, dtype=dtype)
        mix.weight.data = asarray(0.01 * rng.standard_normal((rows, n_classes)), dtype=dtype)
        layers.append(mix)
    elif modulation is not None:
        raise ValueError(f"modulation must be None, 'm' or 'mxm', got {modulation!r}.")
    layers.append(Scale(1.0 / temperature))
    return Sequential(*layers)


class LLSTrainer(LocalTrainer):
    """Every hidden block is a module with an LLS head; the classifier block is a module of its own,
    trained with ordinary cross-entropy on the (constant) features of the last hidden block."""

    name = "lls"
    modulation = None

    basis_size = None  # rows of the basis: n_classes (LLS-MxM-reduced sets fewer, see LLSMxMTrainer)

    def __init__(self, model, make_optimizer, waveform="sin", temperature=0.5, label_smoothing=0.0, seed=0):
        super().__init__(model)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.waveform, self.temperature = waveform, temperature
        blocks, shapes = model.layers, block_output_shapes(model)
        dtype = model.parameters()[0].data.dtype
        for j, block in enumerate(blocks[:-1]):
            head = self.make_head(shapes[j], block, model.num_classes, seed + 2000 + j, dtype)
            self.modules.append(LocalModule(Sequential(block), head, make_optimizer, label_smoothing))
        self.modules.append(LocalModule(Sequential(blocks[-1]), None, make_optimizer, label_smoothing))

    def make_head(self, shape, block, n_classes, seed, dtype):
        return lls_head(
            shape,
            block.local_pool,
            n_classes,
            self.waveform,
            self.temperature,
            self.modulation,
            seed=seed,
            dtype=dtype,
            local_width=getattr(block, "local_width", None),
            basis_size=self.basis_size,
        )


class LLSMTrainer(LLSTrainer):
    """LLS-M: a learnable per-class scale on each block's projection."""

    name = "lls-m"
    modulation = "m"


class LLSMxMTrainer(LLSTrainer):
    """LLS-MxM: a learnable class-mixing matrix after each block's projection (with basis_size=R, the
    official LLS-MxM-reduced: a basis of R waves and an R x n_classes matrix)."""

    name = "lls-mxm"
    modulation = "mxm"

    def __init__(
        self, model, make_optimizer, waveform="sin", temperature=0.5, label_smoothing=0.0, seed=0, basis_size=None
    ):
        if basis_size is not None and int(basis_size) < 1:
            raise ValueError(f"basis_size must be a positive number of basis rows, got {basis_size}.")
        self.basis_size = basis_size  # before the heads are built
        super().__init__(model, make_optimizer, waveform, temperature, label_smoothing, seed)


class LocalLossesTrainer(LLSTrainer):
    """The official LLS code's "LocalLosses" baseline: each block's local classifier is *trainable*, a
    linear map without bias (0.1 * N(0, 1), drawn `local_width` wide and column-pooled as the code does)
    on the block's output pooled as in LLS, without normalisation, / T. What LLS replaces by a fixed basis."""

    name = "local-losses"

    def __init__(self, model, make_optimizer, temperature=0.5, label_smoothing=0.0, seed=0):
        super().__init__(model, make_optimizer, "random", temperature, label_smoothing, seed)

    def make_head(self, shape, block, n_classes, seed, dtype):
        rng = default_rng(seed)
        layers, d = _pooled_features(shape, block.local_pool)
        width = d if getattr(block, "local_width", None) is None else int(block.local_width)
        weight = asarray(0.1 * rng.standard_normal((n_classes, width)), dtype=dtype)
        layers += [PooledLinear(weight, asarray(column_pooling(width, d), dtype=dtype)), Scale(1.0 / self.temperature)]
        return Sequential(*layers)
