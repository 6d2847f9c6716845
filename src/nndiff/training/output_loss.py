"""A functional loss for the autoencoder: a reconstruction is also scored by what the network does
with it, not only by how close its values are.

Both the snapshot and its reconstruction are put into the base model (torch.func.functional_call,
so the model itself is never changed) and run on a fixed batch of training inputs; the loss is the
mean squared difference of their logits. Only training data is used. Its weight is
`autoencoder.output_weight` (0, the default: parameter error alone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nndiff.errors import NndiffError
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer
from nndiff.tasks import training_split
from nndiff.tasks.images import StreamedSplit

INPUTS = 256  # training inputs the logits are compared on


class OutputMatch:
    def __init__(
        self, task, model: nn.Module, layout: Layout, normalizer: Normalizer | None, *, weight: float, device=None
    ):
        train = training_split(task)
        if isinstance(train, StreamedSplit):
            raise NndiffError("autoencoder.output_weight needs a task whose training split is held in memory")
        self.model, self.layout, self.weight = model.eval(), layout, weight
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.scale = None if normalizer is None else (normalizer.std.to(self.device), normalizer.mean.to(self.device))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.inputs = train.x[:INPUTS].to(self.device)

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """[n, INPUTS, classes]: the model's logits with each row's (normalized) parameters."""
        raw = rows if self.scale is None else rows * self.scale[0] + self.scale[1]
        return torch.stack([functional_call(self.model, self.layout.unflatten(r), (self.inputs,)) for r in raw])

    def __call__(self, recon: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`weight` x the mean squared difference of the logits of the reconstructions and of the rows
        they reconstruct (both normalized as the autoencoder sees them)."""
        with torch.no_grad():
            target = self.logits(rows)
        return self.weight * F.mse_loss(self.logits(recon), target)
