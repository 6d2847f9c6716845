"""Tiny datasets in the real on-disk formats: CIFAR python batches, MNIST idx files, an ImageFolder."""

import pickle
import struct
from pathlib import Path

import numpy as np


def _images(n, channels, size, classes, seed):
    """Class-dependent images (a bright square whose position encodes the label) plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, channels, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c) % 16, 4)
        x[i, :, r * size // 4 : (r + 1) * size // 4, col * size // 4 : (col + 1) * size // 4] = 230
    return x, labels


def write_cifar10(root: Path, per_batch: int = 8, test: int = 16) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x, y = _images(test if name == "test_batch" else per_batch, 3, 32, 10, seed=i)
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": y.tolist(), "data": x.reshape(len(x), -1),
                         "filenames": [f"{k}.png" for k in range(len(x))]}, f)
    return root


def write_cifar100(root: Path, train: int = 40, test: int = 16) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for i, (name, n) in enumerate((("train", train), ("test", test))):
        x, y = _images(n, 3, 32, 100, seed=10 + i)
        with open(d / name, "wb") as f:
            pickle.dump({"fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": x.reshape(n, -1)}, f)
    return root


def write_mnist(root: Path, train: int = 40, test: int = 16) -> Path:
    d = root / "MNIST" / "raw"
    d.mkdir(parents=True)
    for prefix, n, seed in (("train", train, 20), ("t10k", test, 21)):
        x, y = _images(n, 1, 28, 10, seed)
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes())
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + y.astype(np.uint8).tobytes())
    return root


def write_imagefolder(root: Path, per_class: int = 10, classes: int = 3) -> Path:
    from PIL import Image

    for split, n, seed in (("train", per_class, 30), ("test", per_class // 2, 31)):
        x, _ = _images(n * classes, 3, 24, 1, seed)
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                img = x[c * n + k].transpose(1, 2, 0).copy()
                img[:, :, c] = 250  # the class is the dominant colour
                Image.fromarray(img).save(folder / f"{k}.png")
    return root
