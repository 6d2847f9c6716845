"""Did the generator learn the distribution, or collapse onto a point or onto copies?

Accuracy alone cannot tell: on the default task the weight average scores as well as the originals,
so a generator that always returns the zoo mean would pass every accuracy check. These statistics
look at the parameters themselves, in normalized space:

- spread: per dimension, the generated models' standard deviation over the originals'; a
  generator that learned the distribution has a ratio near 1, a collapsed one near 0.
- precision and recall (Kynkäänniemi et al. 2019, "Improved precision and recall metric for
  assessing generative models"): each set's manifold is the union of balls around its points, with
  radius the distance to the point's k-th nearest neighbour in its own set. Precision is the share of
  generated models inside the reference manifold (are they plausible?), recall the share of
  reference models inside the generated manifold (is the whole distribution covered?). Measured
  against the training snapshots and against the held-out snapshots of a seed never seen.
"""

from __future__ import annotations

import torch

from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import column_blocks

NEIGHBOURS = 3  # k of the k-NN manifold estimate, as in the paper that introduced it


COLLAPSED_SPREAD = 0.1  # median std ratio below this: the generated models barely vary


COPIES_SHARE = 0.5  # at least this share of replicas: the generator copies training snapshots


ROUNDING = 64 * torch.finfo(torch.float64).eps  # relative size of a squared distance's rounding error


def distances(x: torch.Tensor, y: torch.Tensor, normalizer: Normalizer | None = None) -> torch.Tensor:
    """[N, M] float64 Euclidean distances between the rows of x and of y, in normalized space when
    `normalizer` is given (each block of columns normalized as it is read). Each block is centred on
    y's mean and its squared distances computed in float64 before they are summed: the matrix-product
    form ||x||² + ||y||² - 2 x·y that cdist uses loses a near-copy's distance to cancellation in
    float32 (18% error at a distance of 0.14 between rows of norm 100). Only one block of columns is
    copied at a time, a quarter of the usual block: a block's float64, normalized and centred copies are
    alive together (at 98k parameters the report's peak fell by about 200 MB, at 1M by 80 MB)."""
    d = torch.zeros(len(x), len(y), dtype=torch.float64)
    for b in column_blocks(4 * (len(x) + len(y)), x.shape[1]):
        xb, yb = x[:, b].double(), y[:, b].double()
        if normalizer is not None:
            part = normalizer.columns(b)
            xb, yb = part(xb), part(yb)
        centre = yb.mean(0, keepdim=True)
        xb, yb = xb - centre, yb - centre
        norms = xb.pow(2).sum(1, keepdim=True) + yb.pow(2).sum(1)[None, :]
        sq = norms - 2 * xb @ yb.T
        # below what float64 resolves at these norms the rows are the same: exactly 0, so copies are found
        d += torch.where(sq <= ROUNDING * norms, 0.0, sq)
    return d.sqrt()


def knn_radii(x: torch.Tensor, k: int = NEIGHBOURS, normalizer: Normalizer | None = None) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    d = distances(x, x, normalizer)
    d.fill_diagonal_(float("inf"))
    return d.kthvalue(min(k, len(x) - 1), dim=1).values


def coverage(
    points: torch.Tensor, manifold: torch.Tensor, k: int = NEIGHBOURS, normalizer: Normalizer | None = None
) -> float:
    """Share of `points` that lie inside the k-NN manifold of `manifold` (both [*, D])."""
    if len(manifold) < 2 or len(points) == 0:
        return float("nan")
    radii = knn_radii(manifold, k, normalizer)
    d = distances(points, manifold, normalizer)
    return float((d <= radii[None]).any(1).double().mean())


def precision_recall(
    generated: torch.Tensor, reference: torch.Tensor, k: int = NEIGHBOURS, normalizer: Normalizer | None = None
) -> dict:
    return {
        "precision": coverage(generated, reference, k, normalizer),
        "recall": coverage(reference, generated, k, normalizer),
    }


