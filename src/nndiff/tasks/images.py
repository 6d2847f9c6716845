"""Streamed image data: images read, decoded and transformed by DataLoader workers at any resolution.

The in-memory path (`Split`, whole float tensors) is kept for small sets at their native size
(CIFAR, MNIST, STL-10); everything else — image files, ImageNet, a non-native `--image-size` — is a
`StreamedSplit`. Its batches are a pure function of (seed, step): every random draw of a batch (which
images, and each image's crop and flip) comes from a generator seeded by the loop's seed and the
step, never from a worker's or the process's global RNG. So a run is the same bit for bit whatever the
number of workers or processes, and resuming needs only the step to restart from.

Standard transforms: up to 64 px, resize to the size, then a random crop after 4-pixel reflection
padding and a horizontal flip for training; above, a random resized crop (scale 0.08–1, aspect
3/4–4/3) and a flip for training, resize to size/0.875 and a centre crop for evaluation.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SMALL = 64  # up to this side, CIFAR-style transforms; above, ImageNet-style
STATS_IMAGES = 1000  # training images the per-channel mean and std are estimated from
SEED_SPAN = 2**62


class ImageSource:
    """Images on disk or in an array, with their labels: `image(i)` is a uint8 tensor [C, H, W]."""

    def __init__(self, read: Callable[[int], torch.Tensor], labels: Sequence[int], channels: int):
        self.read, self.labels, self.channels = read, np.asarray(labels, dtype=np.int64), channels

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        x = self.read(int(i))
        if x.shape[0] != self.channels:  # grayscale JPEGs in a colour dataset, or RGBA PNGs
            x = x[:1].expand(self.channels, -1, -1) if x.shape[0] == 1 else x[: self.channels]
        return x


class PilReader:  # a class, not a closure: DataLoader workers receive it by pickling
    def __init__(self, paths: Sequence):
        self.paths = list(map(str, paths))

    def __call__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            rgb = img.convert("RGB")
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


class ArrayReader:
    """Rows of a uint8 array [N, C, H, W] (a numpy memmap keeps it on disk)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __call__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[i]))


# ------------------------------------------------------------------ transforms


