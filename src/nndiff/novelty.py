"""Are the generated models new? Baselines, similarity and distance metrics, and a verdict in words.

Every group of models — generated, baselines, held-out originals — is evaluated the same way and
placed on one plane: x = its similarity to the training snapshots (for each model, the maximum
over originals of the IoU of their sets of wrongly predicted test samples), y = test accuracy.
Adding Gaussian noise of growing amplitude to the originals draws a curve on that plane; a method
that merely perturbs its training data lies on the curve, a better one lies above it (Zeng et al.
2025). The gap to the curve at the group's own mean similarity is the headline number.
"""

from __future__ import annotations

import numpy as np
import torch

from .conditional import AIMS, GUIDANCES, aim_name
from .evaluate import evaluate_params, mean_offdiagonal, pairwise_iou
from .params import Normalizer

# Noise amplitudes in normalized parameter space (units of the originals' per-element spread):
# from perturbations that change nothing to ones that clearly cost accuracy.
NOISE_AMPLITUDES = (0.25, 0.5, 1.0, 2.0, 4.0)
SUBSET_SIZE = 16
# A model is a replica when its wrong test predictions are exactly those of one original, or when
# it lies closer to an original than a tenth of the originals' typical nearest-neighbour spacing.
REPLICA_RELATIVE_DISTANCE = 0.1

LABELS = {
    "generated": "generated",
    "weight_average": f"weight average of {SUBSET_SIZE}",
    "gaussian": "per-dimension Gaussian",
    "heldout": "held-out originals",
    # conditional runs: sets aimed at the best snapshot's validation accuracy
    **{aim_name(a, w): f"generated, aimed at the {a} snapshot's val. accuracy, guidance {w:g}" for a in AIMS for w in GUIDANCES},
}


def noise_name(amplitude: float) -> str:
    return f"noise_{amplitude:g}"


def make_baselines(originals: torch.Tensor, heldout: torch.Tensor, normalizer: Normalizer, n: int, seed: int = 0,
                   amplitudes=NOISE_AMPLITUDES) -> dict[str, torch.Tensor]:
    """[n, D] parameter vectors per baseline, built from the training snapshots only (and held-out ones)."""
    g = torch.Generator().manual_seed(seed)
    k, d = originals.shape
    out = {}
    for a in amplitudes:
        idx = torch.randint(k, (n,), generator=g)
        z = normalizer(originals[idx]) + a * torch.randn(n, d, generator=g)
        out[noise_name(a)] = normalizer.inverse(z)
    m = min(SUBSET_SIZE, k)
    subsets = torch.stack([torch.randperm(k, generator=g)[:m] for _ in range(n)])
    out["weight_average"] = originals[subsets].mean(1)
    mean, std = originals.mean(0), originals.std(0, unbiased=k > 1)
    out["gaussian"] = mean + std * torch.randn(n, d, generator=g)
    if len(heldout):
        out["heldout"] = heldout[:n]
    return out


