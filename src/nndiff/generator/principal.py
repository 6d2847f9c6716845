"""The principal-component codec: the autoencoder's place taken by a PCA of the normalized zoo
(`--ae-kind pca`), so the diffusion model learns the snapshots' coordinates along their principal
directions directly, with no network in between that could lose part of their variation.

Encoding is the projection onto the first `count` principal directions of the training snapshots
(their normalized-space mean removed); decoding is the sum of those directions weighted by the
coordinates, plus the mean. With every direction the snapshots span (K - 1 or D at most, the default)
it reproduces every training snapshot exactly. The coordinates are the latent [1, count] the
diffusion model learns; they are standardized per coordinate like any latent (train.py), so each
direction is learned at unit scale whatever its share of the variance.
"""

from __future__ import annotations

import torch
from torch import nn

from nndiff.generator.registry import register_codec
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import column_blocks, row_blocks


@register_codec("pca")
class PrincipalCodec(nn.Module):
    def __init__(self, dim: int, count: int):
        super().__init__()
        if not (isinstance(dim, int) and isinstance(count, int) and dim >= 1 and count >= 1):
            raise ValueError(f"a principal-component codec keeps 1 or more directions of 1 or more values, "
                             f"not {count!r} of {dim!r}")
        self.dim, self.sizes = dim, [dim]
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.empty(count, dim))  # filled by fit or load_state_dict

    @classmethod
    def fit(cls, x: torch.Tensor, normalizer: Normalizer, count: int = 0,
            rows: torch.Tensor | None = None) -> tuple["PrincipalCodec", float]:
        """The codec of the rows of `x` (raw parameters, normalized by `normalizer` a block of columns
        at a time; `rows`: only these) keeping `count` directions (0: all the rows span), and the share
        of their variance it keeps."""
        n = len(x) if rows is None else len(rows)
        span = max(1, min(n - 1, x.shape[1]))  # K rows span K - 1 directions, D values at most D
        count = span if count == 0 else min(count, span)
        codec = cls(x.shape[1], count)
        mean, components, explained = principal_components(x, normalizer, count, rows)
        codec.mean = mean  # the buffers themselves, not copies (components are as large as K rows)
        codec.components = components
        return codec, float(explained.sum())

    def arguments(self) -> dict:
        return {"dim": self.dim, "count": len(self.components)}

    @classmethod
    def from_arguments(cls, args: dict) -> "PrincipalCodec":
        return cls(args["dim"], args["count"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (1, len(self.components))

    def encode(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """[B, D] normalized parameters -> [B, 1, count] coordinates (`noise` is the conv
        autoencoder's augmentation; a projection has nothing to learn from it)."""
        return ((x - self.mean) @ self.components.T).unsqueeze(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ self.components + self.mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.decode(self.encode(x[b])) for b in row_blocks(len(x), x.shape[1])])


def principal_components(
    reference: torch.Tensor, normalizer: Normalizer, count: int, which: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalized-space mean [D] of `reference`'s rows (`which`: only these, read a block of
    columns at a time), its first `count` principal directions [count, D] (unit length; zero rows
    where fewer rows leave one undefined) and each direction's share of the variance [count]."""
    which = torch.arange(len(reference)) if which is None else which
    rows, dim = len(which), reference.shape[1]
    mean = torch.zeros(dim)
    blocks = column_blocks(rows, dim)
    gram = torch.zeros(rows, rows, dtype=torch.float64)
    for b in blocks:
        part = normalizer.columns(b)(reference[which, b].float())
        mean[b] = part.mean(0)
        part = (part - mean[b]).double()
        gram += part @ part.T
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    top = torch.zeros(count, dtype=torch.float64)
    top[: min(count, rows)] = values[:count]
    total = float(values.sum())
    explained = top / total if total > 0 else torch.zeros(count, dtype=torch.float64)
    scale = torch.zeros(rows, count, dtype=torch.float64)
    defined = top > top[0] * 1e-12 if top[0] > 0 else torch.zeros(count, dtype=torch.bool)
    n = int(defined.sum())
    scale[:, :n] = vectors[:, :n] / top[:n].sqrt()
    components = torch.zeros(count, dim)
    for b in blocks:
        part = (normalizer.columns(b)(reference[which, b].float()) - mean[b]).double()
        components[:, b] = (scale.T @ part).float()
    return mean, components, explained.float()
