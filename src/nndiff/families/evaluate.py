"""Every method's models for the held-out tasks, evaluated alike, with intervals over tasks and
test samples.

A method gives m heads for each held-out task ([T, m, D]); its per-task accuracy is the mean over
its heads. Intervals are a paired bootstrap: each replicate draws tasks and test samples with
replacement, the same draws for every method, so differences between methods carry both sources of
uncertainty and no more (evaluation/uncertainty.py).
"""

from __future__ import annotations

import math

import torch

from nndiff.evaluation.uncertainty import REPLICATES, estimate, interval, task_sample_replicates
from nndiff.families.heads import correct

SGD_STEPS = (1, 10, 100, 1000)


def per_sample(heads: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[T, N]: the share of a task's m heads ([T, m, D]) that get each test example right (features
    x [N, F] shared, or [T, N, F] each task's own)."""
    t, m, d = heads.shape
    if x.ndim == 3:
        return torch.stack([correct(heads[i], x[i].expand(m, -1, -1), labels[i].expand(m, -1), classes).float().mean(0)
                            for i in range(t)])
    right = correct(heads.reshape(t * m, d), x, labels.repeat_interleave(m, 0), classes)
    return right.view(t, m, -1).float().mean(1)


def compare_methods(shares: dict[str, torch.Tensor], reference: str, replicates: int = REPLICATES,
                    seed: int = 0) -> dict:
    """Mean test accuracy of each method over tasks and samples with its 95% interval, and each
    method minus `reference` (paired)."""
    names = list(shares)
    c = torch.stack([shares[k] for k in names]).double()  # [M, T, N]
    point = c.mean((1, 2)) * 100
    draws = task_sample_replicates(c, replicates, seed)
    ref = names.index(reference)
    out = {
        name: {
            "test_acc_mean": float(point[i]),
            "ci95": interval(draws[:, i]),
            "minus_" + reference: estimate(point[i] - point[ref], draws[:, i] - draws[:, ref]),
            "per_task": (c[i].mean(1) * 100).tolist(),
        }
        for i, name in enumerate(names)
    }
    out["bootstrap"] = {"replicates": replicates, "seed": seed, "resampled": "held-out tasks and test samples"}
    return out


def steps_worth(sgd: dict[int, float], accuracy: float) -> float:
    """How many SGD steps from the common initialization reach `accuracy` (log-linear between the
    measured step counts; inf beyond the last, 0 below the first)."""
    points = sorted(sgd.items())
    if accuracy <= points[0][1]:
        return 0.0
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if accuracy <= a1:
            if a1 <= a0:
                return float(s1)
            frac = (accuracy - a0) / (a1 - a0)
            return float(math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0))))
    return math.inf
