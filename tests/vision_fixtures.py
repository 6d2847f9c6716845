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


def _photo(label: int, k: int, size=(40, 48)):
    """A small RGB photo whose dominant colour and bright corner encode the class."""
    rng = np.random.default_rng(1000 * label + k)
    h, w = size
    img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    img[:, :, label % 3] = 200 + 20 * (label // 3 % 3)
    r, c = divmod(label % 4, 2)
    img[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2] = 250
    return img


def _save_jpeg(path: Path, img) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)


def write_stl10(root: Path, train: int = 30, test: int = 12) -> Path:
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    for split, n, seed in (("train", train, 40), ("test", test, 41)):
        x, y = _images(n, 3, 96, 10, seed)
        (d / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # stored column-major
        (d / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # labels 1..10
    return root


def write_flowers102(root: Path, classes: int = 4, per_split: int = 6) -> Path:
    from scipy.io import savemat

    d = root / "flowers-102"
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 0
    for key in ids:
        for k in range(per_split):
            image_id += 1
            label = k % classes
            labels.append(label + 1)  # 1-based, as in imagelabels.mat
            ids[key].append(image_id)
            _save_jpeg(d / "jpg" / f"image_{image_id:05d}.jpg", _photo(label, image_id))
    savemat(d / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(d / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return root


def write_pets(root: Path, classes: int = 3, trainval: int = 12, test: int = 6) -> Path:
    d = root / "oxford-iiit-pet"
    (d / "annotations").mkdir(parents=True)
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "beagle"][:classes]
    for split, n in (("trainval", trainval), ("test", test)):
        lines = []
        for k in range(n):
            label = k % classes
            image_id = f"{breeds[label]}_{split}{k}"
            _save_jpeg(d / "images" / f"{image_id}.jpg", _photo(label, k + 100 * (split == "test")))
            species = 1 if breeds[label][0].isupper() else 2  # cats are capitalised in the real list
            lines.append(f"{image_id} {label + 1} {species} {label + 1}")
        (d / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_food101(root: Path, classes: int = 3, train: int = 12, test: int = 6) -> Path:
    import json

    d = root / "food-101"
    (d / "meta").mkdir(parents=True)
    names = ["apple_pie", "baby_back_ribs", "baklava"][:classes]
    for split, n in (("train", train), ("test", test)):
        meta = {name: [] for name in names}
        for k in range(n):
            label = k % classes
            rel = f"{names[label]}/{split}{k}"
            meta[names[label]].append(rel)
            _save_jpeg(d / "images" / f"{rel}.jpg", _photo(label, k + 100 * (split == "test")))
        (d / "meta" / f"{split}.json").write_text(json.dumps(meta))
    (d / "meta" / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def write_imagenet(root: Path, classes: int = 3, train: int = 6, val: int = 3) -> Path:
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361"][:classes]
    for split, n in (("train", train), ("val", val)):
        for c, wnid in enumerate(wnids):
            for k in range(n):
                _save_jpeg(root / split / wnid / f"{wnid}_{split}{k}.JPEG", _photo(c, k + 100 * (split == "val")))
    return root
