"""The paired bootstrap: intervals of the right width, exact similarity re-computation, honest words."""

import pytest
import torch

from nndiff.evaluation.metrics import pairwise_iou
from nndiff.evaluation.uncertainty import Bootstrap, compare, estimate, excludes_zero, group_mean, interval, side


def test_a_single_models_accuracy_interval_has_the_binomial_width():
    """One model right on 90% of 2,000 samples: the 95% interval is about ±1.96 sqrt(p(1-p)/n) = ±1.31 points."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    correct = (torch.rand(1, n, generator=g) < 0.9)
    boot = Bootstrap(n, 2000, seed=1)
    acc = boot.accuracy(correct)[:, 0]
    lo, hi = interval(acc)
    p = float(correct.double().mean())
    half = 1.96 * (p * (1 - p) / n) ** 0.5 * 100
    assert lo < 100 * p < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)


def test_model_resampling_widens_the_interval_of_a_varied_group():
    """Models that differ in accuracy add between-model variance to the group mean's interval."""
    n = 4000
    g = torch.Generator().manual_seed(0)
    same = (torch.rand(1, n, generator=g) < 0.8).repeat(10, 1)
    varied = torch.stack([torch.rand(n, generator=g) < p for p in torch.linspace(0.6, 0.95, 10).tolist()])
    boot = Bootstrap(n, 1000, seed=0)
    w = lambda c: interval(group_mean(boot.accuracy(c), boot.model_weights(len(c))))  # noqa: E731
    (a, b), (c, d) = w(same), w(varied)
    assert d - c > 3 * (b - a)


def test_similarity_in_each_replicate_equals_the_iou_on_the_resampled_test_set():
    g = torch.Generator().manual_seed(0)
    n, labels = 300, torch.zeros(300, dtype=torch.long)
    models = (torch.rand(7, n, generator=g) < 0.2).long()  # 1 = wrong
    ref = (torch.rand(5, n, generator=g) < 0.2).long()
    iou = pairwise_iou(models, labels, ref)
    boot = Bootstrap(n, 20, seed=3)
    fast = boot.max_similarity(models.bool(), ref.bool(), iou, candidates=5)
    for b in range(20):
        idx = torch.repeat_interleave(torch.arange(n), boot.weights[b].long())  # the resampled test set itself
        exact = pairwise_iou(models[:, idx], labels[idx], ref[:, idx]).max(1).values
        torch.testing.assert_close(fast[b], exact, rtol=1e-5, atol=1e-6)


def test_self_pairs_are_excluded_from_the_maximum():
    """Three models; with the diagonal masked each one's maximum is over the other two only, in
    every replicate (with itself counted it would be 1 everywhere)."""
    g = torch.Generator().manual_seed(1)
    n, labels = 200, torch.zeros(200, dtype=torch.long)
    wrong = torch.rand(3, n, generator=g) < 0.3
    masked = pairwise_iou(wrong.long(), labels).fill_diagonal_(-float("inf"))
    boot = Bootstrap(n, 10, seed=0)
    sim = boot.max_similarity(wrong, wrong, masked)
    for b in range(10):
        idx = torch.repeat_interleave(torch.arange(n), boot.weights[b].long())
        iou = pairwise_iou(wrong[:, idx].long(), labels[idx]).fill_diagonal_(-float("inf"))
        torch.testing.assert_close(sim[b], iou.max(1).values, rtol=1e-5, atol=1e-6)
    assert (sim < 1).all()


def test_paired_differences():
    n = 1000
    base = torch.zeros(1, n, dtype=torch.bool)
    base[0, :900] = True
    better = base.clone()
    better[0, 900:930] = True  # right on 30 more samples, never worse
    boot = Bootstrap(n, 1000, seed=0)
    a, b = boot.accuracy(base)[:, 0], boot.accuracy(better)[:, 0]
    diff = estimate(3.0, b - a)
    assert excludes_zero(diff["ci95"]) and compare(diff, "higher", "lower").startswith("higher by 3.00 points")
    same = estimate(0.0, a - a)
    assert same["ci95"] == [0.0, 0.0] and not excludes_zero(same["ci95"])
    assert compare(same) == "indistinguishable at this test-set size (±0.00 points)"
    # rounding-level differences of identical predictions are not a finding
    assert not excludes_zero([1e-12, 3e-12])


def test_compare_words():
    # the words follow the interval, not the estimate: a skewed interval above zero is "better"
    skewed = {"estimate": -0.01, "ci95": [0.02, 0.10]}
    assert compare(skewed) == "better (estimate -0.01 points) (95% CI +0.02 to +0.10)"
    assert side(skewed["ci95"]) == 1 and side([-0.2, -0.1]) == -1 and side([-0.1, 0.1]) == 0
    assert compare({"estimate": -0.05, "ci95": [-0.09, -0.01]}) == "worse by 0.05 points (95% CI -0.09 to -0.01)"
    assert compare({"estimate": 0.05, "ci95": [-0.03, 0.13]}) == "indistinguishable at this test-set size (±0.08 points)"
