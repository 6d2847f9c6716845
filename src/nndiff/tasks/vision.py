"""Standard vision tasks from a local copy of the data (never downloaded): CIFAR-10/100, MNIST,
an ImageFolder tree, with ResNet-18/50 (CIFAR stem), ViT-Tiny and ConvNeXt-Tiny.

Architectures come from torchvision and timm, datasets are read from their standard on-disk
formats; both are the optional extra `pip install nndiff[vision]`. The data root is `--data-root`
or the NNDIFF_DATA_ROOT environment variable; the zoo records it for the later stages.

    CIFAR-10     ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}   (the "python version")
    CIFAR-100    ROOT/cifar-100-python/{train, test}
    MNIST        ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    ImageFolder  ROOT/train/<class>/<image>, ROOT/test/<class>/<image> (and optionally ROOT/val/...)

The CIFAR files are Python pickles. They are read with an unpickler that only rebuilds numpy
arrays and plain containers, so a crafted file cannot run code (torchvision's reader would
unpickle them unrestricted).

Longer than 250 lines because it declares every dataset loader and architecture of the vision tasks.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import NndiffError
from .base import ClassificationTask, Split

ENV_ROOT = "NNDIFF_DATA_ROOT"
VAL_FRACTION = 0.1  # of the training images, held out for every choice the pipeline makes


def require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise NndiffError(
            f"the vision tasks need {module}: pip install 'nndiff[vision]' "
            "(on CPU-only machines: pip install torch==2.14.1 torchvision==0.29.1 'nndiff[vision]')"
        ) from None


# ------------------------------------------------------------------ datasets


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


def _cifar(root: Path, folder: str, train_files: list[str], test_files: list[str]):
    base = root / folder
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        raise NndiffError(
            f"CIFAR data not found: {base} lacks {', '.join(missing)}; expected the python-format "
            f"archive extracted so that {base}/{train_files[0]} exists (nndiff never downloads)"
        )
    train = [_read_cifar_batch(base / f) for f in train_files]
    test = [_read_cifar_batch(base / f) for f in test_files]
    cat = lambda parts: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))  # noqa: E731
    return cat(train), cat(test)


def load_cifar10(root: Path):
    return _cifar(root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])


def load_cifar100(root: Path):
    return _cifar(root, "cifar-100-python", ["train"], ["test"])


def load_mnist(root: Path):
    datasets = require("torchvision").datasets
    try:
        train = datasets.MNIST(str(root), train=True, download=False)
        test = datasets.MNIST(str(root), train=False, download=False)
    except RuntimeError as e:
        raise NndiffError(
            f"MNIST data not found under {root}: expected {root}/MNIST/raw/train-images-idx3-ubyte and the "
            f"other three idx files ({e})"
        ) from None
    # 28x28 digits padded to 32x32, the size every architecture here is built for
    as_np = lambda ds: (
        np.pad(ds.data.numpy()[:, None], ((0, 0), (0, 0), (2, 2), (2, 2))),
        ds.targets.numpy().astype(np.int64),
    )  # noqa: E731
    return as_np(train), as_np(test)


def load_imagefolder(root: Path, image_size: int = 32):
    tv = require("torchvision")
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])
    out = []
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise NndiffError(
                f"ImageFolder data not found: {root / split} is missing; expected {root}/train/<class>/... "
                f"and {root}/test/<class>/..."
            )
        ds = tv.datasets.ImageFolder(str(root / split), transform=tf)
        images = (
            np.stack([np.asarray(img) for img, _ in ds])
            if len(ds)
            else np.empty((0, 3, image_size, image_size), np.uint8)
        )
        out.append((images, np.asarray(ds.targets, dtype=np.int64)))
    if out[0][1].size == 0:
        raise NndiffError(f"{root / 'train'} holds no images")
    return out[0], out[1]


DATASETS: dict[str, tuple[Callable, int, int]] = {  # name -> (loader, channels, classes; 0 = from the data)
    "cifar10": (load_cifar10, 3, 10),
    "cifar100": (load_cifar100, 3, 100),
    "mnist": (load_mnist, 1, 10),
    "imagefolder": (load_imagefolder, 3, 0),
}


def to_splits(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 0
) -> dict[str, Split]:
    """Float images standardized with the training set's per-channel statistics; validation is a
    fixed random 10% of the training images."""
    x, y = torch.from_numpy(train[0]).float() / 255, torch.from_numpy(train[1])
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(VAL_FRACTION * len(y))))
    val, tr = order[:n_val], order[n_val:]
    x = (x - mean) / std
    xt = (torch.from_numpy(test[0]).float() / 255 - mean) / std
    return {"train": Split(x[tr], y[tr]), "val": Split(x[val], y[val]), "test": Split(xt, torch.from_numpy(test[1]))}


# ------------------------------------------------------------------ architectures


def resnet(depth: int, channels: int, classes: int) -> nn.Module:
    models = require("torchvision").models
    model = (models.resnet18 if depth == 18 else models.resnet50)(num_classes=classes)
    # CIFAR stem for 32x32 inputs: a 3x3 stride-1 first convolution and no max-pooling.
    model.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def vit_tiny(channels: int, classes: int) -> nn.Module:
    timm = require("timm")
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=classes, img_size=32, patch_size=4, in_chans=channels
    )


def convnext_tiny(channels: int, classes: int) -> nn.Module:
    timm = require("timm")
    return timm.create_model("convnext_tiny", pretrained=False, num_classes=classes, in_chans=channels)


ARCHITECTURES: dict[str, tuple[Callable[[int, int], nn.Module], list[str], float]] = {
    # name -> (factory(channels, classes), default selection as in the paper, base learning rate)
    "resnet18": (lambda c, k: resnet(18, c, k), ["layer4.1.bn1.*", "layer4.1.bn2.*"], 1e-3),
    "resnet50": (lambda c, k: resnet(50, c, k), ["layer4.2.bn2.*", "layer4.2.bn3.*"], 1e-3),
    "vit-tiny": (vit_tiny, ["blocks.11.norm2.*", "norm.*"], 5e-4),
    "convnext-tiny": (convnext_tiny, ["stages.3.blocks.2.norm.*", "head.norm.*"], 5e-4),
}


class VisionTask(ClassificationTask):
    """A ClassificationTask whose training batches get the standard augmentation on the device:
    per image, a random crop after 4-pixel reflection padding and a horizontal flip, drawn from the
    training loop's generator (never the global RNG, which differs between processes)."""

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
        offsets = torch.randint(0, 9, (n, 2), generator=generator).to(x.device)
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # [n, h]
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # [n, w]
        images = torch.arange(n, device=x.device)[:, None, None, None]
        channels = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[images, channels, rows[:, None, :, None], cols[:, None, None, :]]
        return torch.where(flip[:, None, None, None], x.flip(3), x)


