"""What conditioning buys: calibration of requested vs achieved accuracy, and aimed sets for the
novelty plane.

A conditional generator is asked for validation accuracies spread over the range its snapshots
cover; each request is answered by a set of models whose mean validation and test accuracy are
measured. Validation is what the generator was conditioned on, so a calibrated generator meets
the request there; test accuracy shows whether that carries over to unseen data.
"""

from __future__ import annotations

import torch

from nndiff.evaluation.engine import evaluate_params
from nndiff.params.rows import finite_rows

CALIBRATION_POINTS = 5


GUIDANCES = (1.0, 3.0)  # the plain conditional model, and a stronger push towards the request


AIMS = (
    "median",
    "best",
)  # the requests placed on the novelty plane: the snapshots' median and best validation accuracy


def aim_name(aim: str, guidance: float) -> str:
    return f"aimed_{aim}_w{guidance:g}"


def aim_targets(zoo) -> dict[str, float]:
    vals = torch.tensor([float(s["val_acc"]) for s in zoo.snapshots], dtype=torch.float64)
    return {"median": float(vals.median()), "best": float(vals.max())}


def calibration_targets(zoo, points: int = CALIBRATION_POINTS) -> list[float]:
    """Evenly spaced requests from the worst to the best snapshot's validation accuracy."""
    vals = torch.tensor([float(s["val_acc"]) for s in zoo.snapshots])
    return torch.linspace(float(vals.min()), float(vals.max()), points, dtype=torch.float64).tolist()


def calibrate(
    generator, task, model, zoo, *, n: int = 50, seed: int = 0, guidances=GUIDANCES, points: int = CALIBRATION_POINTS
) -> list[dict]:
    """One row per (guidance, requested validation accuracy): the achieved mean accuracies."""
    device = next(model.parameters()).device
    splits = {name: task.splits()[name].to(device) for name in ("val", "test")}
    rows = []
    for w in guidances:
        for target in calibration_targets(zoo, points):
            params = generator.sample(n, seed, target_acc=target, guidance=w)
            params = params[finite_rows(params)]
            if not len(params):  # every model non-finite: nothing achieved to report
                nothing = {"val_acc_mean": None, "val_acc_std": None, "test_acc_mean": None, "error_val": None}
                rows.append({"guidance": w, "requested_val_acc": target, "count": 0, **nothing})
                continue
            ev = evaluate_params(task, model, zoo.layout, params, splits=splits, progress=False)
            val, test = ev["val"].accuracy, ev["test"].accuracy
            rows.append(
                {
                    "guidance": w,
                    "requested_val_acc": target,
                    "count": len(params),
                    "val_acc_mean": float(val.mean()),
                    "val_acc_std": float(val.std()) if len(val) > 1 else 0.0,
                    "test_acc_mean": float(test.mean()),
                    "error_val": float(val.mean()) - target,
                }
            )
    return rows


def aimed_sets(generator, zoo, n: int, seed: int = 0, *, guidances=GUIDANCES) -> dict[str, torch.Tensor]:
    """Models aimed at the snapshots' median and best validation accuracy, one set per guidance."""
    out = {}
    for aim, target in aim_targets(zoo).items():
        for w in guidances:
            params = generator.sample(n, seed, target_acc=target, guidance=w)
            out[aim_name(aim, w)] = params[finite_rows(params)]
    return out
