"""A task family: many related classification tasks over one dataset, each with a descriptor the
generator is conditioned on, sharing one frozen trunk whose head is generated.

Tasks differ in their labels (`relabel`: the label-space families, asked for by a code), in their
inputs (`transform`: the input-domain families, asked for by a few labelled examples), or both.
Every task can also be described by examples: the mean of the trunk's features over each class's
examples (examples.py), so a user can ask for a task by showing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nndiff.errors import NndiffError

ASKED_BY = ("code", "examples")


@dataclass
class Family:
    """What a family is made of (`--family file.py:make_family` returns one of these)."""

    name: str
    description: str
    base_task: str  # the task whose model is the trunk, trained once on its own labels
    head: str  # the linear module whose input the trunk's features are and which is generated
    codes: torch.Tensor  # [T, C]: what sets each task apart (a code, a transformation's settings)
    classes: int  # every task's number of classes (the generated head's outputs)
    relabel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (codes [T, C], labels [N]) -> [T, N]
    transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (code [C], x) -> the task's x
    asked_by: str = "code"  # how a user names a task: its code (binary digits) or labelled examples
    samples: dict[str, int] | None = None  # at most this many examples per split (per-task inputs cost memory)

    def labels(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[T, N]: each task's labels of the split's examples."""
        if self.relabel is None:
            return labels.expand(len(codes), -1)
        return self.relabel(codes, labels)


def check_family(family, where: str) -> Family:
    """A family from a user's code, checked before any work: one line naming what is wrong."""
    if not isinstance(family, Family):
        raise NndiffError(f"{where} must return nndiff.families.Family (got {type(family).__name__})")
    codes = family.codes
    if not isinstance(codes, torch.Tensor) or codes.ndim != 2 or len(codes) < 10 or not codes.isfinite().all():
        what = list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise NndiffError(f"{where}: codes must be a finite [tasks, C] tensor with at least 10 tasks (got {what})")
    if len(torch.unique(codes, dim=0)) != len(codes):
        raise NndiffError(f"{where}: two tasks have the same code")
    if not isinstance(family.classes, int) or family.classes < 2:
        raise NndiffError(f"{where}: classes must be an integer of at least 2 (got {family.classes!r})")
    if family.asked_by not in ASKED_BY:
        raise NndiffError(f"{where}: asked_by must be one of {', '.join(ASKED_BY)} (got {family.asked_by!r})")
    if family.asked_by == "code" and not ((codes == 0) | (codes == 1)).all():
        raise NndiffError(f"{where}: a family asked for by code needs binary codes (0/1); use asked_by='examples'")
    for name in ("relabel", "transform"):
        if getattr(family, name) is not None and not callable(getattr(family, name)):
            raise NndiffError(f"{where}: {name} must be a function or None")
    return family


def split_tasks(count: int, seed: int, val: float = 0.1, heldout: float = 0.2) -> dict[str, torch.Tensor]:
    """Task indices for training the generator, for choosing among generators, and held out (never
    shown to a generator; their own trained models are only the yardstick)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 1))
    n_val, n_held = max(1, round(val * count)), max(1, round(heldout * count))
    return {"train": order[n_val + n_held :], "val": order[:n_val], "heldout": order[n_val : n_val + n_held]}


def binary_codes(classes: int) -> torch.Tensor:
    """Every assignment of `classes` classes to two sides with both sides used: [2^classes - 2, classes]."""
    values = torch.arange(1, 2**classes - 1)
    return ((values[:, None] >> torch.arange(classes - 1, -1, -1)) & 1).to(torch.long)


def binary_labels(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A label-space family's relabelling: each task's label is its code's digit for the class."""
    return codes[:, labels].long()


def parse_code(text: str, family: Family) -> torch.Tensor:
    """A task's code from its text ('0110100101'), checked: one binary digit per class, both sides used."""
    if family.asked_by != "code":
        raise NndiffError(f"the tasks of {family.name} are asked for by examples: use --examples FILE, not --code")
    width = family.codes.shape[1]
    if len(text) != width or set(text) - {"0", "1"}:
        raise NndiffError(f"--code must be {width} binary digits, one per class (got {text!r})")
    code = torch.tensor([int(c) for c in text])
    if int(code.sum()) in (0, width):
        raise NndiffError(f"--code {text} puts every class on one side: that is not a task")
    return code


def code_text(code: torch.Tensor) -> str:
    if ((code == 0) | (code == 1)).all():
        return "".join(str(int(c)) for c in code)
    return ",".join(f"{float(c):.4g}" for c in code)
