"""The latent denoiser: a small 1-D conv UNet (one down/up level) with a per-sample timestep embedding.

It only predicts the noise; the schedule, loss and samplers live in diffusion.py. A conditional
denoiser also embeds a condition vector (e.g. a snapshot's standardized validation accuracy) and
adds it to the timestep embedding; a learned "no condition" embedding stands in where the
condition is dropped, which is what classifier-free guidance contrasts against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nndiff.config.settings import setting


@dataclass
class DenoiserConfig:
    channels: int = setting(32, "denoiser channels, a multiple of 8 (GroupNorm with 8 groups)", low=8, integer=True)
    time_dim: int = setting(128, "size of the timestep embedding", low=2, integer=True)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of a [B] tensor of timesteps (one per sample) -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * c_out)  # per-sample scale and shift from the timestep
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Denoiser(nn.Module):
    def __init__(self, latent_shape: tuple[int, int], config: DenoiserConfig, cond_dim: int = 0):
        super().__init__()
        channels_in, length = latent_shape
        c, td = config.channels, config.time_dim
        self.time_dim, self.cond_dim = td, cond_dim
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        if cond_dim:
            self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, td), nn.SiLU(), nn.Linear(td, td))
            self.null_cond = nn.Parameter(torch.zeros(td))
        self.inp = nn.Conv1d(channels_in, c, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, c, length))  # latent positions mean different things
        self.enc = nn.ModuleList([ResBlock(c, c, td), ResBlock(c, c, td)])
        self.down = nn.Conv1d(c, 2 * c, 3, stride=2, padding=1)
        self.mid = nn.ModuleList([ResBlock(2 * c, 2 * c, td), ResBlock(2 * c, 2 * c, td)])
        self.dec = nn.ModuleList([ResBlock(3 * c, c, td), ResBlock(c, c, td)])
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv1d(c, channels_in, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start as "predict zero noise": a stable first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, C, L] noisy latents; t: [B] timesteps, one per sample (or a scalar for all).

        Conditional denoisers: cond [B, cond_dim] (None: unconditional for the whole batch); keep
        [B] bool, False where the condition is dropped (default: kept wherever it is given).
        """
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        if self.cond_dim:
            null = self.null_cond.expand(x.shape[0], -1)
            if cond is None:
                temb = temb + null
            else:
                emb = self.cond_mlp(cond)
                temb = temb + (emb if keep is None else torch.where(keep[:, None], emb, null))
        h = self.inp(x) + self.pos
        for block in self.enc:
            h = block(h, temb)
        skip = h
        h = self.down(h)
        for block in self.mid:
            h = block(h, temb)
        h = F.interpolate(h, size=skip.shape[-1], mode="nearest")
        h = torch.cat([h, skip], dim=1)
        for block in self.dec:
            h = block(h, temb)
        return self.out(h)