def spread_ratio(generated: torch.Tensor, originals: torch.Tensor) -> dict:
    """Per-dimension std of the generated over the originals' (median and quartiles over dimensions).
    A ratio per coordinate, so the same in normalized and raw space (per-coordinate standardization
    divides both stds alike). Computed in float64 a block of columns at a time: no copy of the zoo."""
    if len(generated) < 2 or len(originals) < 2:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    blocks = column_blocks(len(originals), originals.shape[1])
    ratio = torch.cat(
        [generated[:, b].double().std(0) / originals[:, b].double().std(0).clamp_min(1e-12) for b in blocks]
    )
    q = torch.quantile(ratio, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {"median": q[1], "q25": q[0], "q75": q[2]}


def distribution_check(
    generated: torch.Tensor,
    originals: torch.Tensor,
    heldout: torch.Tensor,
    replica_share: float,
    *,
    nonfinite_share: float = 0.0,
    normalizer: Normalizer | None = None,
) -> dict:
    """Spread, precision/recall against the training and held-out snapshots, and the flags that say
    what went wrong (empty when nothing did). Distances in the space `normalizer` maps to (None:
    the inputs are normalized already); generated rows finite."""
    spread = spread_ratio(generated, originals)
    flags = []
    if len(originals) < 2:
        flags.append("one snapshot")
    elif not spread["median"] >= COLLAPSED_SPREAD:  # also when undefined: fewer than two generated models
        flags.append("collapsed")
    if replica_share >= COPIES_SHARE:
        flags.append("copies")
    if nonfinite_share > 0:
        flags.append("non-finite")
    return {
        "spread_ratio": spread,
        "training": precision_recall(generated, originals, normalizer=normalizer),
        "heldout": precision_recall(generated, heldout, normalizer=normalizer) if len(heldout) >= 2 else None,
        "nonfinite_share": nonfinite_share,
        "flags": flags,
        "neighbours": NEIGHBOURS,
    }


FLAG_TEXT = {
    "one snapshot": "the zoo holds a single training snapshot: there is no variation to learn or to compare "
    "with, so spread, precision and recall are not defined; collect more snapshots (-k)",
    "collapsed": "the generated models barely differ from each other (median spread {spread:.2f} of the originals'): "
    "the generator collapsed; check the autoencoder's reconstruction and the latent noise",
    "copies": "{replicas:.0f}% of the generated models are replicas of training snapshots: "
    "the generator memorized them; "
    "collect a more varied zoo (a higher --lr, more --runs)",
    "non-finite": (
        "{nonfinite:.0f}% of the generated models contain NaN or Inf (failures in the accuracy table, left out here)"
    ),
}


def flag_sentences(check: dict, replica_share: float) -> list[str]:
    values = {
        "spread": check["spread_ratio"]["median"],
        "replicas": 100 * replica_share,
        "nonfinite": 100 * check["nonfinite_share"],
    }
    return [FLAG_TEXT[f].format(**values) for f in check["flags"]]


# A model is a replica when it lies closer to an original than a tenth of the originals' typical
# nearest-neighbour spacing. A parameter-space criterion: identical wrong test predictions (IoU 1)
# are common between distinct models on a small test set (on digits-cnn's 497 samples, 20% of the
# held-out snapshots), and a warning must not be driven by the test set.
REPLICA_RELATIVE_DISTANCE = 0.1


def variation_missed(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor) -> tuple[float, float]:
    """For rows x (normalized space) and their reconstructions: the summed squared error, and the
    summed squared deviation of x around `mean` (the rows' mean); summed over chunks of rows, their
    ratio is `unexplained_share`."""
    return float(((recon - x) ** 2).sum()), float(((x - mean) ** 2).sum())


def unexplained_share(missed: float, spread: float) -> float:
    """Share of the rows' variation the reconstructions miss (the autoencoder's budget and health check)."""
    return missed / spread if spread > 0 else 0.0


def nearest_distances(
    x: torch.Tensor, originals: torch.Tensor, exclude_self: bool = False, normalizer: Normalizer | None = None
) -> torch.Tensor:
    """Euclidean distance from each row of x to its nearest original, in normalized space when
    `normalizer` is given (None: both are normalized already); see `distances`."""
    d = distances(x, originals, normalizer)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values


def originals_spacing(originals: torch.Tensor, normalizer: Normalizer | None = None) -> tuple[torch.Tensor, float]:
    """Each original's distance to its nearest other, distinct original, and their median: the
    spacing replicas are measured against. Duplicates are skipped, so that a zoo of copies still has
    a spacing (the distance between its distinct snapshots); with a single distinct snapshot it is 0."""
    if len(originals) < 2:
        return torch.full((len(originals),), float("nan"), dtype=torch.float64), float("nan")
    d = distances(originals, originals, normalizer)
    d.fill_diagonal_(float("inf"))
    own = d.masked_fill(d == 0, float("inf")).min(1).values
    distinct = own[torch.isfinite(own)]
    return own, float(distinct.median()) if len(distinct) else 0.0


def relative_distances(nearest: torch.Tensor, spacing: float) -> torch.Tensor:
    """Nearest-original distances in units of the originals' spacing. With a spacing of 0 (every
    original the same) only an exact copy is at 0 and everything else infinitely far."""
    if spacing > 0 or spacing != spacing:  # NaN spacing (one original): NaN distances, no replicas
        return nearest / spacing
    return torch.where(nearest == 0, 0.0, float("inf")).to(nearest.dtype)


def replica_share(relative: torch.Tensor) -> float:
    """Share of models closer to an original than REPLICA_RELATIVE_DISTANCE of the spacing."""
    return float((relative < REPLICA_RELATIVE_DISTANCE).double().mean()) if len(relative) else 0.0
