"""The training configuration: typed dataclasses with defaults in code, read from and written to YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .autoencoder import AutoencoderConfig
from .checks import SEED_MAX, bounded, check_fields, from_yaml
from .denoiser import DenoiserConfig
from .diffusion import CONDITIONS, DiffusionConfig
from .errors import NndiffError
from .params import NORMALIZATIONS


@dataclass
class TrainConfig:
    normalization: str = "element"  # parameter standardization: "element" or "layer"
    seed: int = bounded(0, low=0, high=SEED_MAX, integer=True, flag="--seed")
    device: str = "auto"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def validate(self) -> "TrainConfig":
        """Every field in its declared range (see checks.py), then the choices and the relations between fields."""
        check_fields(self)
        if self.normalization not in NORMALIZATIONS:
            raise NndiffError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.diffusion.condition not in CONDITIONS:
            raise NndiffError(f"unknown diffusion.condition {self.diffusion.condition!r}; choose one of {', '.join(CONDITIONS)}")
        if self.denoiser.channels % 8:
            raise NndiffError(f"denoiser.channels must be a multiple of 8 (GroupNorm with 8 groups; got {self.denoiser.channels})")
        if self.diffusion.beta_start >= self.diffusion.beta_end:
            raise NndiffError(f"diffusion.beta_start must be below diffusion.beta_end (got {self.diffusion.beta_start:g} "
                              f">= {self.diffusion.beta_end:g})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        return _build(cls, data or {}, "config").validate()


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise NndiffError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NndiffError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        allowed = fields[name].metadata.get("range")
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif allowed and allowed.words and value in allowed.words:
            kwargs[name] = value  # e.g. steps: auto
        elif allowed and allowed.words:
            kwargs[name] = from_yaml(value, 0 if allowed.integer else 0.0, f"{where}.{name}")  # a number where a word may stand
        else:
            kwargs[name] = from_yaml(value, default, f"{where}.{name}")
    return cls(**kwargs)
