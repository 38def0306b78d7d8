"""Fidelity check: the same SmallConv, data order and optimizer in PyTorch, to compare with tinydgl's bp.

    python benchmarks/torch_smallconv_fmnist.py --epochs 1

Uses tinydgl's DataLoader (same batches, same order for the same seed) and PyTorch's default
initialisation; prints test accuracy after each epoch. PyTorch is used only here and in optional tests.
`smallconv`, `train_step` and `train_epoch` are also what bench_step.py times on the PyTorch side, so the
architecture and the step are written once. `vgg8` is tinydgl's VGG8 (tinydgl/models.py) in PyTorch, layer
for layer, for gpu_check.py's timed steps (`MODELS` names both).
"""

import argparse
import time

import torch
from torch import nn

from tinydgl.data import DataLoader, load_dataset


def block(cin, cout):
    """LLS's ConvBlock: conv3x3 (pad 1) -> BatchNorm2d -> LeakyReLU(0.01)."""
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01)]


def linear_head(features, hidden, classes):
    """Adaptive-average-pool to 2x2, flatten, Linear -> BatchNorm1d -> LeakyReLU, then the classifier."""
    return [
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(features * 4, hidden),
        nn.BatchNorm1d(hidden),
        nn.LeakyReLU(0.01),
        nn.Linear(hidden, classes),
    ]


def smallconv(channels=1, classes=10):
    return nn.Sequential(
        *block(channels, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        *linear_head(128, 512, classes),
    )


def vgg8(channels=3, classes=10):
    """Conv blocks 128, 256, pool, 256, 256, pool, 512, pool, 512, then the 2048 -> 1024 head (7.13 M parameters)."""
    return nn.Sequential(
        *block(channels, 128),
        *block(128, 256),
        nn.MaxPool2d(2),
        *block(256, 256),
        *block(256, 256),
        nn.MaxPool2d(2),
        *block(256, 512),
        nn.MaxPool2d(2),
        *block(512, 512),
        *linear_head(512, 1024, classes),
    )


MODELS = {"smallconv": smallconv, "vgg8": vgg8}


def train_step(model, optimizer, x, y):
    """One Adam step on NumPy arrays x: (N, C, H, W) float32, y: (N,) int64; returns the loss as a float."""
    loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epoch(model, optimizer, loader):
    """One epoch over `loader`'s batches; returns (mean training loss per sample, seconds of training)."""
    model.train()
    loss_sum, samples = 0.0, 0
    t0 = time.perf_counter()
    for x, y in loader:
        loss_sum += train_step(model, optimizer, x, y) * len(y)
        samples += len(y)
    return loss_sum / samples, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist")
    train = DataLoader(ds.x_train, ds.y_train, 128, seed=args.seed, mean=ds.mean, std=ds.std)
    test = DataLoader(ds.x_test, ds.y_test, 500, shuffle=False, mean=ds.mean, std=ds.std)
    model = smallconv(ds.input_shape[0], ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        _, seconds = train_epoch(model, opt, train)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum()) for x, y in test)
        print(f"torch epoch {epoch + 1}: test acc {correct / len(ds.y_test):.4f}  {seconds:.1f}s")


if __name__ == "__main__":
    main()
