"""How sure are we? A paired bootstrap over test samples and over models, and words for what it says.

Every group's numbers (mean test accuracy, mean max-similarity, gap to the noise curve) depend on
which test samples happen to be in the test set and on which models happen to be in the group.
One bootstrap replicate redraws both: one resampled test set, shared by every group (so the
comparison between two groups is paired: a test sample that is hard for one is hard for the other),
and one resampling of each group's models. The 2.5th and 97.5th percentiles of a statistic over the
replicates are its 95% interval. A difference is called "better" or "worse" only when its interval
excludes zero.
"""

from __future__ import annotations

import numpy as np
import torch

REPLICATES = 1000


CONFIDENCE = 0.95


# The max-similarity of a model is re-computed in each replicate over its CANDIDATES most similar
# training snapshots on the full test set (not all K), which keeps the bootstrap to seconds. The
# maximum on a resampled test set is nearly always among them: measured on the default task (200
# replicates), a group's mean max-similarity differs from the exhaustive one by 0.0001 on average
# and 0.0008 at most, against an interval 0.027 wide.
CANDIDATES = 16


class Bootstrap:
    """B replicates of one test set of `n_samples` samples: the sample weights (how often each
    test sample is drawn) are shared by every statistic computed from this object."""

    def __init__(self, n_samples: int, replicates: int = REPLICATES, seed: int = 0):
        if n_samples < 1 or replicates < 1:
            raise ValueError("the bootstrap needs at least one test sample and one replicate")
        self.n, self.replicates = n_samples, replicates
        self.generator = torch.Generator().manual_seed(seed)
        idx = torch.randint(n_samples, (replicates, n_samples), generator=self.generator)
        self.weights = torch.zeros(replicates, n_samples).scatter_add_(1, idx, torch.ones(replicates, n_samples))

    def model_weights(self, n_models: int) -> torch.Tensor:
        """[B, N] resampling weights of a group's models (counts / N: each row sums to 1)."""
        idx = torch.randint(n_models, (self.replicates, n_models), generator=self.generator)
        ones = torch.ones(self.replicates, n_models, dtype=torch.float64)
        return torch.zeros(self.replicates, n_models, dtype=torch.float64).scatter_add_(1, idx, ones) / n_models

    def accuracy(self, correct: torch.Tensor) -> torch.Tensor:
        """[B, N] accuracy (percent) of each of N models, from its [N, n] correct/incorrect matrix."""
        return 100.0 * (self.weights.double() @ correct.double().T) / self.n

    def max_similarity(
        self, wrong: torch.Tensor, wrong_ref: torch.Tensor, iou: torch.Tensor, candidates: int = CANDIDATES
    ) -> torch.Tensor:
        """[B, N] max over reference models of the IoU of wrong predictions, per replicate.

        wrong: [N, n], wrong_ref: [K, n] booleans; iou: [N, K] their IoU on the full test set, with
        pairs that must not count (a model with itself) set to -inf.
        """
        n_models = len(wrong)
        c = min(candidates, wrong_ref.shape[0])
        cand = iou.topk(c, dim=1).indices  # [N, c]
        valid = torch.isfinite(iou.gather(1, cand))
        cols = (wrong.any(0) | wrong_ref.any(0)).nonzero().squeeze(1)  # only samples someone gets wrong matter
        w = self.weights[:, cols]
        a, r = wrong[:, cols].float(), wrong_ref[:, cols].float()
        size_a, size_r = w @ a.T, w @ r.T  # [B, N], [B, K]: weighted sizes of the wrong sets
        out = torch.empty(self.replicates, n_models)
        chunk = max(1, 4096 // c)
        for s in range(0, n_models, chunk):
            i = torch.arange(s, min(s + chunk, n_models))
            both = a[i, None, :] * r[cand[i]]  # [m, c, n_w]: wrong for both
            inter = (w @ both.reshape(-1, len(cols)).T).view(self.replicates, len(i), c)
            union = size_a[:, i, None] + size_r[:, cand[i]] - inter
            sim = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.ones_like(inter))
            sim = torch.where(valid[i][None], sim, torch.full_like(sim, -float("inf")))
            out[:, i] = sim.max(2).values
        return out


