"""A `Normalizer` standardizes vectors per layer or per element; its statistics travel with the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from nndiff.errors import NndiffError
from nndiff.params.layout import Layout
from nndiff.params.rows import row_blocks

NORMALIZATIONS = ("element", "layer")


@dataclass
class Normalizer:
    """x_norm = (x - mean) / std with per-element [D] statistics (per-layer ones are broadcast)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(
        cls, data: torch.Tensor, layout: Layout, mode: str = "element", rows: torch.Tensor | None = None
    ) -> "Normalizer":
        """Statistics of `data` [K, D] over its `rows` (default: all), per element or per layer, read a
        block of rows at a time (no copy of the selected rows is made)."""
        if mode not in NORMALIZATIONS:
            raise NndiffError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
        rows = torch.arange(len(data)) if rows is None else rows
        mean, var = _moments(data, rows)
        if mode == "layer":
            for e in layout.entries:
                part = slice(e.offset, e.offset + e.numel)
                layer_mean = mean[part].mean()
                var[part] = (var[part] + (mean[part] - layer_mean) ** 2).mean()
                mean[part] = layer_mean
        mean, std = mean.float(), var.sqrt().float()
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


def _moments(data: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and (population) variance over `rows` of `data`, in float64, two passes over
    blocks of rows."""
    blocks = [rows[b] for b in row_blocks(len(rows), data.shape[1])]
    total = torch.zeros(data.shape[1], dtype=torch.float64)
    for b in blocks:
        total += data[b].double().sum(0)
    mean = total / max(len(rows), 1)
    sq = torch.zeros_like(mean)
    for b in blocks:
        sq += (data[b].double() - mean).pow(2).sum(0)
    return mean, sq / max(len(rows), 1)
