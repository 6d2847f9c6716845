"""`--lr auto`: find the collection learning rate for a model nobody tuned it for.

Too small a learning rate gives snapshots that are copies of each other (the generator then learns
a point); too large drifts them away from the base model's accuracy. The probe starts from the
base model and runs the beginning of a collection (its burn-in, then 8 snapshots 8 intervals apart)
at each rung of a geometric ladder around the task's hint (its `collect_lr`). For each rung it
measures the snapshots' mean validation accuracy, how far apart consecutive snapshots lie relative
to the subset's own scale, and the mean pairwise IoU of their wrong validation predictions.

It picks, among the rungs whose snapshots keep the base model's validation accuracy within
`tolerance` and do not run away (consecutive ones at most the subset's own scale apart), the one
whose snapshots lie furthest apart — preferring rungs whose snapshots do not
all make the same validation mistakes (copies by their predictions). The spacing grows with the
learning rate until SGD starts bouncing in a valley, where it falls again (digits-cnn: 7.1e-3 at
lr 2, 6.4e-3 at lr 6.3, whose 200 snapshots then all make the same validation mistakes). When the
choice sits at an end of the ladder, the ladder is extended in that direction; when the best rung
still gives copies and the next one loses accuracy, rates between the two are tried. Nothing here
looks at the test set.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from nndiff.errors import NndiffError
from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import COPIES_IOU, mean_offdiagonal, pairwise_iou

STEP = 10**0.5  # ratio between rungs


RUNGS = 2  # rungs on each side of the hint


EXTEND = 6  # more rungs allowed beyond an end the choice sits at (up to 1000x the hint)


BURN_IN = 100  # at most this many probe steps before its first snapshot (the collection's --burn-in if fewer)


SNAPSHOTS = 8  # snapshots per rung


SPACING = 8  # collection intervals (--every) between two probe snapshots: whole networks, whose early snapshots


# dip below the base before SGD settles, are judged over 640 steps (at 80 steps mnist1d-convnet got 0.001
# instead of 0.01)
MIN_MOVE = 1e-4  # relative distance between consecutive snapshots below which they are copies


MAX_MOVE = 1.0  # ... above which the parameters run away (a GRU's linear head kept its accuracy up to lr 5000


# while its snapshots moved 2,300x its scale apart: the logits only grew); the chosen rungs of the
# built-in tasks move 0.006 to 0.08


REFINE = 3  # rungs added between a rung of copies and the first one that loses accuracy


def tolerance(samples: int) -> float:
    """Points of validation accuracy the probe's snapshots may lose against the base model: a
    quarter point, or one validation sample if that is more. The comparison is paired (the same
    samples, the mean of several snapshots), so it needs no binomial margin; it is tight because a
    whole collection runs longer than the probe and drifts further (on mnist1d-cnn at lr 1.6: 0.40
    points in the probe, 0.64 over the 200 snapshots)."""
    return max(0.25, 100 / samples)


def measure_rung(
    task, base, layout, val, *, lr: float, every: int, momentum: float, seed: int, device, burn_in: int = BURN_IN
) -> dict:
    from nndiff.zoo.trajectory import (  # the collection's own SGD: the probe measures what collection does
        Trajectory,
        snapshots,
    )

    trajectory = Trajectory(task, base, layout, seed, lr=lr, momentum=momentum, device=device)
    try:
        snaps = list(snapshots(trajectory, SNAPSHOTS, burn_in, SPACING * every))
    except NndiffError:
        return {"lr": lr, "diverged": True}
    params = torch.stack(snaps)
    if not torch.isfinite(params).all():
        return {"lr": lr, "diverged": True}
    ev = evaluate_params(task, base, layout, params, splits={"val": val}, progress=False)["val"]
    start = layout.flatten(dict(base.named_parameters())).detach().cpu().double()
    scale = float(start.pow(2).mean().sqrt()) or 1.0
    move = float((params[1:] - params[:-1]).double().pow(2).mean(1).sqrt().mean()) / scale
    return {
        "lr": lr,
        "diverged": False,
        "val_acc": float(ev.accuracy.mean()),
        "iou": mean_offdiagonal(pairwise_iou(ev.predictions, val.y.cpu())),
        "move": move,
    }


def choose_rate(rows: list[dict], base_acc: float, tol: float) -> dict | None:
    """Among rungs that keep accuracy and move, those that are not copies by their predictions
    first, the one whose snapshots lie furthest apart."""
    ok = [r for r in rows if not r["diverged"] and r["val_acc"] >= base_acc - tol and MIN_MOVE <= r["move"] <= MAX_MOVE]
    distinct = [r for r in ok if r["iou"] < COPIES_IOU]
    return max(distinct or ok, key=lambda r: r["move"]) if ok else None


def probe(
    task,
    base,
    layout,
    val,
    *,
    hint: float,
    every: int,
    momentum: float,
    seed: int,
    device,
    burn_in: int = BURN_IN,
    log=None,
) -> dict:
    """The chosen learning rate and the table it was chosen from (JSON-ready)."""
    t0 = time.perf_counter()
    base_acc = float(task.evaluate(base, val).accuracy)
    tol = tolerance(len(val))
    rows: dict[float, dict] = {}

    def at(lr: float) -> None:
        if lr not in rows:
            rows[lr] = measure_rung(
                task,
                base,
                layout,
                val,
                lr=lr,
                every=every,
                momentum=momentum,
                seed=seed,
                device=device,
                burn_in=min(burn_in, BURN_IN),
            )
            if log:
                log(format_row(rows[lr]))

    def keeps(r: dict) -> bool:
        return not r["diverged"] and r["val_acc"] >= base_acc - tol and r["move"] <= MAX_MOVE

    for j in range(-RUNGS, RUNGS + 1):
        at(hint * STEP**j)
    for _ in range(EXTEND):
        chosen, top = choose_rate(list(rows.values()), base_acc, tol), rows[max(rows)]
        if chosen is None and keeps(top) or chosen is not None and chosen["lr"] == top["lr"]:
            at(top["lr"] * STEP)  # even the largest rate keeps accuracy: go higher
        elif chosen is None:
            at(min(rows) / STEP)  # every rate loses accuracy: go lower
        else:
            break
    for _ in range(REFINE):
        # copies below, a loss of accuracy one rung above: try between them (geometric midpoint)
        chosen = choose_rate(list(rows.values()), base_acc, tol)
        if chosen is None or chosen["iou"] < COPIES_IOU:
            break
        lo = max(lr for lr, r in rows.items() if keeps(r))
        above = [lr for lr in rows if lr > lo]
        if not above:
            break
        at(math.sqrt(lo * min(above)))
    table = [rows[lr] for lr in sorted(rows)]
    chosen = choose_rate(table, base_acc, tol)
    if chosen is None:
        # The default must not stop a run: collect at the task's hint and say so (the doctor then grades the zoo).
        warnings.warn(
            f"--lr auto found no learning rate from {table[0]['lr']:.3g} to {table[-1]['lr']:.3g} whose snapshots "
            f"both move and keep the base model's validation accuracy ({base_acc:.2f}%, tolerance {tol:.2f}); "
            f"collecting at the task's collect_lr {hint:g}; give a rate with --lr",
            stacklevel=2,
        )
    return {
        "lr": hint if chosen is None else chosen["lr"],
        "fallback": chosen is None,
        "base_val_acc": base_acc,
        "tolerance": tol,
        "table": table,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def probe_lines(found: dict | None) -> list[str]:
    """The probe's table as `collect` and `run` print it (nothing without a probe)."""
    if not found:
        return []
    verb = "fell back to the task's" if found.get("fallback") else "chose"
    return [
        f"--lr auto {verb} {found['lr']:.4g} ({found['seconds']:.0f} s; base model validation accuracy "
        f"{found['base_val_acc']:.2f}%, tolerance {found['tolerance']:.2f} points):"
    ] + [format_row(r) for r in found["table"]]


def format_row(r: dict) -> str:
    if r["diverged"]:
        return f"      lr {r['lr']:<9.4g} diverged"
    return f"      lr {r['lr']:<9.4g} val acc {r['val_acc']:6.2f}%  IoU {r['iou']:.3f}  step {r['move']:.2e}"
