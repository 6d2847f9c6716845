"""The task interface: data splits, a model factory, a train step and an evaluation.

Any object with these attributes and methods is a task; `ClassificationTask` implements the
interface for a classifier over in-memory tensors, which is what every built-in task is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


def batches(x, size: int):
    """`x` in batches of `size`: slices of a tensor, or a streamed split's images read in turn."""
    if isinstance(x, torch.Tensor):
        return (x[i : i + size] for i in range(0, len(x), size))
    return x.batches(size)


@dataclass
class Evaluation:
    accuracy: float  # percent
    predictions: torch.Tensor  # [n] predicted class per sample, on the CPU


@dataclass
class ClassificationTask:
    """A classifier trained with cross-entropy on tensors that fit in memory.

    `load_data` returns {"train", "val", "test"} splits; it is called once and cached.
    Training hyperparameters for the base model and the collection defaults live here because
    they are properties of the task (what converges, what gives diverse snapshots).
    """

    name: str
    description: str
    make_model: Callable[[], nn.Module]
    load_data: Callable[[], dict[str, Split]]
    default_select: list[str]
    base_epochs: int = 20
    base_lr: float = 3e-3
    batch_size: int = 128
    collect_lr: float = 0.5
    collect_every: int = 1  # SGD steps between snapshots
    eval_batch_size: int = 4096
    batched_eval: bool = True  # predictions are argmax(model(x)): many models can share one trunk pass
    amp: bool = False  # bf16 autocast for the training forward passes (set by collect --amp)
    data_fingerprint: str | None = None  # of a built-in task's data, recorded in the zoo (the same on every install)
    _splits: dict[str, Split] | None = field(default=None, repr=False)

    def splits(self) -> dict[str, Split]:
        if self._splits is None:
            self._splits = self.load_data()
        return self._splits

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Only the forward pass is autocast; the backward pass follows the forward's dtypes.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = model(x)
        return F.cross_entropy(logits.float(), y)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A training batch as the model trains on it; every random draw comes from `generator` (the
        training loop's own, saved in its checkpoints), so a run is reproducible bit for bit and
        does not depend on which process runs it. None here; vision tasks crop and flip."""
        return x

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, x, y)
        loss.backward()
        optimizer.step()
        return loss.item()

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes for `x`, in eval mode (BatchNorm uses its running statistics)."""
        was_training = model.training
        model.eval()
        preds = torch.cat([model(chunk).argmax(1) for chunk in batches(x, self.eval_batch_size)])
        model.train(was_training)
        return preds

    def evaluate(self, model: nn.Module, split: Split) -> Evaluation:
        preds = self.predict(model, split.x)
        return Evaluation(100.0 * float((preds == split.y).double().mean()), preds.cpu())
