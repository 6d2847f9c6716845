"""The parameter autoencoder's first and last layers: the parameter vector as a sequence of
feature vectors, one per value (small subsets) or one per token of a layer's values (large ones),
and back (autoencoder.py explains why these two layers are untied per position).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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
