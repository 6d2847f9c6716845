"""Are the generated models new? Baselines, similarity and distance metrics, and a verdict in words.

Every group of models — generated, baselines, held-out originals — is evaluated the same way and
placed on one plane: x = its similarity to the training snapshots (for each model, the maximum
over originals of the IoU of their sets of wrongly predicted test samples), y = test accuracy.
Adding Gaussian noise of growing amplitude to the originals draws a curve on that plane; a method
that merely perturbs its training data lies on the curve, a better one lies above it (Zeng et al.
2025). The gap to the curve at the group's own mean similarity is the headline number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nndiff.analysis.baselines import (
    LABELS,
    MAX_AMPLITUDE,
    NOISE_AMPLITUDES,
    baseline_count,
    make_baselines,
    noise_baseline,
    noise_name,
)
from nndiff.analysis.distribution import (
    distribution_check,
    nearest_distances,
    originals_spacing,
    relative_distances,
    replica_share,
)
from nndiff.analysis.plane import Plane
from nndiff.analysis.verdict import DEFINITIONS, verdict
from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import mean_offdiagonal, pairwise_iou
from nndiff.evaluation.uncertainty import REPLICATES, Bootstrap, curve_at, estimate, group_mean, interval
from nndiff.params.normalizer import Normalizer


@dataclass
class Measured:
    """One group's models on the test set: what every statistic and the bootstrap start from."""

    accuracy: torch.Tensor  # [N] percent
    wrong: torch.Tensor  # [N, n] bool
    max_iou: torch.Tensor  # [N] max IoU of wrong predictions with any training snapshot (itself excluded)
    iou: torch.Tensor  # [N, K] IoU with each training snapshot, -inf where a pair must not count
    distance: torch.Tensor  # [N] relative nearest-snapshot distance in normalized space
    plane: torch.Tensor  # [N, 2] coordinates in the principal-component plane of the PCA map
    within: float  # mean pairwise IoU inside the group
    to_originals: float  # mean IoU with the training snapshots


def group_stats(m: Measured) -> dict:
    return {
        "count": len(m.accuracy),
        "test_acc_mean": float(m.accuracy.mean()),
        "test_acc_median": float(m.accuracy.median()),
        "test_acc_best": float(m.accuracy.max()),
        "test_acc_min": float(m.accuracy.min()),
        "max_similarity_mean": float(m.max_iou.mean()),
        "nearest_distance_relative_mean": float(m.distance.mean()),
        "replica_share": replica_share(m.distance),
        "mean_pairwise_iou_within": m.within,
        "mean_iou_to_originals": m.to_originals,
    }


def noise_curve_gap(curve: list[dict], similarity: float, accuracy: float) -> tuple[float, bool]:
    """Accuracy minus the noise curve's accuracy at `similarity` (linear interpolation).

    Returns (gap, inside): outside the curve's similarity range the nearest end point is used and
    `inside` is False, so the gap is then only indicative.
    """
    pts = sorted((p["max_similarity_mean"], p["test_acc_mean"]) for p in curve)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    inside = xs[0] <= similarity <= xs[-1]
    return accuracy - float(np.interp(similarity, xs, ys)), inside


