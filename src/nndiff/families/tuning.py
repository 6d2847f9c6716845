"""A fitted regression tuned further with the tasks' own loss.

The MSE fit pulls each task's head towards the mean of its snapshots, one coordinate like another;
but a head's coordinates matter unequally to its accuracy. Tuning trains the same network on what a
head is for: the heads it gives for a batch of training tasks are scored by cross-entropy on those
tasks' training examples, through the frozen trunk's features. Only training tasks' training data
is used; the validation tasks decide whether the tuned regression is kept (run.py).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F

from nndiff.families.generators import RegressionGenerator
from nndiff.families.heads import logits


def tune(
    gen: RegressionGenerator,
    descriptors: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: int,
    steps: int,
    seed: int = 0,
    lr: float = 1e-3,
    tasks: int = 64,
    batch: int = 256,
) -> RegressionGenerator:
    """A tuned copy of `gen` (`gen` itself is unchanged). Each step takes `tasks` training tasks and
    `batch` of their training examples: features x ([N, F] shared or [T, N, F] per task) and labels
    [T, N]; `descriptors(task_indices, generator)` gives those tasks' descriptors (a code, or one of
    their example sets drawn with the generator)."""
    tuned = copy.deepcopy(gen)
    tuned.net.train()
    opt = torch.optim.AdamW(tuned.net.parameters(), lr=lr)
    draw = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        t = torch.randint(len(labels), (min(tasks, len(labels)),), generator=draw)
        i = torch.randint(labels.shape[1], (min(batch, labels.shape[1]),), generator=draw)
        heads = tuned.normalizer.inverse(tuned.net(tuned.inputs(descriptors(t, draw).float())))
        xb = x[i] if x.ndim == 2 else x[t[:, None], i[None]]
        out = logits(heads, xb, classes)
        loss = F.cross_entropy(out.reshape(-1, classes), labels[t[:, None], i[None]].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tuned.net.eval()
    return tuned
