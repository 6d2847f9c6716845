"""Principal components of a zoo found without a copy of it: the plane the PCA map draws every group
on, and the components the principal-component codec keeps (principal.py).

With K snapshots of D parameters (K small, D up to millions) the components come from the K x K
Gram matrix of the centred, normalized snapshots, summed a block of columns at a time: its top
eigenvectors u with eigenvalues s give the components X^T u / sqrt(s), which are exactly the
principal directions a PCA of X would find. Projecting a group goes through the same blocks.
"""

from __future__ import annotations

import torch

from .params import Normalizer, column_blocks

COMPONENTS = 2


def principal_components(
    reference: torch.Tensor, normalizer: Normalizer, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalized-space mean [D] of `reference`'s rows, its first `count` principal directions
    [count, D] (unit length; zero rows where fewer rows leave one undefined) and each direction's share
    of the variance [count]."""
    rows, dim = reference.shape
    mean = torch.zeros(dim)
    blocks = column_blocks(rows, dim)
    gram = torch.zeros(rows, rows, dtype=torch.float64)
    for b in blocks:
        part = normalizer.columns(b)(reference[:, b].float())
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
        part = (normalizer.columns(b)(reference[:, b].float()) - mean[b]).double()
        components[:, b] = (scale.T @ part).float()
    return mean, components, explained.float()


class Plane:
    """The first two principal components of `reference` in the space `normalizer` maps to."""

    def __init__(self, reference: torch.Tensor, normalizer: Normalizer):
        self.normalizer = normalizer
        self.mean, self.components, explained = principal_components(reference, normalizer, COMPONENTS)
        # Share of the reference's variance along each component (0 where fewer rows leave it undefined).
        self.explained = explained.tolist()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 2] coordinates of the rows of x (raw parameters) in the plane."""
        out = torch.zeros(len(x), COMPONENTS, dtype=torch.float64)
        for b in column_blocks(len(x) + COMPONENTS, x.shape[1]):
            part = self.normalizer.columns(b)(x[:, b].float()) - self.mean[b]
            out += part.double() @ self.components[:, b].double().T
        return out.float()
