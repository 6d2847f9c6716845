"""The parameter autoencoder: a 1-D conv encoder/decoder over the normalized parameter vector.

Convolutions share weights across positions, but position i of a parameter vector means something
different from position j. So the first encoder layer and the last decoder layer are untied per
position (each position has its own C-channel embedding / read-out), which costs O(C·D) and keeps
memory linear in D. The latent is standardized per sample (zero mean, unit variance over all its
entries) so the latent noise augmentation has a fixed meaning: noise 0.1 is a tenth of the
latent's own scale, and the encoder cannot escape it by growing its output.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nndiff.config.options import read_settings
from nndiff.config.settings import auto_steps, setting
from nndiff.generator.registry import register_codec
from nndiff.generator.tokens import PerPositionIn, PerPositionOut, auto_token_size, layer_spans
from nndiff.params.rows import row_blocks

KINDS = ("auto", "conv", "pca")  # what encodes parameters into latents: chosen (training/codec.py), the network
# below, or principal.py's PCA


@dataclass
class AutoencoderConfig:
    kind: str = setting(
        "auto",
        "what maps parameters to the diffusion model's latents: conv (the parameter autoencoder), pca (their "
        "coordinates along the zoo's principal directions; nothing to train) or auto: pca when it reconstructs "
        "the held-back snapshots within the health check's lines (under 25% of their variation missed, at most "
        "0.5 points of validation accuracy lost), else whichever of the two misses less of it",
        choices=KINDS,
        flag="--ae-kind",
    )
    components: int = setting(
        0,
        "--ae-kind pca: principal directions kept (0: every direction the snapshots span, at most K - 1 and at "
        "most one per parameter)",
        low=0,
        integer=True,
        flag="--ae-components",
    )
    channels: int = setting(32, "autoencoder channels", low=1, integer=True)
    depth: int = setting(
        4, "stride-2 stages: the latent is 2**depth times shorter than the tokens", low=0, high=16, integer=True
    )
    latent_channels: int = setting(4, "channels of the latent", low=1, integer=True)
    # The convolutions run on D / token_size positions. 1 gives every value weights of its own
    # (small subsets); larger tokens share one embedding per token plus a position embedding, which
    # keeps time and memory linear for large subsets.
    token_size: int = setting(
        0,
        "values per token; 0: automatic (1 up to 4,096 values, else the power of two that leaves about 1,024 tokens)",
        low=0,
        integer=True,
    )
    input_noise: float = setting(0.001, "autoencoder input noise augmentation", low=0, flag="--input-noise")
    latent_noise: float = setting(0.1, "autoencoder latent noise augmentation", low=0, flag="--latent-noise")
    steps: int | str = auto_steps(
        "autoencoder training steps, or 'auto': until its reconstructions of held-back snapshots keep their "
        "validation accuracy, at most autoencoder.max_steps",
        "--ae-steps",
    )
    max_steps: int = setting(3000, "the most steps 'auto' trains", low=1, integer=True)
    check_every: int = setting(250, "steps between validation checks of 'auto'", low=1, integer=True)
    batch_size: int = setting(64, "autoencoder batch size", low=1, integer=True)
    lr: float = setting(1e-3, "autoencoder learning rate (AdamW, cosine schedule)", low=0, low_open=True)
    output_weight: float = setting(
        0.0,
        "weight of a functional loss: each reconstruction also scored by the network's logits on 256 "
        "training inputs against its snapshot's (0: parameter error alone)",
        low=0,
        flag="--ae-output-weight",
    )


@register_codec("conv")
class Autoencoder(nn.Module):
    """`sizes`: the number of values of each layer, in order (default: one layer of `dim`); with
    tokens of more than one value, each layer gets tokens of its own (layer_spans)."""

    def __init__(self, dim: int, config: AutoencoderConfig, sizes: list[int] | None = None):
        super().__init__()
        self.dim = dim
        self.config = config
        self.token = config.token_size or auto_token_size(dim)
        self.sizes = list(sizes) if sizes is not None else [dim]
        if sum(self.sizes) != dim or min(self.sizes, default=1) < 1:
            raise ValueError(f"layer sizes {self.sizes} do not add up to {dim} values")
        spans = layer_spans(self.sizes, self.token) if self.token > 1 else None
        tokens = sum(math.ceil(n / self.token) for n in self.sizes)
        self.padded = math.ceil(tokens / 2**config.depth) * 2**config.depth * self.token
        c, token = config.channels, self.token
        down = []
        for _ in range(config.depth):
            down += [nn.Conv1d(c, c, 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = nn.Sequential(
            PerPositionIn(c, self.padded, token, spans),
            nn.SiLU(),
            nn.Conv1d(c, c, 3, padding=1),
            nn.SiLU(),
            *down,
            nn.Conv1d(c, config.latent_channels, 3, padding=1),
        )
        up = []
        for _ in range(config.depth):
            up += [nn.ConvTranspose1d(c, c, 4, stride=2, padding=1), nn.SiLU()]
        self.decoder = nn.Sequential(
            nn.Conv1d(config.latent_channels, c, 3, padding=1),
            nn.SiLU(),
            *up,
            nn.Conv1d(c, c, 3, padding=1),
            nn.SiLU(),
            PerPositionOut(c, self.padded, token, spans),
        )

    def arguments(self) -> dict:
        return {"dim": self.dim, "config": dataclasses.asdict(self.config), "sizes": self.sizes}

    @classmethod
    def from_arguments(cls, args: dict) -> "Autoencoder":
        return cls(int(args["dim"]), read_settings(AutoencoderConfig, args["config"], "its config"), args["sizes"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.config.latent_channels, self.padded // (2**self.config.depth * self.token))

    def encode(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """[B, D] normalized parameters -> [B, latent_channels, L] latents, standardized per sample;
        `noise`: the std of the input noise augmentation."""
        first = self.encoder[0]
        if self.token == 1:
            if noise:
                x = x + noise * torch.randn_like(x)
            h = first(F.pad(x, (0, self.padded - self.dim)))
        else:
            h = first(x, noise)
        z = self.encoder[1:](h)
        return F.layer_norm(z, z.shape[1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder[-1](self.decoder[:-1](z), self.dim)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions of [B, D] normalized rows without noise, a block of rows at a time, so the
        activations stay a fixed size whatever B and D (64 rows at 1M values would take gigabytes)."""
        return torch.cat([self.decode(self.encode(x[b])) for b in row_blocks(len(x), x.shape[1])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction with the noise augmentation of p-diff (active in training mode only)."""
        z = self.encode(x, self.config.input_noise if self.training else 0.0)
        if self.training:
            z = z + self.config.latent_noise * torch.randn_like(z)
        return self.decode(z)
