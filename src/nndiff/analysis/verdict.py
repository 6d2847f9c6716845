"""The novelty analysis in words: each sentence follows its interval."""

from __future__ import annotations

from nndiff.analysis.baselines import LABELS
from nndiff.analysis.distribution import REPLICA_RELATIVE_DISTANCE, flag_sentences
from nndiff.evaluation.uncertainty import compare, side

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
        if ci is not None and side(ci):
            where_ = "above" if side(ci) > 0 else "below"
            position = f"{where_} the noise curve by {gap:+.2f} points (95% CI {ci[0]:+.2f} to {ci[1]:+.2f})"
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
    if dist is not None and "one snapshot" in dist["flags"]:
        lines += [s[0].upper() + s[1:] + "." for s in flag_sentences(dist, groups["generated"]["replica_share"])]
    elif dist is not None:
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
        if side(diff["ci95"]):
            closer, than = ("closer to" if side(diff["ci95"]) > 0 else "further from"), "than"
            how = f"difference {diff['estimate']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}"
        else:
            closer, than, how = "as close to", "as", f"indistinguishable at this test-set size, ±{(hi - lo) / 2:.3f}"
        lines.append(
            f"Generated models are {closer} the training snapshots (mean max-similarity "
            f"{gen['max_similarity_mean']:.3f}) "
            f"{than} fresh snapshots from a new seed are ({held['max_similarity_mean']:.3f}; {how})."
        )
    return lines
