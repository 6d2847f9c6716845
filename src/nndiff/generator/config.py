"""The training configuration: typed dataclasses with defaults in code, read from and written to
YAML (a run's config.yaml) through the same options as the command line (options.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nndiff.config.settings import SEED_MAX, check_fields, setting
from nndiff.errors import NndiffError
from nndiff.generator.autoencoder import AutoencoderConfig
from nndiff.generator.denoiser import DenoiserConfig
from nndiff.generator.diffusion import DiffusionConfig
from nndiff.params.normalizer import NORMALIZATIONS
from nndiff.runtime.device import DEVICES


@dataclass
class TrainConfig:
    normalization: str = setting("element", "parameter standardization", choices=NORMALIZATIONS, flag="--normalization")
    seed: int = setting(
        0, "random seed; the same seed gives the same result", low=0, high=SEED_MAX, integer=True, flag="--seed"
    )
    device: str = setting("auto", "where to compute (auto: CUDA if present)", choices=DEVICES, flag="--device")
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def validate(self) -> "TrainConfig":
        """Every field in its declared range or choices (see config/settings.py), then the relations between fields."""
        check_fields(self)
        if self.denoiser.channels % 8:
            raise NndiffError(
                f"denoiser.channels must be a multiple of 8 (GroupNorm with 8 groups; got {self.denoiser.channels})"
            )
        if self.autoencoder.kind == "pca" and self.autoencoder.output_weight > 0:
            raise NndiffError(
                "--ae-output-weight scores the conv autoencoder's reconstructions; --ae-kind pca trains none"
            )
        if self.diffusion.beta_start >= self.diffusion.beta_end:
            raise NndiffError(
                f"diffusion.beta_start must be below diffusion.beta_end (got {self.diffusion.beta_start:g} "
                f">= {self.diffusion.beta_end:g})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> "TrainConfig":
        from nndiff.config.options import read_settings

        return read_settings(cls, data or {}, where).validate()
