"""Standard vision tasks from a local copy of the data (never downloaded): the datasets of the paper's
table (datasets.py lists their layouts) with ResNet-18/50, ViT-Tiny/Base and ConvNeXt-Tiny/Base.

Architectures come from torchvision and timm, datasets are read from their standard on-disk
formats; both are the optional extra `pip install nndiff[vision]`. The data root is `--data-root`
or the NNDIFF_DATA_ROOT environment variable; the zoo records it for the later stages, and the image
size (`--image-size`) with it. At up to 64 px the architectures take CIFAR-style stems (ResNet: a
3x3 stride-1 first convolution and no max-pooling; ViT: 4-px patches); above, their ImageNet form.

Small sets at their native size (CIFAR, MNIST, STL-10) are held in memory as tensors; image files and
any other size are streamed through DataLoader workers (images.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.tasks.base import ClassificationTask, Split
from nndiff.tasks.datasets import DATASETS, ImageData, require
from nndiff.tasks.images import SMALL, streamed_splits

ENV_ROOT = "NNDIFF_DATA_ROOT"
VAL_FRACTION = 0.1  # of the training images, held out for every choice the pipeline makes


def to_splits(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 0
) -> dict[str, Split]:
    """Float images standardized with the training set's per-channel statistics; validation is a
    fixed random 10% of the training images."""
    x, y = torch.from_numpy(np.ascontiguousarray(train[0])).float() / 255, torch.from_numpy(train[1])
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(VAL_FRACTION * len(y))))
    val, tr = order[:n_val], order[n_val:]
    x = (x - mean) / std
    xt = (torch.from_numpy(np.ascontiguousarray(test[0])).float() / 255 - mean) / std
    return {"train": Split(x[tr], y[tr]), "val": Split(x[val], y[val]), "test": Split(xt, torch.from_numpy(test[1]))}


def splits_of(data: ImageData, image_size: int) -> dict:
    """In memory where the images are arrays at this size already; streamed otherwise."""
    if data.native == image_size and data.val is None:
        arrays = lambda s: (s.read.array, s.labels)  # noqa: E731
        return to_splits(arrays(data.train), arrays(data.test))
    return streamed_splits(data.train, data.test, image_size, data.val, val_fraction=VAL_FRACTION)


# ------------------------------------------------------------------ architectures


def resnet(depth: int, channels: int, classes: int, size: int) -> nn.Module:
    models = require("torchvision").models
    model = (models.resnet18 if depth == 18 else models.resnet50)(num_classes=classes)
    if size <= SMALL:  # CIFAR stem: a 3x3 stride-1 first convolution and no max-pooling
        model.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def vit(width: str, channels: int, classes: int, size: int) -> nn.Module:
    timm = require("timm")
    return timm.create_model(
        f"vit_{width}_patch16_224",
        pretrained=False,
        num_classes=classes,
        img_size=size,
        patch_size=4 if size <= SMALL else 16,
        in_chans=channels,
    )


def convnext(width: str, channels: int, classes: int, size: int) -> nn.Module:
    timm = require("timm")
    return timm.create_model(f"convnext_{width}", pretrained=False, num_classes=classes, in_chans=channels)


LAST_LAYERNORMS = ["blocks.11.norm2.*", "norm.*"]  # ViT: 768 values (Tiny), 3,072 (Base)
LAST_CONVNEXT_NORMS = ["stages.3.blocks.2.norm.*", "head.norm.*"]  # 3,072 values (Tiny), 4,096 (Base)

ARCHITECTURES: dict[str, tuple[Callable[[int, int, int], nn.Module], list[str], float]] = {
    # name -> (factory(channels, classes, image size), default selection as in the paper, AdamW base lr)
    "resnet18": (lambda c, k, s: resnet(18, c, k, s), ["layer4.1.bn1.*", "layer4.1.bn2.*"], 1e-3),
    "resnet50": (lambda c, k, s: resnet(50, c, k, s), ["layer4.2.bn2.*", "layer4.2.bn3.*"], 1e-3),
    "vit-tiny": (lambda c, k, s: vit("tiny", c, k, s), LAST_LAYERNORMS, 5e-4),
    "vit-base": (lambda c, k, s: vit("base", c, k, s), LAST_LAYERNORMS, 5e-4),
    "convnext-tiny": (lambda c, k, s: convnext("tiny", c, k, s), LAST_CONVNEXT_NORMS, 5e-4),
    "convnext-base": (lambda c, k, s: convnext("base", c, k, s), LAST_CONVNEXT_NORMS, 5e-4),
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


def _classes(dataset: str, given: str | None, default: int) -> int:
    """Class folders count for ImageFolder and ImageNet trees; the dataset's own number otherwise."""
    if dataset not in ("imagefolder", "imagenet") or not given:
        return default
    train_dir = data_root(given) / "train"
    if not train_dir.is_dir():
        raise NndiffError(f"{dataset} data not found: {train_dir} is missing; expected {train_dir}/<class>/<image>")
    return len([p for p in train_dir.iterdir() if p.is_dir()])


def make_vision_task(dataset: str, arch: str, root: str | Path | None, image_size: int | None = None) -> VisionTask:
    """The task; the data root is checked when the data is first needed, so `nndiff inspect`
    works without one (an ImageFolder model then gets a placeholder 10-class head)."""
    reader, channels, classes, default_size = DATASETS[dataset]
    factory, select, lr = ARCHITECTURES[arch]
    size = image_size or default_size
    given = root or os.environ.get(ENV_ROOT)
    classes = _classes(dataset, given, classes)
    task = VisionTask(
        name=f"{dataset}-{arch}",
        description=f"{dataset} from a local copy at {size} px, {arch}; generates {' + '.join(select)}",
        make_model=lambda: factory(channels, classes, size),
        load_data=lambda: splits_of(reader(data_root(given)), size),
        default_select=select,
        base_epochs=30,
        base_lr=lr,
        batch_size=128,
        collect_lr=0.05,
        eval_batch_size=256,
    )
    task.data_root = str(data_root(given)) if given else None
    task.image_size = size
    return task


VISION_TASKS = [f"{d}-{a}" for d in DATASETS for a in ARCHITECTURES]


def parse_vision_name(name: str) -> tuple[str, str] | None:
    for d in DATASETS:
        if name.startswith(d + "-") and name[len(d) + 1 :] in ARCHITECTURES:
            return d, name[len(d) + 1 :]
    return None