def task_sample_replicates(correct: torch.Tensor, replicates: int = REPLICATES, seed: int = 0) -> torch.Tensor:
    """[B, M] replicates of M methods' mean accuracy (percent) over T tasks, from their [M, T, n]
    shares of right answers per test sample: each replicate draws tasks and test samples with
    replacement, the same draws for every method (differences carry both sources of uncertainty)."""
    c = correct.double()
    _, tasks, samples = c.shape
    gen = torch.Generator().manual_seed(seed)
    draws = torch.empty(replicates, len(c), dtype=torch.float64)
    for r in range(replicates):
        w = torch.bincount(torch.randint(tasks, (tasks,), generator=gen), minlength=tasks).double()
        v = torch.bincount(torch.randint(samples, (samples,), generator=gen), minlength=samples).double()
        draws[r] = (c @ v) @ w / (tasks * samples) * 100
    return draws


def group_mean(per_model: torch.Tensor, model_weights: torch.Tensor) -> torch.Tensor:
    """[B] the group's mean of a [B, N] per-model statistic under each replicate's model resampling."""
    return (per_model.double() * model_weights.double()).sum(1)


def mean_accuracy(boot: Bootstrap, correct: torch.Tensor) -> tuple[float, torch.Tensor]:
    """A group's mean accuracy (percent) from its [N, n] correct matrix, and its [B] replicates."""
    point = 100.0 * float(correct.double().mean())
    return point, group_mean(boot.accuracy(correct), boot.model_weights(len(correct)))


def interval(samples, confidence: float = CONFIDENCE) -> list[float]:
    """The central `confidence` interval (percentiles) of bootstrap replicates of a statistic."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail])
    return [float(lo), float(hi)]


def estimate(point: float, samples) -> dict:
    """A JSON-ready estimate: the full-data value and its 95% bootstrap interval."""
    return {"estimate": float(point), "ci95": interval(samples)}


def curve_at(curve_x: np.ndarray, curve_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per replicate, the curve (points [B, P]) linearly interpolated at x [B]."""
    out = np.empty(len(x))
    for b in range(len(x)):
        order = np.argsort(curve_x[b])
        out[b] = np.interp(x[b], curve_x[b][order], curve_y[b][order])
    return out


def excludes_zero(ci: list[float], tolerance: float = 1e-9) -> bool:
    """Whether an interval lies clear of zero (two groups whose predictions are identical give an
    interval of rounding errors around zero, which does not count)."""
    return ci[0] > tolerance or ci[1] < -tolerance


def side(ci: list[float]) -> int:
    """+1 when the whole interval lies above zero, -1 when below, 0 when it contains zero. The words
    a difference gets follow this, never the point estimate's sign (a skewed bootstrap interval can lie
    on the other side of zero from its estimate)."""
    return 1 if ci[0] > 0 and excludes_zero(ci) else -1 if excludes_zero(ci) else 0


def compare(difference: dict, better: str = "better", worse: str = "worse", unit: str = "points") -> str:
    """Words for a difference with its interval: 'better by 0.12 points (95% CI +0.05 to +0.19)', or
    'indistinguishable at this test-set size (±0.06 points)' when the interval contains zero."""
    d, (lo, hi) = difference["estimate"], difference["ci95"]
    s = side(difference["ci95"])
    if s == 0:
        return f"indistinguishable at this test-set size (±{(hi - lo) / 2:.2f} {unit})"
    word = better if s > 0 else worse
    size = f"by {abs(d):.2f} {unit}" if d * s > 0 else f"(estimate {d:+.2f} {unit})"
    return f"{word} {size} (95% CI {lo:+.2f} to {hi:+.2f})"


def format_ci(e: dict | None, fmt: str = ".2f") -> str:
    """'98.72 [98.65, 98.79]' for a table cell."""
    if e is None:
        return "-"
    lo, hi = e["ci95"]
    return f"{e['estimate']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
