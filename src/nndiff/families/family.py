"""A task family: many related classification tasks over one dataset, each with a descriptor the
generator is conditioned on, sharing one frozen trunk whose head is generated.

The built-in label-space family, `mnist1d-binary`, cuts binary tasks from MNIST-1D's ten classes:
each task assigns every class to "positive" or "negative" (a 10-bit code, the descriptor), which
gives 2^10 - 2 = 1,022 tasks (all-zero and all-one codes are no task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nndiff.errors import NndiffError
from nndiff.tasks import get_task


@dataclass
class Family:
    name: str
    description: str
    base_task: str  # the task whose model is the trunk, trained once on all its classes
    head: str  # the module whose input the trunk's features are and which is generated
    codes: torch.Tensor  # [T, C] one descriptor per task
    relabel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (codes [T, C], labels [N]) -> [T, N]

    @property
    def classes(self) -> int:
        return 2


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


def _binary_labels(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return codes[:, labels]


def _binary_family(name: str, data: str, base_task: str, values: str) -> Family:
    return Family(
        name=name,
        description=f"1,022 binary tasks over {data}'s 10 classes (descriptor: which classes are positive), "
        f"a generated 2-way head ({values} values) on the frozen {base_task} trunk",
        base_task=base_task,
        head="head",
        codes=binary_codes(10),
        relabel=_binary_labels,
    )


def mnist1d_binary() -> Family:
    return _binary_family("mnist1d-binary", "MNIST-1D", "mnist1d-cnn", "130")


def digits_binary() -> Family:  # small enough for quick checks
    return _binary_family("digits-binary", "scikit-learn's 8x8 digits", "digits-cnn", "1,026")


FAMILIES: dict[str, Callable[[], Family]] = {"mnist1d-binary": mnist1d_binary, "digits-binary": digits_binary}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise NndiffError(f"unknown family {name!r}; built-in families: {', '.join(FAMILIES)}")
    family = FAMILIES[name]()
    get_task(family.base_task)  # the trunk's task exists
    return family


def parse_code(text: str, family: Family) -> torch.Tensor:
    """A task's code from its text ('0110100101'), checked: one binary digit per class, both sides used."""
    width = family.codes.shape[1]
    if len(text) != width or set(text) - {"0", "1"}:
        raise NndiffError(f"--code must be {width} binary digits, one per class (got {text!r})")
    code = torch.tensor([int(c) for c in text])
    if int(code.sum()) in (0, width):
        raise NndiffError(f"--code {text} puts every class on one side: that is not a task")
    return code


def code_text(code: torch.Tensor) -> str:
    return "".join(str(int(c)) for c in code)
