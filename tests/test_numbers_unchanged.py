"""The numbers training reports on NumPy stay what they were, bit for bit, through issue 24's device losses:
losses became float64 scalars that stay on the device (`F.float64_scalar`) and the loop reads them many steps
at a time (`train.batches`). The values below were recorded with the code before that change (losses as
`float(...)`, read every step), as float.hex(): three steps' losses and a digest of the weights per trainer,
and a two-epoch `fit`'s train loss, test loss, test accuracy and loss curve per epoch.
"""

import numpy as np
import pytest

from tinydgl.data import DataLoader
from tinydgl.models import build_model
from tinydgl.optim import Adam
from tinydgl.train import fit
from tinydgl.trainers import build_trainer

# trainer -> ([loss of steps 1, 2, 3], sum of all parameters after them in float64)
STEPS = {
    "bp": [["0x1.28fcbc0000000p+1", "0x1.227c9c0000000p+1", "0x1.30ad1a0000000p+1"], "0x1.6be1e4e03ec9cp+9"],
    "dni": [["0x1.28fcbc0000000p+1", "0x1.3053fc0000000p+1", "0x1.236f8c0000000p+1"], "0x1.6df819999ec98p+9"],
    "dgl": [["0x1.28fcbc0000000p+1", "0x1.29f4540000000p+1", "0x1.2fd79c0000000p+1"], "0x1.714f035c80b6cp+9"],
    "async-dgl": [["0x1.2eba780000000p+1", "0x1.28787e0000000p+1", "0x1.1eaf160000000p+1"], "0x1.6cfbf63776e70p+9"],
    "lls": [["0x1.28fcbc0000000p+1", "0x1.34d5520000000p+1", "0x1.164ac00000000p+1"], "0x1.70d842a0586f4p+9"],
    "local-losses": [["0x1.28fcbc0000000p+1", "0x1.3058d40000000p+1", "0x1.287ea40000000p+1"], "0x1.68f688614f408p+9"],
    "ff": [["0x1.e5ba2ed79a3b8p+9", "0x1.41ec8802735c8p+9", "0x1.0c480fa00a06fp+9"], "0x1.f8e6c6b7886e4p+8"],
    "fg": [["0x1.28fcbc0000000p+1", "0x1.36cade0000000p+1", "0x1.2853940000000p+1"], "0x1.709bf29bffce8p+9"],
}

# trainer -> per epoch [train_loss, test_loss, test_accuracy, *loss_curve]
FIT = {
    "bp": [
        [
            "0x1.39f4f80000000p+1",
            "0x1.259cf00000000p+1",
            "0x1.0000000000000p-3",
            "0x1.2deb7a0000000p+1",
            "0x1.4ae28a0000000p+1",
            "0x1.3f56f40000000p+1",
            "0x1.2faee80000000p+1",
        ],
        [
            "0x1.816e8b8000000p-1",
            "0x1.2af8640000000p+1",
            "0x1.0000000000000p-3",
            "0x1.1428160000000p+0",
            "0x1.6c94620000000p-1",
            "0x1.62567c0000000p-1",
            "0x1.0e7f240000000p-1",
        ],
    ],
    "dgl": [
        [
            "0x1.33f74e0000000p+1",
            "0x1.25e3860000000p+1",
            "0x1.0000000000000p-3",
            "0x1.2deb7a0000000p+1",
            "0x1.52c1cc0000000p+1",
            "0x1.2984c00000000p+1",
            "0x1.25ab320000000p+1",
        ],
        [
            "0x1.17174b4000000p+0",
            "0x1.2a1ab00000000p+1",
            "0x1.0000000000000p-3",
            "0x1.4917aa0000000p+0",
            "0x1.22d9580000000p+0",
            "0x1.1b73220000000p+0",
            "0x1.a9f2120000000p-1",
        ],
    ],
    "async-dgl": [
        [
            "0x1.0199d8a000000p+1",
            "0x1.27694c0000000p+1",
            "0x1.0000000000000p-3",
            "0x1.3711b80000000p+1",
            "0x1.44e9210000000p+1",
            "0x1.2cfa8a0000000p+1",
            "0x1.75c7fe0000000p-1",
        ],
        [
            "0x1.62787b0000000p-3",
            "0x1.33545e0000000p+1",
            "0x1.0000000000000p-3",
            "0x1.96a99e0000000p-3",
            "0x1.96a99e0000000p-3",
            "0x1.2e47580000000p-3",
            "0x1.2e47580000000p-3",
        ],
    ],
    "ff": [
        [
            "0x1.690e86cd51792p+9",
            "0x1.63ac140000000p+3",
            "0x1.0000000000000p-3",
            "0x1.e48a58f44d204p+9",
            "0x1.330b213b1e326p+9",
            "0x1.51fe3d4213361p+9",
            "0x1.3aa663c3c75bdp+9",
        ],
        [
            "0x1.3197f32d829e1p+9",
            "0x1.78fb640000000p+2",
            "0x1.0000000000000p-3",
            "0x1.0df428210da33p+9",
            "0x1.6038c1b19f1aep+9",
            "0x1.159c555605500p+9",
            "0x1.42968d8d586a3p+9",
        ],
    ],
}


def _model(name):
    return build_model("mlp" if name == "ff" else "smallconv", 1, 12, 10, seed=0, dtype="float32")


@pytest.mark.parametrize("name", list(STEPS))
def test_step_losses_and_weights_are_unchanged(name):
    rng = np.random.default_rng(0)
    model = _model(name)
    trainer = build_trainer(name, model, lambda p: Adam(p, lr=1e-3))
    losses = []
    for _ in range(3):
        x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
        losses.append(float(trainer.train_step(x, np.arange(8) % 10)).hex())
    digest = float(sum(np.sum(p.data, dtype=np.float64) for p in model.parameters())).hex()
    assert (losses, digest) == tuple(STEPS[name])


@pytest.mark.parametrize("name", list(FIT))
def test_fit_history_is_unchanged(name):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((48, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, 48)
    trainer = build_trainer(name, _model(name), lambda p: Adam(p, lr=1e-3))
    history = fit(
        trainer,
        DataLoader(x[:32], y[:32], 8, seed=0),
        DataLoader(x[32:], y[32:], 16, shuffle=False),
        2,
        log=lambda s: None,
        progress=False,
    )
    got = [
        [float(e[k]).hex() for k in ("train_loss", "test_loss", "test_accuracy")]
        + [float(v).hex() for v in e["loss_curve"]]
        for e in history
    ]
    assert got == FIT[name]
