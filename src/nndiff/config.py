"""The training configuration: typed dataclasses with defaults in code, read from and written to YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .autoencoder import AutoencoderConfig
from .denoiser import DenoiserConfig
from .diffusion import CONDITIONS, DiffusionConfig
from .errors import NndiffError
from .params import NORMALIZATIONS


@dataclass
class TrainConfig:
    normalization: str = "element"  # parameter standardization: "element" or "layer"
    seed: int = 0
    device: str = "auto"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def validate(self) -> "TrainConfig":
        if self.normalization not in NORMALIZATIONS:
            raise NndiffError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        for name, value in [("autoencoder.steps", self.autoencoder.steps), ("diffusion.steps", self.diffusion.steps),
                            ("autoencoder.batch_size", self.autoencoder.batch_size), ("diffusion.batch_size", self.diffusion.batch_size)]:
            if value < 1:
                raise NndiffError(f"{name} must be at least 1 (got {value})")
        if self.autoencoder.token_size < 0:
            raise NndiffError(f"autoencoder.token_size must be 0 (automatic) or positive (got {self.autoencoder.token_size})")
        if self.diffusion.condition not in CONDITIONS:
            raise NndiffError(f"unknown diffusion.condition {self.diffusion.condition!r}; choose one of {', '.join(CONDITIONS)}")
        if not 0.0 <= self.diffusion.condition_dropout < 1.0:
            raise NndiffError(f"diffusion.condition_dropout must be in [0, 1) (got {self.diffusion.condition_dropout})")
        if self.denoiser.channels % 8 or self.autoencoder.channels < 1:
            raise NndiffError("denoiser.channels must be a multiple of 8 (GroupNorm with 8 groups)")
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
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(default, (int, float)) and isinstance(value, str)
        ) or (isinstance(default, int) and isinstance(value, float) and not value.is_integer()):
            raise NndiffError(f"{where}.{name} = {value!r} has the wrong type; expected {type(default).__name__}")
        else:
            kwargs[name] = type(default)(value)
    return cls(**kwargs)