def analyze(
    task,
    model,
    zoo,
    normalizer: Normalizer,
    *,
    generated: torch.Tensor,
    n_baseline: int | None = None,
    seed: int = 0,
    extra: dict[str, torch.Tensor] | None = None,
    nonfinite: int = 0,
    replicates: int = REPLICATES,
) -> tuple[dict, dict]:
    """The novelty analysis of `generated` ([N, D], finite rows) against the zoo.

    `extra`: more generated sets to place on the same plane (e.g. conditional ones), by name.
    `nonfinite`: how many generated models were left out for holding NaN/Inf (failures in the metrics).
    `n_baseline`: models per baseline group (default: baseline_count, as many as generated up to a
    budget of evaluation work).

    Returns (summary, per_model): the JSON-ready summary, and per group the per-model tensors the
    figures need (test_acc, max_similarity, nearest_distance_relative, normalized parameters).
    """
    test = task.splits()["test"]
    n = n_baseline or baseline_count(len(generated), zoo.layout.size, len(test))
    device = next(model.parameters()).device
    labels = test.y.cpu()
    test_dev = test.to(device)
    # The originals' principal plane (every model's, when fewer than 3 originals cannot define it).
    reference = zoo.params if len(zoo.params) >= 3 else torch.cat([zoo.params, generated])
    plane = Plane(reference, normalizer)
    # The originals' own spacing: each one's distance to its nearest other original.
    own, spacing = originals_spacing(zoo.params, normalizer)
    orig = evaluate_params(task, model, zoo.layout, zoo.params, splits={"test": test_dev}, progress=False)["test"]

    def measure(name: str, p: torch.Tensor) -> Measured:
        ev = (
            evaluate_params(task, model, zoo.layout, p, splits={"test": test_dev}, progress=False)["test"]
            if name != "originals"
            else orig
        )
        iou = pairwise_iou(ev.predictions, labels, orig.predictions)
        if name == "originals":
            masked = iou.clone().fill_diagonal_(-float("inf"))
            max_iou = torch.full((1,), float("nan")) if len(iou) < 2 else masked.max(1).values
            dist, within = own, mean_offdiagonal(iou)
            to_orig = within
        else:
            masked, max_iou = iou, iou.max(1).values
            dist = nearest_distances(p, zoo.params, normalizer=normalizer)
            within, to_orig = mean_offdiagonal(pairwise_iou(ev.predictions, labels)), float(iou.mean())
        wrong = ev.predictions != labels
        relative = relative_distances(dist, spacing)
        return Measured(ev.accuracy, wrong, max_iou, masked, relative, plane.project(p), within, to_orig)

    # Each group is built, measured and let go in turn: at 1M parameters a group of 100 models is
    # 400 MB, so holding every baseline at once would take several times the zoo.
    measured = {"originals": measure("originals", zoo.params), "generated": measure("generated", generated)}
    baselines = make_baselines(zoo.params, zoo.heldout, normalizer, n, seed=seed)
    measured.update({name: measure(name, make()) for name, make in baselines.items()})
    measured.update({name: measure(name, p) for name, p in (extra or {}).items()})
    gap_groups = [name for name in measured if name in LABELS or name in (extra or {})]

    amplitudes = list(NOISE_AMPLITUDES)
    lowest = min(float(measured[g].max_iou.mean()) for g in gap_groups)
    while lowest < float(measured[noise_name(amplitudes[-1])].max_iou.mean()) and amplitudes[-1] < MAX_AMPLITUDE:
        a = amplitudes[-1] * 2
        measured[noise_name(a)] = measure(noise_name(a), noise_baseline(zoo.params, normalizer, a, n, seed=seed))
        amplitudes.append(a)

    result: dict = {
        "test_samples": len(labels),
        "baseline_models": n,
        "originals_nearest_spacing": spacing,
        "principal_plane": {
            "basis": "originals" if reference is zoo.params else "originals and generated",
            "explained_variance": plane.explained,
        },
        "groups": {},
    }
    per_model: dict = {}
    for name, m in measured.items():
        stats = group_stats(m)
        if name == "originals":
            stats["replica_share"] = None  # against themselves (leave-one-out), replicas are not defined
        result["groups"][name] = stats
        per_model[name] = {
            "test_acc": m.accuracy,
            "max_similarity": m.max_iou,
            "nearest_distance_relative": m.distance,
            "plane": m.plane,
        }

    curve = [
        {"amplitude": 0.0, "max_similarity_mean": 1.0, "test_acc_mean": result["groups"]["originals"]["test_acc_mean"]}
    ]
    for a in amplitudes:
        g = result["groups"][noise_name(a)]
        curve.append(
            {"amplitude": a, "max_similarity_mean": g["max_similarity_mean"], "test_acc_mean": g["test_acc_mean"]}
        )
    result["noise_curve"] = curve
    for name in gap_groups:
        g = result["groups"][name]
        g["gap_to_noise_curve"], g["inside_noise_curve"] = noise_curve_gap(
            curve, g["max_similarity_mean"], g["test_acc_mean"]
        )

    # The paired bootstrap: one resampled test set per replicate for every group, and a resampling
    # of each group's models; the noise curve is redrawn in each replicate too.
    boot = Bootstrap(len(labels), replicates, seed)
    reps = {}
    for name, m in measured.items():
        weights = boot.model_weights(len(m.accuracy))
        acc = group_mean(boot.accuracy(~m.wrong), weights).numpy()
        sim = group_mean(boot.max_similarity(m.wrong, measured["originals"].wrong, m.iou), weights).numpy()
        reps[name] = {"test_acc_mean": acc, "max_similarity_mean": sim}
    xs = np.stack([np.ones(replicates)] + [reps[noise_name(a)]["max_similarity_mean"] for a in amplitudes], 1)
    ys = np.stack([reps["originals"]["test_acc_mean"]] + [reps[noise_name(a)]["test_acc_mean"] for a in amplitudes], 1)
    for name in gap_groups:
        reps[name]["gap_to_noise_curve"] = reps[name]["test_acc_mean"] - curve_at(
            xs, ys, reps[name]["max_similarity_mean"]
        )
    for name, r in reps.items():
        for key, samples in r.items():
            if np.isfinite(samples).all():
                result["groups"][name][f"{key}_ci95"] = interval(samples)
    result["comparisons"] = [
        {
            "a": a,
            "b": b,
            **{
                f"{key}_difference": estimate(
                    result["groups"][a][key] - result["groups"][b][key], reps[a][key] - reps[b][key]
                )
                for key in ("test_acc_mean", "max_similarity_mean", "gap_to_noise_curve")
            },
        }
        for i, a in enumerate(gap_groups)
        for b in gap_groups[i + 1 :]
    ]
    result["bootstrap"] = {
        "replicates": replicates,
        "confidence": 0.95,
        "seed": seed,
        "resampled": "test samples (shared by every group) and each group's models",
    }

    share = nonfinite / (len(generated) + nonfinite) if len(generated) + nonfinite else 0.0
    held = zoo.heldout if len(zoo.heldout) else torch.empty(0, zoo.layout.size)
    replicas = result["groups"]["generated"]["replica_share"]
    result["distribution"] = distribution_check(
        generated, zoo.params, held, replicas, nonfinite_share=share, normalizer=normalizer
    )
    result["pairwise_iou"] = {
        "originals": result["groups"]["originals"]["mean_pairwise_iou_within"],
        "generated": result["groups"]["generated"]["mean_pairwise_iou_within"],
        "generated_vs_originals": result["groups"]["generated"]["mean_iou_to_originals"],
    }
    result["verdict"] = verdict(result)
    result["definitions"] = DEFINITIONS
    return result, per_model
