"""The generated part of a family's models: a linear head on the frozen trunk's features.

The trunk runs once per split (`features`), or once per task and split where tasks differ in their
inputs; every head of every task is then a [D] vector (the head's weight, row-major, then its bias,
as Layout flattens them), trained and evaluated for many tasks at once. Features are [N, F] shared by
every task or [T, N, F], one set per task. Evaluating a head on the features is evaluating the whole
model with that head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def features(model: nn.Module, head: str, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """What the trunk hands to `head` for every example of `x` (the model in eval mode)."""
    module = dict(model.named_modules())[head]
    seen = []
    hook = module.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].flatten(1)))
    try:
        model.eval()
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    finally:
        hook.remove()
    return torch.cat(seen)


def logits(heads: torch.Tensor, x: torch.Tensor, classes: int) -> torch.Tensor:
    """[T, N, classes] for heads [T, D] (weight [classes, F] then bias [classes]) on features [N, F]
    or [T, N, F]."""
    f = x.shape[-1]
    w = heads[:, : classes * f].reshape(len(heads), classes, f)
    b = heads[:, classes * f :]
    return torch.einsum("nf,tcf->tnc" if x.ndim == 2 else "tnf,tcf->tnc", x, w) + b[:, None, :]


@torch.no_grad()
def correct(
    heads: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, classes: int, *, block: int = 64
) -> torch.Tensor:
    """[T, N] bool: which examples each head gets right (labels [T, N], one row per head's task)."""
    out = torch.empty(labels.shape, dtype=torch.bool)
    for i in range(0, len(heads), block):
        xb = x if x.ndim == 2 else x[i : i + block]
        out[i : i + block] = logits(heads[i : i + block], xb, classes).argmax(2) == labels[i : i + block]
    return out


def train_heads(
    init: torch.Tensor,
    x: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    *,
    steps: int,
    lr: float,
    seed: int,
    keep: tuple[int, ...] = (),
    batch: int = 256,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """SGD (momentum 0.9) from the common initialization `init` [D] for every task at once: labels
    [T, N] over the features x ([N, F] or [T, N, F]), the same minibatches for every task. Returns the heads after
    `steps` steps and, for each step in `keep`, the heads then."""
    heads = init.expand(len(labels), -1).clone().requires_grad_(True)
    opt = torch.optim.SGD([heads], lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    kept = {}
    for step in range(1, steps + 1):
        idx = torch.randint(labels.shape[1], (min(batch, labels.shape[1]),), generator=gen)
        out = logits(heads, x[idx] if x.ndim == 2 else x[:, idx], classes)
        loss = F.cross_entropy(out.reshape(-1, classes), labels[:, idx].reshape(-1), reduction="sum") / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in keep:
            kept[step] = heads.detach().clone()
    return heads.detach(), kept
