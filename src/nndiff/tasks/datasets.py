"""Readers for the paper's datasets from their usual local layouts (nothing is ever downloaded).

    CIFAR-10     ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}      (the "python version")
    CIFAR-100    ROOT/cifar-100-python/{train, test}
    MNIST        ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    STL-10       ROOT/stl10_binary/{train,test}_{X,y}.bin                    (the binary version)
    Flowers-102  ROOT/flowers-102/{jpg/image_00001.jpg.., imagelabels.mat, setid.mat}
    Pets         ROOT/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}
    Food-101     ROOT/food-101/{images/<class>/<id>.jpg, meta/{train,test}.json}
    ImageNet     ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG             (validation images in class folders)
    ImageFolder  ROOT/train/<class>/<image>, ROOT/test/<class>/<image> (and optionally ROOT/val/...)

torchvision's readers are used where they read local files safely (MNIST, Pets, Food-101,
ImageFolder). Ours are used where torchvision's would unpickle (CIFAR: an unpickler that only
rebuilds arrays, so a crafted file cannot run code) or insists on the archive's checksums (STL-10,
Flowers-102: a copy in the same layout, e.g. a subset, is read as it is).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nndiff.errors import NndiffError
from nndiff.tasks.images import ArrayReader, ImageSource, PilReader


def require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise NndiffError(
            f"the vision tasks need {module}: pip install 'nndiff[vision]' "
            "(on CPU-only machines: pip install torch==2.14.1 torchvision==0.29.1 'nndiff[vision]')"
        ) from None


@dataclass
class ImageData:
    """A dataset's splits as image sources; `native`: the side of its images where they all share one
    (held in memory at that size), None for image files."""

    train: ImageSource
    test: ImageSource
    val: ImageSource | None = None
    native: int | None = None


def _arrays(train, test, channels: int, native: int) -> ImageData:
    source = lambda part: ImageSource(ArrayReader(part[0]), part[1], channels)  # noqa: E731
    return ImageData(source(train), source(test), native=native)


# ------------------------------------------------------------------ CIFAR (safe unpickling)


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds numpy arrays, lists, dicts, strings and numbers; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
        data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError, AttributeError) as e:
        raise NndiffError(f"{path}: not a CIFAR python-format batch ({e})") from None
    if len(labels) != len(data):
        raise NndiffError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _cifar(root: Path, folder: str, train_files: list[str], test_files: list[str]) -> ImageData:
    base = root / folder
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        raise NndiffError(
            f"CIFAR data not found: {base} lacks {', '.join(missing)}; expected the python-format "
            f"archive extracted so that {base}/{train_files[0]} exists (nndiff never downloads)"
        )

    def cat(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.concatenate(part) for part in zip(*[_read_cifar_batch(base / f) for f in files]))

    return _arrays(cat(train_files), cat(test_files), 3, 32)


def load_cifar10(root: Path) -> ImageData:
    return _cifar(root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])


def load_cifar100(root: Path) -> ImageData:
    return _cifar(root, "cifar-100-python", ["train"], ["test"])


# ------------------------------------------------------------------ array formats


def load_mnist(root: Path) -> ImageData:
    datasets = require("torchvision").datasets
    try:
        train = datasets.MNIST(str(root), train=True, download=False)
        test = datasets.MNIST(str(root), train=False, download=False)
    except RuntimeError:
        raise NndiffError(
            f"MNIST data not found under {root}: expected {root}/MNIST/raw/train-images-idx3-ubyte and the "
            "other three idx files (nndiff never downloads)"
        ) from None
    # 28x28 digits padded to 32x32, the size the CIFAR-style architectures are built for
    as_np = lambda ds: (  # noqa: E731
        np.pad(ds.data.numpy()[:, None], ((0, 0), (0, 0), (2, 2), (2, 2))),
        ds.targets.numpy().astype(np.int64),
    )
    return _arrays(as_np(train), as_np(test), 1, 32)


def load_stl10(root: Path) -> ImageData:
    """The binary version: uint8 images [N, 3, 96, 96] stored column-major, labels 1..10 (read as 0..9).
    The images stay on disk (memory-mapped)."""
    base = root / "stl10_binary"
    names = [f"{split}_{part}.bin" for split in ("train", "test") for part in ("X", "y")]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise NndiffError(
            f"STL-10 data not found: {base} lacks {', '.join(missing)}; expected the binary archive "
            f"(stl10_binary.tar.gz) extracted into {root}"
        )
    parts = []
    for split in ("train", "test"):
        labels = np.fromfile(base / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        size = (base / f"{split}_X.bin").stat().st_size
        if size != len(labels) * 3 * 96 * 96 or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise NndiffError(
                f"{base / f'{split}_X.bin'}: {size} bytes for {len(labels)} labels; expected "
                "96x96x3 bytes per image and labels 1..10 (the STL-10 binary format)"
            )
        images = np.memmap(base / f"{split}_X.bin", dtype=np.uint8, mode="r", shape=(len(labels), 3, 96, 96))
        parts.append((images.transpose(0, 1, 3, 2), labels))
    return _arrays(parts[0], parts[1], 3, 96)


# ------------------------------------------------------------------ image files


def load_flowers102(root: Path) -> ImageData:
    """The official split: 1,020 training, 1,020 validation and 6,149 test images of 102 classes."""
    from scipy.io import loadmat

    base = root / "flowers-102"
    needed = [base / "imagelabels.mat", base / "setid.mat", base / "jpg"]
    if not all(p.exists() for p in needed):
        raise NndiffError(
            f"Flowers-102 data not found: expected {base}/jpg/image_00001.jpg..., "
            f"{base}/imagelabels.mat and {base}/setid.mat"
        )
    try:
        labels = np.asarray(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).astype(np.int64) - 1
        ids = loadmat(base / "setid.mat", squeeze_me=True)
        split_ids = {
            name: np.atleast_1d(ids[key]).astype(np.int64)
            for name, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NndiffError(f"{base}: imagelabels.mat or setid.mat is not the Flowers-102 format ({e})") from None

    def source(name: str) -> ImageSource:
        chosen = split_ids[name]
        paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in chosen]
        return ImageSource(PilReader(paths), labels[chosen - 1], 3)

    return ImageData(source("train"), source("test"), source("val"))


def _torchvision_files(make, name: str, layout: str) -> ImageSource:
    """An ImageSource over a torchvision dataset's list of image files and labels."""
    try:
        ds = make()
    except RuntimeError:
        raise NndiffError(f"{name} data not found: expected {layout} (nndiff never downloads)") from None
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    labels = getattr(ds, "_labels", None)
    if files is None or labels is None:  # pragma: no cover - a torchvision that stores them elsewhere
        raise NndiffError(f"this torchvision's {name} reader keeps no file list nndiff can read")
    return ImageSource(PilReader(files), labels, 3)


