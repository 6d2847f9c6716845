"""The parameter autoencoder: a 1-D conv encoder/decoder over the normalized parameter vector.

Convolutions share weights across positions, but position i of a parameter vector means something
different from position j. So the first encoder layer and the last decoder layer are untied per
position (each position has its own C-channel embedding / read-out), which costs O(C·D) and keeps
memory linear in D. The latent is standardized per sample (zero mean, unit variance over all its
entries) so the latent noise augmentation has a fixed meaning: noise 0.1 is a tenth of the
latent's own scale, and the encoder cannot escape it by growing its output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import auto_steps, setting
from .params import row_blocks


@dataclass
class AutoencoderConfig:
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


Span = tuple[int, int, int]  # a layer's (first value, number of values, first token)


def layer_spans(sizes: list[int], token: int) -> list[Span]:
    """Where each layer lies among the values and among the tokens: a layer of n values gets
    ceil(n / token) tokens of its own (its last one padded), so no token mixes two layers."""
    spans, offset, first = [], 0, 0
    for n in sizes:
        spans.append((offset, n, first))
        offset, first = offset + n, first + math.ceil(n / token)
    return spans


class PerPositionIn(nn.Module):
    """The first encoder layer: the parameter vector as a sequence of `channels`-dim features.

    token = 1: h[b, c, p] = x[b, p] * w[c, p] + bias[c, p], weights of its own for every value.
    token > 1: each layer (`spans`; default: the whole vector as one) is cut into tokens of `token`
    values, each goes through one shared linear map, plus a learned embedding of the token's position,
    h[b, :, n] = W x[b, n, :] + pos[:, n] (as a ViT embeds patches), so the layer's size grows with the
    number of tokens only. A token holds values of one layer only, so its position embedding tells the
    layer too. Positions after the last token (up to `length`) are padding: W 0 + pos.
    """

    def __init__(self, channels: int, length: int, token: int = 1, spans: list[Span] | None = None):
        super().__init__()
        self.token, self.spans = token, spans
        if token == 1:
            self.weight = nn.Parameter(torch.randn(channels, length))
        else:
            self.weight = nn.Parameter(torch.randn(channels, token) / math.sqrt(token))
        self.bias = nn.Parameter(torch.zeros(channels, length // token))

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """token = 1: `x` padded to the layer's length. token > 1: `x` as it is, [B, D]: each layer's
        whole tokens are read in place and only its last one is padded, and input noise of std `noise`
        is drawn after the linear map, where W(x + noise·e) is W x plus Gaussian noise of covariance
        noise²·W Wᵀ: [B, N, C] draws instead of B x D (the largest cost of a step at 1M values)."""
        if self.token == 1:
            return x.unsqueeze(1) * self.weight + self.bias
        batch, t, n = x.shape[0], self.token, self.bias.shape[1]
        parts, filled = [], 0
        for offset, size, _ in self.spans or [(0, x.shape[1], 0)]:
            whole = size // t
            if whole:  # a batched product reads the tokens in place (a plain matmul would copy them first)
                tokens = x[:, offset : offset + whole * t].reshape(batch, whole, t)
                parts.append(torch.bmm(tokens, self.weight.T.expand(batch, t, -1)))
            if size > whole * t:
                tail = F.pad(x[:, offset + whole * t : offset + size], (0, (whole + 1) * t - size))
                parts.append(tail.unsqueeze(1) @ self.weight.T)
            filled += math.ceil(size / t)
        if filled < n:
            parts.append(x.new_zeros(batch, n - filled, len(self.weight)))
        h = torch.cat(parts, 1) if len(parts) > 1 else parts[0]  # [B, N, C]
        if noise:
            cov = self.weight @ self.weight.T
            jitter = 1e-6 * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
            h = h + noise * (
                torch.randn(h.shape, dtype=h.dtype, device=h.device) @ torch.linalg.cholesky(cov + jitter).T
            )
        return h.transpose(1, 2) + self.bias


class PerPositionOut(nn.Module):
    """The last decoder layer, the mirror of PerPositionIn.

    token = 1: y[b, p] = sum_c h[b, c, p] * w[c, p] + bias[p], a read-out of its own per value.
    token > 1: a shared linear read-out from each token's features to its `token` values, plus a
    bias of its own for every value (bias[n * token + i]: value i of token n).
    """

    def __init__(self, channels: int, length: int, token: int = 1, spans: list[Span] | None = None):
        super().__init__()
        self.token, self.spans = token, spans
        shape = (channels, length) if token == 1 else (token, channels)
        self.weight = nn.Parameter(torch.randn(shape) / math.sqrt(channels))
        self.bias = nn.Parameter(torch.zeros(length))

    def forward(self, h: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """The values of every layer, [B, D] (without spans: the first `dim` values, all by default).
        token > 1: the bias is added inside the matrix product of each layer's whole tokens and the
        padding of its last is never made, so no [B, padded] tensor is written (or zero-filled in the
        backward pass)."""
        dim = len(self.bias) if dim is None else dim
        if self.token == 1:
            return ((h * self.weight).sum(1) + self.bias)[:, :dim]
        batch, t = h.shape[0], self.token
        features = h.transpose(1, 2)  # [B, N, C]
        spans = self.spans or [(0, dim, 0)]
        # The bias is split once into each layer's whole tokens, its tail and the padding between: a
        # slice per layer would make autograd zero-fill a gradient as long as the whole bias for each.
        cuts, end = [], 0
        for _, size, first in spans:
            whole = size // t
            cuts += [first * t - end, whole * t, size - whole * t]
            end = first * t + size
        pieces = iter(self.bias.split(cuts + [len(self.bias) - end]))
        parts = []
        for _, size, first in spans:
            whole = size // t
            _, bias, tail_bias = next(pieces), next(pieces), next(pieces)
            if whole:
                bias = bias.view(1, whole, t).expand(batch, whole, t)
                block = features[:, first : first + whole]
                parts.append(torch.baddbmm(bias, block, self.weight.T.expand(batch, -1, -1)).flatten(1))
            if size > whole * t:
                parts.append((features[:, first + whole] @ self.weight.T)[:, : size - whole * t] + tail_bias)
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def auto_token_size(dim: int) -> int:
    if dim <= 4096:
        return 1
    return 2 ** math.ceil(math.log2(dim / 1024))


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
