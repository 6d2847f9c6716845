"""The baselines every generated set is measured against: noised originals along a curve of amplitudes."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from nndiff.generator.conditional import AIMS, GUIDANCES, aim_name
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import column_blocks, row_blocks

# Noise amplitudes in normalized parameter space (units of the originals' per-element spread):
# from perturbations that change nothing to ones that clearly cost accuracy.
NOISE_AMPLITUDES = (0.25, 0.5, 1.0, 2.0, 4.0)


# When a group is less similar to the training snapshots than the largest amplitude's models, the
# curve is extended by doubling the amplitude (up to this one), so every group's gap is measured
# between two points of the curve rather than extrapolated.
MAX_AMPLITUDE = 64.0


SUBSET_SIZE = 16


LABELS = {
    "generated": "generated",
    "weight_average": f"weight average of {SUBSET_SIZE}",
    "gaussian": "per-dimension Gaussian",
    "heldout": "held-out originals",
    # conditional runs: sets aimed at the best snapshot's validation accuracy
    **{
        aim_name(a, w): f"generated, aimed at the {a} snapshot's val. accuracy, guidance {w:g}"
        for a in AIMS
        for w in GUIDANCES
    },
}


# Every baseline group is evaluated on the whole test set, which for large networks is most of the
# report's time (969k parameters: 100 models take about 30 s on 2 CPU cores). A group holds as many
# models as were generated, but no more than BASELINE_WORK multiply-adds allow (parameters x test
# samples per model, exact for MLPs), and never fewer than MIN_BASELINE: fewer models widen the
# groups' intervals, which the bootstrap over models reports.
BASELINE_WORK = 5e11


MIN_BASELINE = 32


def baseline_count(generated: int, dim: int, test_samples: int) -> int:
    affordable = int(BASELINE_WORK // max(dim * test_samples, 1))
    return min(generated, max(MIN_BASELINE, affordable))


def noise_name(amplitude: float) -> str:
    return f"noise_{amplitude:g}"


def noise_baseline(
    originals: torch.Tensor, normalizer: Normalizer, amplitude: float, n: int, *, seed: int = 0
) -> torch.Tensor:
    """n random originals plus Gaussian noise of `amplitude` in normalized space (its own random
    stream per amplitude, so adding an amplitude changes no other group). Noise of a in normalized
    space is noise of a * std in raw space, so it is added there, a block of rows at a time."""
    g = torch.Generator().manual_seed(seed * 100_003 + round(amplitude * 1000))
    idx = torch.randint(len(originals), (n,), generator=g)
    out = torch.randn(n, originals.shape[1], generator=g)
    for b in row_blocks(n, originals.shape[1]):
        out[b].mul_(amplitude * normalizer.std).add_(originals[idx[b]])
    return out


def make_baselines(
    originals: torch.Tensor,
    heldout: torch.Tensor,
    normalizer: Normalizer,
    n: int,
    *,
    seed: int = 0,
    amplitudes=NOISE_AMPLITUDES,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Per baseline, what makes its [n, D] parameter vectors from the training snapshots only (and
    the held-out ones): each is built when it is measured, so only one baseline is in memory at a time."""
    out: dict[str, Callable[[], torch.Tensor]] = {
        noise_name(a): functools.partial(noise_baseline, originals, normalizer, a, n, seed=seed) for a in amplitudes
    }
    g = torch.Generator().manual_seed(seed)
    k, d = originals.shape
    m = min(SUBSET_SIZE, k)
    subsets = torch.stack([torch.randperm(k, generator=g)[:m] for _ in range(n)])
    out["weight_average"] = lambda: torch.stack([originals[s].mean(0) for s in subsets])

    def gaussian() -> torch.Tensor:
        x = torch.randn(n, d, generator=g)
        for b in column_blocks(k, d):
            block = originals[:, b]
            x[:, b].mul_(block.std(0, unbiased=k > 1)).add_(block.mean(0))
        return x

    out["gaussian"] = gaussian
    if len(heldout):
        out["heldout"] = lambda: heldout[:n]
    return out