def load_pets(root: Path) -> ImageData:
    """Oxford-IIIT Pets: 37 breeds, the official trainval / test split."""
    datasets = require("torchvision").datasets
    layout = f"{root}/oxford-iiit-pet/images/*.jpg and annotations/trainval.txt, test.txt"
    make = lambda split: _torchvision_files(  # noqa: E731
        lambda: datasets.OxfordIIITPet(str(root), split=split, download=False), "Oxford-IIIT Pets", layout
    )
    return ImageData(make("trainval"), make("test"))


def load_food101(root: Path) -> ImageData:
    datasets = require("torchvision").datasets
    layout = f"{root}/food-101/images/<class>/<id>.jpg and meta/train.json, test.json"
    make = lambda split: _torchvision_files(  # noqa: E731
        lambda: datasets.Food101(str(root), split=split, download=False), "Food-101", layout
    )
    return ImageData(make("train"), make("test"))


def _folder(path: Path, classes: list[str] | None = None) -> ImageSource:
    """One ImageFolder tree (torchvision's scan: class folders, image extensions)."""
    datasets = require("torchvision").datasets
    try:
        ds = datasets.ImageFolder(str(path), allow_empty=classes is not None)
    except FileNotFoundError as e:  # a class folder without images, or no class folders at all
        raise NndiffError(f"{path}: {str(e).split('. Supported')[0]}") from None
    if classes is not None and ds.classes != classes:
        raise NndiffError(f"{path} has classes {ds.classes[:5]}..., unlike the training folder's {classes[:5]}...")
    return ImageSource(PilReader([p for p, _ in ds.samples]), ds.targets, 3)


def _folders(root: Path, train: str, test: str, val: str | None, *, what: str) -> ImageData:
    for split in (train, test):
        if not (root / split).is_dir():
            raise NndiffError(
                f"{what} data not found: {root / split} is missing; expected {root}/{train}/<class>/... "
                f"and {root}/{test}/<class>/..."
            )
    train_source = _folder(root / train)
    if len(train_source) == 0:
        raise NndiffError(f"{root / train} holds no images")
    classes = sorted(p.name for p in (root / train).iterdir() if p.is_dir())
    val_source = _folder(root / val, classes) if val and (root / val).is_dir() else None
    return ImageData(train_source, _folder(root / test, classes), val_source)


def load_imagefolder(root: Path) -> ImageData:
    return _folders(root, "train", "test", "val", what="ImageFolder")


def load_imagenet(root: Path) -> ImageData:
    """ImageNet-1K as class folders; its validation images are the test set here (the labelled test
    set is not public) and 10% of the training images are held out for every choice made."""
    return _folders(root, "train", "val", None, what="ImageNet")


# name -> (reader, channels, classes when the data is not at hand, default image size)
DATASETS = {
    "cifar10": (load_cifar10, 3, 10, 32),
    "cifar100": (load_cifar100, 3, 100, 32),
    "mnist": (load_mnist, 1, 10, 32),
    "stl10": (load_stl10, 3, 10, 96),
    "flowers102": (load_flowers102, 3, 102, 224),
    "pets": (load_pets, 3, 37, 224),
    "food101": (load_food101, 3, 101, 224),
    "imagenet": (load_imagenet, 3, 1000, 224),
    "imagefolder": (load_imagefolder, 3, 10, 32),
}
