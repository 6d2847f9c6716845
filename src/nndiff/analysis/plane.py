"""Principal components of a zoo found without a copy of it: the plane the PCA map draws every group
on, and the components the principal-component codec keeps (principal.py).

With K snapshots of D parameters (K small, D up to millions) the components come from the K x K
Gram matrix of the centred, normalized snapshots, summed a block of columns at a time: its top
eigenvectors u with eigenvalues s give the components X^T u / sqrt(s), which are exactly the
principal directions a PCA of X would find. Projecting a group goes through the same blocks.
"""

from __future__ import annotations

import torch

from nndiff.generator.principal import principal_components
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import column_blocks

COMPONENTS = 2


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