def nearest_distances(x: torch.Tensor, originals: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """Euclidean distance from each row of x to its nearest original (both already normalized)."""
    d = torch.cdist(x.double(), originals.double())
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values


def group_stats(test_acc: torch.Tensor, max_iou: torch.Tensor, rel_dist: torch.Tensor, iou_within: float,
                iou_to_originals: float) -> dict:
    replicas = (max_iou >= 1.0) | (rel_dist < REPLICA_RELATIVE_DISTANCE)
    return {
        "count": len(test_acc),
        "test_acc_mean": float(test_acc.mean()),
        "test_acc_median": float(test_acc.median()),
        "test_acc_best": float(test_acc.max()),
        "test_acc_min": float(test_acc.min()),
        "max_similarity_mean": float(max_iou.mean()),
        "nearest_distance_relative_mean": float(rel_dist.mean()),
        "replica_share": float(replicas.double().mean()),
        "mean_pairwise_iou_within": iou_within,
        "mean_iou_to_originals": iou_to_originals,
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


def analyze(task, model, zoo, normalizer: Normalizer, generated: torch.Tensor, n_baseline: int | None = None,
            seed: int = 0, extra: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
    """The novelty analysis of `generated` ([N, D], finite rows) against the zoo.

    `extra`: more generated sets to place on the same plane (e.g. conditional ones), by name.

    Returns (summary, per_model): the JSON-ready summary, and per group the per-model tensors the
    figures need (test_acc, max_similarity, nearest_distance_relative, normalized parameters).
    """
    n = n_baseline or len(generated)
    test = task.splits()["test"]
    device = next(model.parameters()).device
    labels = test.y.cpu()
    groups = {"originals": zoo.params, "generated": generated,
              **make_baselines(zoo.params, zoo.heldout, normalizer, n, seed), **(extra or {})}
    preds = {name: evaluate_params(task, model, zoo.layout, p, {"test": test.to(device)}, progress=False)["test"]
             for name, p in groups.items()}

    orig_norm = normalizer(zoo.params)
    # The originals' own spacing: each one's distance to its nearest other original.
    spacing = float(nearest_distances(orig_norm, orig_norm, exclude_self=True).median()) if len(orig_norm) > 1 else float("nan")
    result: dict = {"test_samples": len(labels), "originals_nearest_spacing": spacing, "groups": {}}
    per_model: dict = {}
    for name, p in groups.items():
        ev = preds[name]
        iou = pairwise_iou(ev.predictions, labels, preds["originals"].predictions)
        if name == "originals":
            iou_self = iou.clone().fill_diagonal_(-1.0)
            max_iou = iou_self.max(1).values if len(iou) > 1 else torch.full((1,), float("nan"))
            dist = nearest_distances(orig_norm, orig_norm, exclude_self=True) if len(orig_norm) > 1 else torch.full((1,), float("nan"))
            within = to_orig = mean_offdiagonal(iou)
        else:
            max_iou = iou.max(1).values
            dist = nearest_distances(normalizer(p), orig_norm)
            within = mean_offdiagonal(pairwise_iou(ev.predictions, labels))
            to_orig = float(iou.mean())
        stats = group_stats(ev.accuracy, max_iou, dist / spacing, within, to_orig)
        per_model[name] = {"test_acc": ev.accuracy, "max_similarity": max_iou, "nearest_distance_relative": dist / spacing,
                           "normalized": normalizer(p)}
        if name == "originals":
            stats["replica_share"] = None  # against themselves (leave-one-out), replicas are not defined
        result["groups"][name] = stats

    curve = [{"amplitude": 0.0, "max_similarity_mean": 1.0, "test_acc_mean": result["groups"]["originals"]["test_acc_mean"]}]
    for a in NOISE_AMPLITUDES:
        g = result["groups"][noise_name(a)]
        curve.append({"amplitude": a, "max_similarity_mean": g["max_similarity_mean"], "test_acc_mean": g["test_acc_mean"]})
    result["noise_curve"] = curve
    for name, g in result["groups"].items():
        if name in LABELS or name in (extra or {}):
            g["gap_to_noise_curve"], g["inside_noise_curve"] = noise_curve_gap(curve, g["max_similarity_mean"], g["test_acc_mean"])
    result["pairwise_iou"] = {
        "originals": result["groups"]["originals"]["mean_pairwise_iou_within"],
        "generated": result["groups"]["generated"]["mean_pairwise_iou_within"],
        "generated_vs_originals": result["groups"]["generated"]["mean_iou_to_originals"],
    }
    result["verdict"] = verdict(result)
    result["definitions"] = {
        "max_similarity": "per model, the maximum over training snapshots of the IoU of the sets of wrongly predicted test samples",
        "nearest_distance_relative": "Euclidean distance in normalized parameter space to the nearest training snapshot, "
                                     "divided by originals_nearest_spacing (the median distance of a snapshot to its nearest other snapshot)",
        "replica": f"max_similarity = 1, or nearest_distance_relative < {REPLICA_RELATIVE_DISTANCE}",
        "gap_to_noise_curve": "mean test accuracy minus the noise curve's accuracy at the group's mean max_similarity, "
                              "in percentage points (linear interpolation between noise amplitudes; amplitude 0 is the originals)",
        "noise_amplitudes": "standard deviations of Gaussian noise added in normalized parameter space "
                            "(1 = the originals' own per-element spread)",
    }
    return result, per_model


def verdict(result: dict) -> list[str]:
    """Sentences a user can read: where each group lies relative to the noise curve."""
    groups = result["groups"]
    lines = []
    for name, label in LABELS.items():
        if name not in groups:
            continue
        g = groups[name]
        gap = g["gap_to_noise_curve"]
        position = "on the noise curve" if abs(gap) < 0.005 else f"{abs(gap):.2f} points {'above' if gap > 0 else 'below'} the noise curve"
        where = "" if g["inside_noise_curve"] else " (outside the curve's similarity range: indicative only)"
        lines.append(f"{label[0].upper() + label[1:]}: mean test accuracy {g['test_acc_mean']:.2f}% at mean max-similarity "
                     f"{g['max_similarity_mean']:.3f}, {position}{where}; {100 * g['replica_share']:.0f}% replicas.")
    gen = groups["generated"]
    better = [LABELS[n] for n in ("weight_average", "gaussian", "heldout")
              if n in groups and groups[n]["gap_to_noise_curve"] > gen["gap_to_noise_curve"]]
    if better:
        names = better[0] if len(better) == 1 else ", ".join(better[:-1]) + " and " + better[-1]
        lines.append(f"At matched similarity, the generated models do worse than the {names}.")
    else:
        lines.append("At matched similarity, the generated models do better than every baseline here.")
    if gen["replica_share"] >= 0.5:
        lines.append("Most generated models are replicas of training snapshots: the generator memorized them.")
    held = groups.get("heldout")
    if held is not None:
        closer = "closer to" if gen["max_similarity_mean"] > held["max_similarity_mean"] else "no closer to"
        lines.append(f"Generated models are {closer} the training snapshots (mean max-similarity "
                     f"{gen['max_similarity_mean']:.3f}) than fresh snapshots from a new seed are ({held['max_similarity_mean']:.3f}).")
    return lines
