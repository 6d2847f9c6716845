"""Are the generated models new? Baselines, similarity and distance metrics, and a verdict in words.

Every group of models — generated, baselines, held-out originals — is evaluated the same way and
placed on one plane: x = its similarity to the training snapshots (for each model, the maximum
over originals of the IoU of their sets of wrongly predicted test samples), y = test accuracy.
Adding Gaussian noise of growing amplitude to the originals draws a curve on that plane; a method
that merely perturbs its training data lies on the curve, a better one lies above it (Zeng et al.
2025). The gap to the curve at the group's own mean similarity is the headline number.

Longer than 250 lines because the baselines, the metrics and the verdict in words must agree
with each other and are read together.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .conditional import AIMS, GUIDANCES, aim_name
from .distribution import distances, distribution_check, flag_sentences
from .evaluate import evaluate_params, mean_offdiagonal, pairwise_iou
from .params import Normalizer, column_blocks, row_blocks
from .plane import Plane
from .uncertainty import REPLICATES, Bootstrap, compare, curve_at, estimate, excludes_zero, group_mean, interval

# Noise amplitudes in normalized parameter space (units of the originals' per-element spread):
# from perturbations that change nothing to ones that clearly cost accuracy.
NOISE_AMPLITUDES = (0.25, 0.5, 1.0, 2.0, 4.0)
# When a group is less similar to the training snapshots than the largest amplitude's models, the
# curve is extended by doubling the amplitude (up to this one), so every group's gap is measured
# between two points of the curve rather than extrapolated.
MAX_AMPLITUDE = 64.0
SUBSET_SIZE = 16
# A model is a replica when it lies closer to an original than a tenth of the originals' typical
# nearest-neighbour spacing. A parameter-space criterion: identical wrong test predictions (IoU 1)
# are common between distinct models on a small test set (on digits-cnn's 497 samples, 20% of the
# held-out snapshots), and a warning must not be driven by the test set.
REPLICA_RELATIVE_DISTANCE = 0.1

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
    originals: torch.Tensor, normalizer: Normalizer, amplitude: float, n: int, seed: int = 0
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
    seed: int = 0,
    amplitudes=NOISE_AMPLITUDES,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Per baseline, what makes its [n, D] parameter vectors from the training snapshots only (and
    the held-out ones): each is built when it is measured, so only one baseline is in memory at a time."""
    out: dict[str, Callable[[], torch.Tensor]] = {
        noise_name(a): functools.partial(noise_baseline, originals, normalizer, a, n, seed) for a in amplitudes
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


def nearest_distances(
    x: torch.Tensor, originals: torch.Tensor, exclude_self: bool = False, normalizer: Normalizer | None = None
) -> torch.Tensor:
    """Euclidean distance from each row of x to its nearest original, in normalized space when
    `normalizer` is given (None: both are normalized already); see `distances`."""
    d = distances(x, originals, normalizer)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values


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
    replicas = m.distance < REPLICA_RELATIVE_DISTANCE
    return {
        "count": len(m.accuracy),
        "test_acc_mean": float(m.accuracy.mean()),
        "test_acc_median": float(m.accuracy.median()),
        "test_acc_best": float(m.accuracy.max()),
        "test_acc_min": float(m.accuracy.min()),
        "max_similarity_mean": float(m.max_iou.mean()),
        "nearest_distance_relative_mean": float(m.distance.mean()),
        "replica_share": float(replicas.double().mean()),
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
    generated: torch.Tensor,
    n_baseline: int | None = None,
    seed: int = 0,
    extra: dict[str, torch.Tensor] | None = None,
    nonfinite: int = 0,
    replicates: int = REPLICATES,
) -> tuple[dict, dict]:
    """The novelty analysis of `generated` ([N, D], finite rows) against the zoo.

    `extra`: more generated sets to place on the same plane (e.g. conditional ones), by name.
    `nonfinite`: how many generated models were dropped for holding NaN/Inf (they count as failures).
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
    own = (
        nearest_distances(zoo.params, zoo.params, exclude_self=True, normalizer=normalizer)
        if len(zoo.params) > 1
        else torch.full((1,), float("nan"), dtype=torch.float64)
    )
    spacing = float(own.median())
    orig = evaluate_params(task, model, zoo.layout, zoo.params, {"test": test_dev}, progress=False)["test"]

    def measure(name: str, p: torch.Tensor) -> Measured:
        ev = (
            evaluate_params(task, model, zoo.layout, p, {"test": test_dev}, progress=False)["test"]
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
        return Measured(ev.accuracy, wrong, max_iou, masked, dist / spacing, plane.project(p), within, to_orig)

    # Each group is built, measured and let go in turn: at 1M parameters a group of 100 models is
    # 400 MB, so holding every baseline at once would take several times the zoo.
    measured = {"originals": measure("originals", zoo.params), "generated": measure("generated", generated)}
    baselines = make_baselines(zoo.params, zoo.heldout, normalizer, n, seed)
    measured.update({name: measure(name, make()) for name, make in baselines.items()})
    measured.update({name: measure(name, p) for name, p in (extra or {}).items()})
    gap_groups = [name for name in measured if name in LABELS or name in (extra or {})]

    amplitudes = list(NOISE_AMPLITUDES)
    lowest = min(float(measured[g].max_iou.mean()) for g in gap_groups)
    while lowest < float(measured[noise_name(amplitudes[-1])].max_iou.mean()) and amplitudes[-1] < MAX_AMPLITUDE:
        a = amplitudes[-1] * 2
        measured[noise_name(a)] = measure(noise_name(a), noise_baseline(zoo.params, normalizer, a, n, seed))
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
    result["distribution"] = distribution_check(generated, zoo.params, held, replicas, share, normalizer)
    result["pairwise_iou"] = {
        "originals": result["groups"]["originals"]["mean_pairwise_iou_within"],
        "generated": result["groups"]["generated"]["mean_pairwise_iou_within"],
        "generated_vs_originals": result["groups"]["generated"]["mean_iou_to_originals"],
    }
    result["verdict"] = verdict(result)
    result["definitions"] = DEFINITIONS
    return result, per_model


DEFINITIONS = {
    "max_similarity": "per model, the maximum over training snapshots of the IoU of the sets of wrongly predicted "
    "test samples",
    "nearest_distance_relative": "Euclidean distance in normalized parameter space to the nearest training snapshot, "
    "divided by originals_nearest_spacing (the median distance of a snapshot to its nearest other snapshot)",
    "replica": f"nearest_distance_relative < {REPLICA_RELATIVE_DISTANCE} "
    "(in parameter space, so no flag depends on the test set)",
    "gap_to_noise_curve": "mean test accuracy minus the noise curve's accuracy at the group's mean max_similarity, "
    "in percentage points (linear interpolation between noise amplitudes; amplitude 0 is the originals)",
    "noise_amplitudes": "standard deviations of Gaussian noise added in normalized parameter space "
    "(1 = the originals' own per-element spread); doubled beyond 4 until the curve reaches every group",
    "ci95": "95% interval of a paired bootstrap: each replicate resamples the test samples (the same ones for every "
    "group) and each group's models; a difference is called better or worse only when its interval excludes zero",
    "precision, recall": "k-nearest-neighbour manifold estimates in normalized parameter space (k = 3): precision is "
    "the share of generated models inside the reference snapshots' manifold, recall the share of "
    "reference snapshots inside the generated models' manifold",
    "spread_ratio": "per dimension, the generated models' standard deviation over the training snapshots' "
    "(median and quartiles over dimensions)",
}


def difference(result: dict, a: str, b: str, key: str = "gap_to_noise_curve") -> dict:
    """Group a's `key` minus group b's, with its 95% interval, from the analysis' comparisons."""
    for c in result["comparisons"]:
        if (c["a"], c["b"]) == (a, b):
            return c[f"{key}_difference"]
        if (c["a"], c["b"]) == (b, a):
            d = c[f"{key}_difference"]
            return {"estimate": -d["estimate"], "ci95": [-d["ci95"][1], -d["ci95"][0]]}
    raise KeyError(f"no comparison of {a} with {b}")


def _with_ci(g: dict, key: str, fmt: str, unit: str = "") -> str:
    ci = g.get(f"{key}_ci95")
    return f"{g[key]:{fmt}}{unit}" + (f" (95% CI {ci[0]:{fmt}} to {ci[1]:{fmt}})" if ci else "")


def verdict(result: dict) -> list[str]:
    """Sentences a user can read. A group is above or below the noise curve, and better or worse
    than another, only when the 95% interval of the difference excludes zero."""
    groups = result["groups"]
    lines = []
    for name, label in LABELS.items():
        if name not in groups:
            continue
        g = groups[name]
        gap, ci = g["gap_to_noise_curve"], g.get("gap_to_noise_curve_ci95")
        if ci is not None and excludes_zero(ci):
            side = "above" if gap > 0 else "below"
            position = f"{abs(gap):.2f} points {side} the noise curve (95% CI {ci[0]:+.2f} to {ci[1]:+.2f})"
        elif ci is not None:
            position = (
                f"on the noise curve within its uncertainty (gap {gap:+.2f}, 95% CI {ci[0]:+.2f} to {ci[1]:+.2f})"
            )
        else:
            position = f"gap to the noise curve {gap:+.2f} (no interval)"
        where = "" if g["inside_noise_curve"] else " (outside the curve's similarity range: indicative only)"
        lines.append(
            f"{label[0].upper() + label[1:]}: mean test accuracy {_with_ci(g, 'test_acc_mean', '.2f', '%')} at mean "
            f"max-similarity {g['max_similarity_mean']:.3f}, {position}{where}; {100 * g['replica_share']:.0f}% "
            "replicas."
        )
    for c in result.get("comparisons", []):
        if c["a"] != "generated" or c["b"] not in ("weight_average", "gaussian", "heldout"):
            continue
        lines.append(
            f"At matched similarity, the generated models vs the {LABELS[c['b']]}: "
            f"{compare(c['gap_to_noise_curve_difference'])}."
        )
    dist = result.get("distribution")
    if dist is not None:
        pr, held = dist["training"], dist["heldout"]
        text = (
            f"Distribution: the generated parameters spread {dist['spread_ratio']['median']:.2f}x as much as the "
            f"training snapshots' (median over dimensions); precision {pr['precision']:.2f} and recall "
            f"{pr['recall']:.2f} "
            "against the training snapshots"
        )
        if held is not None:
            text += f", {held['precision']:.2f} and {held['recall']:.2f} against the held-out ones"
        lines.append(text + ".")
        lines += [s[0].upper() + s[1:] + "." for s in flag_sentences(dist, groups["generated"]["replica_share"])]
    if "heldout" in groups and result.get("comparisons"):
        gen, held = groups["generated"], groups["heldout"]
        diff = difference(result, "generated", "heldout", "max_similarity_mean")
        lo, hi = diff["ci95"]
        if excludes_zero(diff["ci95"]):
            closer, than = ("closer to" if diff["estimate"] > 0 else "further from"), "than"
            how = f"difference {diff['estimate']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}"
        else:
            closer, than, how = "as close to", "as", f"indistinguishable at this test-set size, ±{(hi - lo) / 2:.3f}"
        lines.append(
            f"Generated models are {closer} the training snapshots (mean max-similarity "
            f"{gen['max_similarity_mean']:.3f}) "
            f"{than} fresh snapshots from a new seed are ({held['max_similarity_mean']:.3f}; {how})."
        )
    return lines
