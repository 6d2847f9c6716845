"""A task described by a few labelled examples: the mean of the frozen trunk's features over each
class's examples, classes in order ([classes * F], a set embedding that does not depend on the
examples' order or number).

Training the examples-conditioned generators draws several example sets per training task; a user
hands over one set as a safetensors file holding `x` (the examples, shaped like the base task's
inputs) and `y` (their labels in the family's classes), read without running anything.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.io.tensors import load_tensors

MAX_EXAMPLES = 100_000


def draw(labels: torch.Tensor, classes: int, shots: int, gen: torch.Generator) -> torch.Tensor:
    """[T, classes * shots] example indices, `shots` of each class for each task (labels [T, N]),
    drawn without replacement."""
    picks = []
    for c in range(classes):
        score = torch.rand(labels.shape, generator=gen).masked_fill_(labels != c, -1.0)
        top = score.topk(shots, dim=1)
        if (top.values < 0).any():
            raise NndiffError(f"a task has fewer than {shots} examples of class {c} to describe it with")
        picks.append(top.indices)
    return torch.cat(picks, 1)


def embed(feats: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes * F]: the per-class means of the features of one example set (feats [n, F], labels [n])."""
    onehot = torch.nn.functional.one_hot(labels, classes).float()  # [n, classes]
    return ((onehot.T @ feats) / onehot.sum(0)[:, None]).reshape(-1)


def embed_draws(feats: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, classes: int) -> torch.Tensor:
    """[T, classes * F] for each task's drawn examples idx [T, n]; feats [N, F] shared or [T, N, F] per task."""
    rows = torch.arange(len(idx))[:, None]
    chosen = feats[idx] if feats.ndim == 2 else feats[rows, idx]  # [T, n, F]
    onehot = torch.nn.functional.one_hot(labels[rows, idx], classes).float()  # [T, n, classes]
    means = onehot.transpose(1, 2) @ chosen / onehot.sum(1)[:, :, None]
    return means.flatten(1)


def load_examples(path: str | Path, input_shape: tuple[int, ...], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's example set: `x` [n, *input_shape] finite floats, `y` [n] integer labels with every
    class present. Anything else is one line naming what is wrong."""
    state = load_tensors(path)
    where = f"examples file {path}"
    if set(state) != {"x", "y"}:
        held = ", ".join(sorted(state)) or "none"
        raise NndiffError(f"{where} must hold exactly the tensors x and y (it holds {held})")
    x, y = state["x"], state["y"]
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise NndiffError(f"{where}: y must be a 1-D integer tensor of labels (got {y.dtype} {list(y.shape)})")
    if tuple(x.shape[1:]) != tuple(input_shape) or len(x) != len(y) or not x.dtype.is_floating_point:
        raise NndiffError(
            f"{where}: x must be {len(y)} floating-point examples of shape {list(input_shape)} "
            f"(got {x.dtype} {list(x.shape)})"
        )
    if len(y) > MAX_EXAMPLES:
        raise NndiffError(f"{where} holds {len(y)} examples; a task is described by at most {MAX_EXAMPLES}")
    if not torch.isfinite(x).all():
        raise NndiffError(f"{where}: x holds NaN or infinite values")
    y = y.long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise NndiffError(f"{where}: labels must lie in 0..{classes - 1} (got {int(y.min())}..{int(y.max())})")
    missing = sorted(set(range(classes)) - set(y.tolist()))
    if missing:
        raise NndiffError(f"{where} has no example of class {', '.join(map(str, missing))}: every class needs one")
    return x.float(), y
