"""LLS: local learning through neural activity synchronisation (Apolinario, Roy, Roy, WACV 2025).

Where does each block's gradient come from? **From a fixed basis**: block l's output is pooled to
p_l x p_l, flattened, L2-normalised and projected on a fixed matrix B_l (n_classes x d_l) whose rows are
waves of different frequencies; cross-entropy of those logits / T against the label gives the block its
gradient. Nothing is learned in that projection (LLS), except an optional per-class scale m (LLS-M) or a
class-mixing matrix M (LLS-MxM). The classifier is trained on the constant output of the last hidden block.

Spec: ../shared/specs/lls.md. The local head is assembled from shared layers:

    AdaptiveAvgPool2d(p) -> Flatten -> L2Normalize -> FixedLinear(B) [-> ClassScale(m) | Linear(M)] -> Scale(1/T)
"""
import numpy as np

from ..backend import asarray, default_rng
from ..nn import AdaptiveAvgPool2d, ClassScale, FixedLinear, Flatten, L2Normalize, Linear, Scale, Sequential
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
              fixed width and average-pools it to d; we draw it at width d directly.
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


def lls_head(shape, local_pool, n_classes, waveform="sin", temperature=0.5, modulation=None, seed=0, dtype="float32"):
    """The local classifier of one block whose output has `shape` ((C, H, W) or (D,)).

    modulation: None (LLS), "m" (LLS-M: a learnable vector, 0.01 * N(0, 1)) or "mxm" (LLS-MxM: a learnable
    n_classes x n_classes matrix, 0.01 * N(0, 1)).
    """
    rng = default_rng(seed)
    layers = []
    if len(shape) == 3:
        pool = local_pool if local_pool is not None else 1
        layers += [AdaptiveAvgPool2d(pool), Flatten()]
        d = shape[0] * pool * pool
    else:
        d = shape[0]
    if waveform != "random":
        layers.append(L2Normalize())
    layers.append(FixedLinear(asarray(lls_basis(n_classes, d, waveform, rng), dtype=dtype)))
    if modulation == "m":
        layers.append(ClassScale(asarray(0.01 * rng.standard_normal(n_classes), dtype=dtype)))
    elif modulation == "mxm":
        mix = Linear(n_classes, n_classes, bias=False, rng=rng, dtype=dtype)
        mix.weight.data = asarray(0.01 * rng.standard_normal((n_classes, n_classes)), dtype=dtype)
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

    def __init__(self, model, make_optimizer, waveform="sin", temperature=0.5, label_smoothing=0.0, seed=0):
        super().__init__(model)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        blocks, shapes = model.layers, block_output_shapes(model)
        dtype = model.parameters()[0].data.dtype
        for j, block in enumerate(blocks[:-1]):
            head = lls_head(shapes[j], block.local_pool, model.num_classes, waveform, temperature, self.modulation,
                            seed=seed + 2000 + j, dtype=dtype)
            self.modules.append(LocalModule(Sequential(block), head, make_optimizer, label_smoothing))
        self.modules.append(LocalModule(Sequential(blocks[-1]), None, make_optimizer, label_smoothing))


class LLSMTrainer(LLSTrainer):
    """LLS-M: a learnable per-class scale on each block's projection."""

    name = "lls-m"
    modulation = "m"


class LLSMxMTrainer(LLSTrainer):
    """LLS-MxM: a learnable class-mixing matrix after each block's projection."""

    name = "lls-mxm"
    modulation = "mxm"