def data_root(given: str | Path | None) -> Path:
    root = given or os.environ.get(ENV_ROOT)
    if not root:
        raise NndiffError(f"vision tasks read a local copy of the data: pass --data-root DIR or set {ENV_ROOT}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise NndiffError(f"data root {root} does not exist")
    return root


def make_vision_task(dataset: str, arch: str, root: str | Path | None) -> VisionTask:
    """The task; the data root is checked when the data is first needed, so `nndiff inspect`
    works without one (an ImageFolder model then gets a placeholder 10-class head)."""
    loader, channels, classes = DATASETS[dataset]
    factory, select, lr = ARCHITECTURES[arch]
    given = root or os.environ.get(ENV_ROOT)
    if dataset == "imagefolder":
        classes = 10
        if given:
            train_dir = data_root(given) / "train"
            if not train_dir.is_dir():
                raise NndiffError(
                    f"ImageFolder data not found: {train_dir} is missing; expected {train_dir}/<class>/<image>"
                )
            classes = len([p for p in train_dir.iterdir() if p.is_dir()])
    task = VisionTask(
        name=f"{dataset}-{arch}",
        description=f"{dataset} from a local copy, {arch}; generates {' + '.join(select)}",
        make_model=lambda: factory(channels, classes),
        load_data=lambda: to_splits(*loader(data_root(given))),
        default_select=select,
        base_epochs=30,
        base_lr=lr,
        batch_size=128,
        collect_lr=0.05,
        eval_batch_size=256,
    )
    task.data_root = str(data_root(given)) if given else None
    return task


VISION_TASKS = [f"{d}-{a}" for d in DATASETS for a in ARCHITECTURES]


def parse_vision_name(name: str) -> tuple[str, str] | None:
    for d in DATASETS:
        if name.startswith(d + "-") and name[len(d) + 1 :] in ARCHITECTURES:
            return d, name[len(d) + 1 :]
    return None
