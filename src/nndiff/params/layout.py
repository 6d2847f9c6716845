"""Which parameters are generated, and how they become one flat vector and back.

A `Layout` is the ordered list of selected parameters (name, shape, offset into the vector).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from nndiff.errors import NndiffError


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...]

    @classmethod
    def select(cls, model: nn.Module, patterns: Sequence[str]) -> "Layout":
        """The parameters whose names match any glob pattern, in the model's own order."""
        names = [n for n, _ in model.named_parameters()]
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not chosen:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise NndiffError(f"--select {' '.join(patterns)!s} matches no parameter; the model has: {shown}")
        params = dict(model.named_parameters())
        return cls.from_shapes([(n, tuple(params[n].shape)) for n in chosen])

    @classmethod
    def from_shapes(cls, shapes: Sequence[tuple[str, Sequence[int]]]) -> "Layout":
        entries, offset, seen = [], 0, set()
        for name, shape in shapes:
            if name in seen:
                raise NndiffError(f"parameter {name!r} appears twice in the layout; each parameter is generated once")
            seen.add(name)
            e = Entry(name, tuple(int(s) for s in shape), offset)
            if any(s < 0 for s in e.shape):
                raise NndiffError(f"parameter {name!r} has a negative dimension in its shape {list(e.shape)}")
            entries.append(e)
            offset += e.numel
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        return sum(e.numel for e in self.entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def to_json(self) -> list[dict]:
        return [{"name": e.name, "shape": list(e.shape), "offset": e.offset} for e in self.entries]

    @classmethod
    def from_json(cls, items: Sequence[Mapping]) -> "Layout":
        try:
            layout = cls.from_shapes([(str(i["name"]), list(i["shape"])) for i in items])
            offsets = [int(i["offset"]) for i in items]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise NndiffError(f"malformed parameter layout in manifest ({e!r})") from None
        if offsets != [e.offset for e in layout.entries]:
            raise NndiffError("malformed parameter layout in manifest: offsets are not contiguous")
        return layout

    def check_model(self, model: nn.Module) -> None:
        """Raise a clear error unless every entry exists in `model` with the same shape."""
        params = dict(model.named_parameters())
        for e in self.entries:
            if e.name not in params:
                raise NndiffError(
                    f"the zoo's parameter {e.name!r} does not exist in this model; was the zoo collected for another "
                    "task?"
                )
            if tuple(params[e.name].shape) != e.shape:
                raise NndiffError(
                    f"the zoo's parameter {e.name!r} has shape {list(e.shape)} but the model's has "
                    f"{list(params[e.name].shape)}; was the zoo collected for another model?"
                )

    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One [D] float32 vector from a state_dict (or named_parameters) holding the entries."""
        return torch.cat([state[e.name].detach().reshape(-1).float() for e in self.entries])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A state_dict of the entries from one [D] vector (views into it)."""
        if vector.shape != (self.size,):
            raise NndiffError(f"parameter vector has shape {list(vector.shape)}, expected [{self.size}]")
        return {e.name: vector[e.offset : e.offset + e.numel].view(e.shape) for e in self.entries}

    @torch.no_grad()
    def write(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Copy a [D] vector into the model's selected parameters in place."""
        params = dict(model.named_parameters())
        for name, value in self.unflatten(vector).items():
            params[name].copy_(value)


def describe(model: nn.Module, patterns: Sequence[str]) -> str:
    """A table of the model's parameters, marking those the glob patterns select."""
    rows = [
        (name, "x".join(map(str, p.shape)) or "scalar", p.numel(), any(fnmatch.fnmatchcase(name, q) for q in patterns))
        for name, p in model.named_parameters()
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'parameter'.ljust(width)}  {'shape':>14}  {'count':>10}  selected"]
    lines += [f"{n.ljust(width)}  {s:>14}  {c:>10,}  {'*' if sel else ''}" for n, s, c, sel in rows]
    chosen = sum(c for _, _, c, sel in rows if sel)
    total = sum(c for _, _, c, _ in rows)
    lines.append(
        f"\n{total:,} parameters in {len(rows)} tensors; --select {' '.join(patterns)} matches "
        f"{sum(sel for *_, sel in rows)} tensors, {chosen:,} values ({100 * chosen / max(total, 1):.2f}%)"
    )
    return "\n".join(lines)
