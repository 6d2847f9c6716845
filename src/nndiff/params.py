"""Which parameters are generated, and how they become one flat vector and back.

A `Layout` is the ordered list of selected parameters (name, shape, offset into the vector).
A `Normalizer` standardizes vectors per layer or per element; its statistics travel with the run.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from .errors import NndiffError


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
        entries, offset = [], 0
        for name, shape in shapes:
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


NORMALIZATIONS = ("element", "layer")


@dataclass
class Normalizer:
    """x_norm = (x - mean) / std with per-element [D] statistics (per-layer ones are broadcast)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, data: torch.Tensor, layout: Layout, mode: str = "element") -> "Normalizer":
        if mode not in NORMALIZATIONS:
            raise NndiffError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if mode == "element":
            mean, std = data.mean(0), data.std(0, unbiased=False)
        else:
            mean, std = torch.empty(layout.size), torch.empty(layout.size)
            for e in layout.entries:
                block = data[:, e.offset : e.offset + e.numel]
                mean[e.offset : e.offset + e.numel] = block.mean()
                std[e.offset : e.offset + e.numel] = block.std(unbiased=False)
        # A coordinate that never changes (e.g. K = 1) must not divide by zero; a floor relative to
        # the typical spread keeps it near constant instead of blowing it up.
        floor = max(float(std.mean()) * 1e-3, 1e-8)
        return cls(mean, std.clamp_min(floor))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def columns(self, block: slice) -> "Normalizer":
        """The normalizer of a block of columns (to normalize a zoo a block at a time)."""
        return Normalizer(self.mean[block], self.std[block])

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + "mean": self.mean, prefix + "std": self.std}

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], prefix: str = "", size: int | None = None, source: str = "normalizer"
    ) -> "Normalizer":
        """Statistics as saved by state_dict(), checked: both present, 1-D floating point of one
        length (`size` if given), finite, positive spread."""
        mean, std = state.get(prefix + "mean"), state.get(prefix + "std")
        if mean is None or std is None:
            raise NndiffError(f"{source} lacks {prefix}mean or {prefix}std; retrain the run")
        for name, t in ((prefix + "mean", mean), (prefix + "std", std)):
            if (
                not t.is_floating_point()
                or t.ndim != 1
                or (size is not None and t.numel() != size)
                or t.shape != mean.shape
            ):
                raise NndiffError(
                    f"{source}: {name} has dtype {t.dtype} and shape {list(t.shape)}, expected floating "
                    f"point of shape [{size if size is not None else mean.numel()}]; retrain the run"
                )
            if not torch.isfinite(t).all():
                raise NndiffError(f"{source}: {name} holds NaN or Inf; retrain the run")
        if not (std > 0).all():
            raise NndiffError(f"{source}: {prefix}std must be positive; retrain the run")
        return cls(mean.float(), std.float())


# Passes over a whole zoo go through it in blocks of rows of about this many values (just under
# 32 MiB of float32), so their temporaries stay a fixed size however large the zoo (a 1M-parameter
# zoo of 200 snapshots is 800 MB; one float64 copy of it would be 1.6 GB). Below 32 MiB, glibc can
# serve them from memory it keeps for reuse (runtime.reuse_freed_memory) rather than a fresh mapping.
BLOCK_VALUES = 2**23 - 2**12


def row_blocks(count: int, dim: int) -> list[slice]:
    """Slices of `count` rows of `dim` values, each block at most BLOCK_VALUES values (at least one row)."""
    step = max(1, BLOCK_VALUES // max(dim, 1))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def column_blocks(rows: int, dim: int) -> list[slice]:
    """Slices of `dim` columns of `rows` rows, each block at most BLOCK_VALUES values (at least one column)."""
    step = max(1, BLOCK_VALUES // max(rows, 1))
    return [slice(i, min(i + step, dim)) for i in range(0, dim, step)]


def rows_where(vectors: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """vectors[keep], without a copy when every row is kept (at 1M parameters a zoo's copy is 800 MB)."""
    return vectors if bool(keep.all()) else vectors[keep]


def finite_rows(vectors: torch.Tensor) -> torch.Tensor:
    """[N] bool: which parameter vectors hold no NaN or Inf (the others cannot be evaluated)."""
    if vectors.ndim != 2:
        return torch.isfinite(vectors).all(1)
    blocks = row_blocks(len(vectors), vectors.shape[1])
    return torch.cat([torch.isfinite(vectors[b]).all(1) for b in blocks]) if blocks else torch.ones(0, dtype=torch.bool)
