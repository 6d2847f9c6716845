"""Sets of parameter vectors as [N, D] matrices: memory-bounded blocks, finite rows, fingerprints."""

from __future__ import annotations

import torch

# Passes over a whole zoo go through it in blocks of rows of about this many values (just under
# 32 MiB of float32), so their temporaries stay a fixed size however large the zoo (a 1M-parameter
# zoo of 200 snapshots is 800 MB; one float64 copy of it would be 1.6 GB). Below 32 MiB, glibc can
# serve them from memory it keeps for reuse (runtime.reuse_freed_memory) rather than a fresh mapping.
BLOCK_VALUES = 2**23 - 2**12


def row_blocks(count: int, dim: int) -> list[slice]:
    """Slices of `count` rows of `dim` values, each block at most BLOCK_VALUES values (at least one row)."""
    step = max(1, BLOCK_VALUES // max(dim, 1))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def column_blocks(rows: int, dim: int) -> list[slice]:
    """Slices of `dim` columns of `rows` rows, each block at most BLOCK_VALUES values (at least one column)."""
    step = max(1, BLOCK_VALUES // max(rows, 1))
    return [slice(i, min(i + step, dim)) for i in range(0, dim, step)]


def rows_where(vectors: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """vectors[keep], without a copy when every row is kept (at 1M parameters a zoo's copy is 800 MB)."""
    return vectors if bool(keep.all()) else vectors[keep]


def finite_rows(vectors: torch.Tensor) -> torch.Tensor:
    """[N] bool: which parameter vectors hold no NaN or Inf (the others cannot be evaluated)."""
    if vectors.ndim != 2:  # one vector [D], or rows of several dimensions each
        vectors = vectors.reshape(1, -1) if vectors.ndim < 2 else vectors.flatten(1)
    blocks = row_blocks(len(vectors), vectors.shape[1])
    return torch.cat([torch.isfinite(vectors[b]).all(1) for b in blocks]) if blocks else torch.ones(0, dtype=torch.bool)


def fingerprint(vectors: torch.Tensor) -> str:
    """SHA-256 of a set of parameter vectors: metrics.json and the report record which set they describe."""
    import hashlib

    digest = hashlib.sha256()
    rows = vectors.detach().reshape(-1, 1) if vectors.ndim < 2 else vectors.detach().flatten(1)
    for block in row_blocks(len(rows), rows.shape[1]):  # the same bytes as hashing all at once, without a copy
        digest.update(rows[block].float().contiguous().cpu().numpy())
    return digest.hexdigest()
