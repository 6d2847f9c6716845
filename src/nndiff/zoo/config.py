"""The settings of a collection, and the record of them a zoo keeps."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from nndiff.config.settings import SEED_MAX, check_fields, setting
from nndiff.errors import NndiffError
from nndiff.runtime.device import DEVICES
from nndiff.tasks import ClassificationTask, get_task

RECIPES = ("adamw", "sgd")  # how a base model is trained (base_optimizer)


ALIGNMENTS = ("weights", "none")  # how independent base models are made comparable (align.py)


ZOO_ROWS = "zoo-rows"  # the stage's row file the snapshots are written to (it becomes params.safetensors)


@dataclass
class CollectConfig:
    select: list[str] | None = setting(
        None,
        "glob patterns over the model's parameter names to generate (default: the task's, e.g. 'bn3.*' 'bn4.*')",
        flag="--select",
    )
    k: int = setting(200, "number of snapshots to collect", low=1, integer=True, flag="-k")
    runs: int = setting(
        1, "independent collection runs (seeds) the k snapshots are split over", low=1, integer=True, flag="--runs"
    )
    bases: int = setting(
        1,
        "independent base models, each trained here from its own initialization, that the runs are dealt "
        "over (whole networks without buffers only); with more than one, the held-out run gets one more of its own",
        low=1,
        integer=True,
        flag="--bases",
    )
    align: str = setting(
        "weights",
        "with --bases above 1: permute each base model's hidden units towards the first's before collecting from "
        "it (weights: weight matching, Git Re-Basin; plain chains of Linear and Conv layers) or leave them (none)",
        choices=ALIGNMENTS,
        flag="--align",
    )
    seed: int = setting(
        0, "random seed; the same seed gives the same result", low=0, high=SEED_MAX, integer=True, flag="--seed"
    )
    lr: float | str | None = setting(
        "auto",
        "collection learning rate, or 'auto': a short probe from the base model "
        "picks the rate whose snapshots differ most while keeping its validation accuracy "
        "(too small a rate gives copies, too large loses accuracy)",
        low=0,
        low_open=True,
        optional=True,
        words=("auto",),
        flag="--lr",
    )
    momentum: float = setting(0.9, "SGD momentum of the collection runs", low=0, high=1, high_open=True)
    burn_in: int = setting(
        100, "SGD steps before the first snapshot of each run", low=0, integer=True, flag="--burn-in"
    )
    every: int | None = setting(
        None,
        "SGD steps between snapshots (default: the task's, 1 for a few layers; "
        "whole-network tasks take a gentler --lr and space snapshots out)",
        low=1,
        integer=True,
        optional=True,
        flag="--every",
    )
    heldout: int = setting(
        100,
        "snapshots collected from one more run (a new seed) that the generator never sees; "
        "the novelty report compares generated models with them",
        low=0,
        integer=True,
        flag="--heldout",
    )
    device: str = setting("auto", "where to compute (auto: CUDA if present)", choices=DEVICES, flag="--device")
    data_root: str | None = setting(
        None, "vision tasks: the directory holding the dataset (default: $NNDIFF_DATA_ROOT)", flag="--data-root"
    )
    base_epochs: int | None = setting(
        None, "base model training epochs (default: the task's)", low=1, integer=True, optional=True, flag="--epochs"
    )
    amp: bool = setting(
        False, "bf16 autocast for base training and collection (for CUDA; evaluation stays float32)", flag="--amp"
    )
    recipe: str = setting(
        "adamw",
        "how the base model is trained: adamw (AdamW, one-cycle, the task's base_lr) or sgd (the paper's: "
        "SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay)",
        choices=RECIPES,
        flag="--recipe",
    )
    image_size: int | None = setting(
        None,
        "vision tasks: the side of the images the model sees, in pixels (default: the dataset's, 32 for "
        "CIFAR, MNIST and ImageFolder, 96 for STL-10, 224 for Flowers-102, Pets, Food-101 and ImageNet)",
        low=8,
        integer=True,
        optional=True,
        flag="--image-size",
    )

    def validate(self) -> "CollectConfig":
        check_fields(self)
        if self.k < self.runs:
            raise NndiffError(f"-k {self.k} snapshots cannot be split over --runs {self.runs}; need k >= runs")
        if self.runs < self.bases:
            raise NndiffError(
                f"--bases {self.bases} needs at least as many --runs (got {self.runs}): one per base model"
            )
        if self.select is not None and (
            isinstance(self.select, str) or not all(isinstance(p, str) for p in self.select)
        ):
            raise NndiffError(f"select must be a list of glob patterns such as ['bn1.*'] (got {self.select!r})")
        return self


def collection_settings(task, config: CollectConfig, base_state: dict[str, torch.Tensor] | None = None) -> dict:
    """Everything a collection's result depends on (not where it runs): its progress is resumed,
    and a complete zoo reused, only under the same settings."""
    from nndiff.params.rows import fingerprint

    base = (
        None
        if base_state is None
        else fingerprint(torch.cat([v.detach().reshape(-1).float() for v in base_state.values()]))
    )
    settings = {
        **asdict(config),
        "select": list(config.select or task.default_select),
        "lr": config.lr if config.lr is not None else task.collect_lr,
        "every": config.every if config.every is not None else getattr(task, "collect_every", 1),
        "data_root": getattr(task, "data_root", None),
        "data_fingerprint": getattr(task, "data_fingerprint", None),
        "base": base,
    }
    settings.pop("device")  # resuming on another device is fine
    return settings


def configured_task(task: ClassificationTask | str, config: CollectConfig):
    """The task with the collection's overrides (--amp, --epochs), leaving the caller's object as it was."""
    task = get_task(task, config.data_root, config.image_size) if isinstance(task, str) else copy.copy(task)
    if config.amp:
        if not hasattr(task, "amp"):
            raise NndiffError("--amp needs a task built on nndiff.tasks.ClassificationTask")
        task.amp = True
    if config.base_epochs is not None:
        task.base_epochs = config.base_epochs
    return task
