"""Why does forward-gradient training with weight perturbation stay under the shallow floor? Two checks.

    python benchmarks/diagnose_fg.py          # mnist-small, smallconv, seed 0; a few minutes on 2 cores

1. The estimate, per module of `fg --fg-mode weight --fg-loss local`: the parameters it perturbs (body and
   linear head), the mean |cosine| of a one-direction estimate with the module's exact local gradient over
   20 directions (an unbiased one-direction estimate reads about 1/sqrt(parameters)), and for the first
   module the cosine of the mean of 400 directions (expected sqrt(K/n) / sqrt(1 + K/n) if unbiased).
2. The features against the classifier: after 3 epochs of fg weight perturbation (local and global losses),
   a fresh softmax readout fitted with its exact gradient on the last hidden block's features, against the
   network's own classifier and against the same readout on the initial network's features (what the
   shallow floor trains on).
Not a test; RESULTS "Issue 25's methods in the same protocol" quotes its output.
"""

import copy

import numpy as np

from tinydgl import cli
from tinydgl.backend import to_numpy
from tinydgl.train import fit


def make(spec, extra=()):
    args = cli.build_parser().parse_args(
        [
            "train",
            "--trainer",
            *spec.split(),
            "--model",
            "smallconv",
            "--optimizer",
            "adamw-sf",
            "--lr",
            "5e-3",
            "--bn-recalibrate",
            "0",
            "--no-progress",
            *extra,
        ]
    )
    dataset, train_loader, test_loader = cli.load_data(args)
    trainer, _ = cli.make_trainer(args, args.trainer, dataset)
    return trainer, train_loader, test_loader


def grads(params):
    return np.concatenate([to_numpy(p.grad).astype(np.float64).ravel() for p in params])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def estimate(module, x, y, seed):
    """One forward-gradient estimate of `module` on (x, y), on a copy, along direction(s) from `seed`."""
    twin = copy.deepcopy(module)
    twin.rng = np.random.default_rng(seed)
    twin.estimate_gradients(x, y)
    return grads(twin.parameters())


def check_estimates():
    trainer, train_loader, _ = make("fg --fg-mode weight --fg-loss local --aux linear")
    x, y = next(iter(train_loader))
    for j, module in enumerate(trainer.modules):
        exact = copy.deepcopy(module)
        out = exact.body.forward(x)
        _, dout = exact.local_loss(out, y)
        exact.body.backward(dout, need_input_grad=False)
        g = grads(exact.parameters())
        cosines = [abs(cosine(estimate(module, x, y, 100 + i), g)) for i in range(20)]
        head = sum(p.data.size for p in module.head.parameters()) if module.head is not None else 0
        print(
            f"module {j}: {g.size:,} parameters ({head:,} in its head); mean |cos| of one direction with the exact "
            f"local gradient {np.mean(cosines):.4f}, 1/sqrt(n) = {1 / np.sqrt(g.size):.4f}"
        )
        if j == 0:
            mean = sum(estimate(module, x, y, 1000 + i) for i in range(400))
            expected = np.sqrt(400 / g.size) / np.sqrt(1 + 400 / g.size)
            print(f"  mean of 400 directions: cos {cosine(mean, g):.3f} (unbiased: about {expected:.3f})")
        x = module.forward(x)


def hidden_features(model, loader):
    model.eval()
    features, labels = [], []
    for x, y in loader:
        for layer in model.layers[:-1]:
            x = layer.forward(x)
        features.append(to_numpy(x).reshape(len(y), -1).astype(np.float64))
        labels.append(to_numpy(y))
    model.train()
    return np.concatenate(features), np.concatenate(labels)


def readout_accuracy(model, train_loader, test_loader, steps=300, lr=0.5):
    """Test accuracy of a softmax readout fitted by full-batch gradient descent on standardised features."""
    (a, ya), (b, yb) = hidden_features(model, train_loader), hidden_features(model, test_loader)
    mean, std = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mean) / std, (b - mean) / std
    w, onehot = np.zeros((a.shape[1], 10)), np.eye(10)[ya]
    for _ in range(steps):
        z = a @ w
        p = np.exp(z - z.max(1, keepdims=True))
        w -= lr * a.T @ (p / p.sum(1, keepdims=True) - onehot) / len(a)
    return float(((b @ w).argmax(1) == yb).mean())


def check_features(epochs=3):
    for loss in ("local", "global"):
        trainer, train_loader, test_loader = make(f"fg --fg-mode weight --fg-loss {loss}")
        initial = copy.deepcopy(trainer.model)
        history = fit(trainer, train_loader, test_loader, epochs, progress=False, bn_recalibrate=0)
        print(
            f"fg weight, {loss} loss, {epochs} epochs: its own classifier {history[-1]['test_accuracy']:.4f}; a fresh "
            f"exact readout on its last hidden block {readout_accuracy(trainer.model, train_loader, test_loader):.4f}; "
            f"on the initial network's {readout_accuracy(initial, train_loader, test_loader):.4f}"
        )


if __name__ == "__main__":
    check_estimates()
    check_features()