def random_resized_box(h: int, w: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering 8–100% of the image at aspect ratio 3/4–4/3,
    drawn from `generator`; the whole image where ten draws do not fit."""
    area = h * w
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (0.08 + u[0] * 0.92)
        ratio = math.exp(math.log(3 / 4) + u[1] * (math.log(4 / 3) - math.log(3 / 4)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return top, left, ch, cw
    return 0, 0, h, w


def transform(image: torch.Tensor, size: int, train: bool, generator: torch.Generator | None) -> torch.Tensor:
    """One uint8 image [C, H, W] as a float image [C, size, size] in [0, 1], the standard way."""
    from torchvision.transforms.v2 import functional as TF

    if size <= SMALL:
        x = TF.resize(image, [size, size], antialias=True) if image.shape[-2:] != (size, size) else image
        if train:
            padded = torch.nn.functional.pad(x[None].float(), (4, 4, 4, 4), mode="reflect")[0]
            top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
            x = padded[:, top : top + size, left : left + size]
    elif train:
        top, left, h, w = random_resized_box(*image.shape[-2:], generator)
        x = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    else:
        x = TF.center_crop(TF.resize(image, int(size / 0.875), antialias=True), [size, size])
    if train and bool(torch.rand(1, generator=generator) < 0.5):
        x = x.flip(-1)
    return x.float() / 255


class _Samples(Dataset):
    """Items are (index, seed): seed < 0 for the evaluation transform, else the training transform
    with a generator seeded by it. Returns the normalized image and its label."""

    def __init__(self, source: ImageSource, size: int, mean: torch.Tensor, std: torch.Tensor):
        self.source, self.size, self.mean, self.std = source, size, mean, std

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        generator = torch.Generator().manual_seed(seed) if seed >= 0 else None
        x = transform(self.source.image(index), self.size, seed >= 0, generator)
        return (x - self.mean) / self.std, int(self.source.labels[index])


def channel_stats(source: ImageSource, indices: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of up to STATS_IMAGES training images (a fixed subset), as evaluated;
    summed image by image, so 1,000 images at 224 px cost no more memory than one."""
    pick = indices[torch.randperm(len(indices), generator=torch.Generator().manual_seed(0))[:STATS_IMAGES]]
    total = squares = 0
    for i in pick:
        x = transform(source.image(int(i)), size, False, None).double().flatten(1)
        total, squares = total + x.sum(1), squares + (x * x).sum(1)
    count = len(pick) * size * size
    mean = total / count
    std = ((squares / count - mean**2).clamp_min(0) * count / max(1, count - 1)).sqrt()
    return mean.float()[:, None, None], std.float().clamp_min(1e-3)[:, None, None]


def default_workers() -> int:
    return min(8, max(0, (os.cpu_count() or 1) - 1))


class StreamedImages:
    """What `StreamedSplit.x` is: the split's images, read in batches (`batches(size)`), not a tensor."""

    def __init__(self, split: "StreamedSplit"):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        for x, _ in self.split.loader([[(int(i), -1) for i in chunk] for chunk in self.split.indices.split(size)]):
            yield x


class StreamedSplit:
    """A split of an ImageSource, read through a DataLoader (worker processes, pinned memory on CUDA)."""

    def __init__(
        self,
        source: ImageSource,
        indices: torch.Tensor,
        size: int,
        mean: torch.Tensor,
        *,
        std: torch.Tensor,
        workers: int | None = None,
    ):
        self.indices = indices.long()
        self.samples = _Samples(source, size, mean, std)
        self.y = torch.from_numpy(source.labels)[self.indices]
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def x(self) -> StreamedImages:
        return StreamedImages(self)

    def to(self, device: torch.device | str) -> "StreamedSplit":
        moved = copy.copy(self)
        moved.device, moved.y = torch.device(device), self.y.to(device)
        return moved

    def loader(
        self, batches: Sequence[list[tuple[int, int]]] | Iterator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of (index, seed) items, in the order given, as (x, y) on this split's device."""
        workers = self.workers if self.workers and len(self.indices) > 1 else 0
        loader = DataLoader(
            self.samples,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def random_batches(self, count: int, seed: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Step after step from `start`: `count` images drawn with replacement, each augmented."""
        return self.loader(_RandomSteps(self.indices, count, seed, start))

    def epoch_batches(self, batch: int, seed: int, epoch: int, share: slice = slice(None)):
        """One epoch in a random order (batches of `batch`, the last partial one dropped); `share`:
        the part of each batch this process trains on."""
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = self.indices[torch.randperm(len(self.indices), generator=g)]
        seeds = torch.randint(SEED_SPAN, (len(order),), generator=g)
        steps = [
            list(zip(order[s : s + batch][share].tolist(), seeds[s : s + batch][share].tolist()))
            for s in range(0, len(order) - batch + 1, batch)
        ]
        return self.loader(steps)


class _RandomSteps:
    """Batch sampler: step s draws its images and their augmentation seeds from a generator seeded
    by (seed, s), so any step can be produced without the ones before it."""

    def __init__(self, indices: torch.Tensor, count: int, seed: int, start: int):
        self.indices, self.count, self.seed, self.start = indices, count, seed, start

    def __iter__(self):
        step = self.start
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            picks = self.indices[torch.randint(len(self.indices), (self.count,), generator=g)]
            seeds = torch.randint(SEED_SPAN, (self.count,), generator=g)
            yield list(zip(picks.tolist(), seeds.tolist()))
            step += 1


def streamed_splits(
    train: ImageSource,
    test: ImageSource,
    size: int,
    val: ImageSource | None = None,
    *,
    val_fraction: float = 0.1,
    workers: int | None = None,
) -> dict[str, StreamedSplit]:
    """train/val/test splits; without an official validation set, a fixed random `val_fraction` of the
    training images is held out. Normalized with the training images' per-channel statistics."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    if val is None:
        n_val = max(1, int(round(val_fraction * len(train))))
        val_idx, train_idx, val = order[:n_val], order[n_val:], train
    else:
        val_idx, train_idx = torch.arange(len(val)), torch.arange(len(train))
    mean, std = channel_stats(train, train_idx, size)
    make = lambda source, idx: StreamedSplit(source, idx, size, mean, std=std, workers=workers)  # noqa: E731
    return {"train": make(train, train_idx), "val": make(val, val_idx), "test": make(test, torch.arange(len(test)))}
