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


def distances(x: torch.Tensor, y: torch.Tensor, normalizer: Normalizer | None = None) -> torch.Tensor:
    """[N, M] float64 Euclidean distances between the rows of x and of y, in normalized space when
    `normalizer` is given (each block of columns normalized as it is read). Squared distances are
    summed over blocks of columns in float64 (each block's own in float32), so no normalized or
    float64 copy of either matrix is made and a near-copy's distance keeps its precision."""
    d = torch.zeros(len(x), len(y), dtype=torch.float64)
    for b in column_blocks(len(x) + len(y), x.shape[1]):
        xb, yb = x[:, b].float(), y[:, b].float()
        if normalizer is not None:
            part = normalizer.columns(b)
            xb, yb = part(xb), part(yb)
        d += torch.cdist(xb, yb).double().pow(2)
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
    nonfinite_share: float = 0.0,
    normalizer: Normalizer | None = None,
) -> dict:
    """Spread, precision/recall against the training and held-out snapshots, and the flags that say
    what went wrong (empty when nothing did). Distances in the space `normalizer` maps to (None:
    the inputs are normalized already); generated rows finite."""
    spread = spread_ratio(generated, originals)
    flags = []
    if not spread["median"] >= COLLAPSED_SPREAD:  # also when undefined: fewer than two generated models
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
    "collapsed": "the generated models barely differ from each other (median spread {spread:.2f} of the originals'): "
    "the generator collapsed; check the autoencoder's reconstruction and the latent noise",
    "copies": "{replicas:.0f}% of the generated models are replicas of training snapshots: "
    "the generator memorized them; "
    "collect a more varied zoo (a higher --lr, more --runs)",
    "non-finite": "{nonfinite:.0f}% of the generated models contain NaN or Inf",
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
