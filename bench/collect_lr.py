"""How the collection learning rate sets the snapshots' diversity, measured on validation data only.

    python bench/collect_lr.py --task mnist1d-cnn --lrs 0.05 0.5 2.0     # a few minutes on 2 CPU cores

One base model per task, then one zoo per learning rate from it (the task's burn-in and spacing):
the snapshots' mean pairwise IoU of wrong validation predictions (1 = near-copies) and their mean
validation accuracy. The built-in tasks' `collect_lr` values are checked against this table;
the test split is never looked at.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

from nndiff.zoo.collect import collect
from nndiff.zoo.config import CollectConfig


def ladder(task: str, lrs: list[float], k: int, seed: int = 0) -> list[dict]:
    config = CollectConfig(k=k, heldout=0, seed=seed)
    first = collect(task, replace(config, lr=lrs[0]), progress=False)
    rows = []
    for lr in lrs:
        zoo = first if lr == lrs[0] else collect(task, replace(config, lr=lr), progress=False, base_state=first.base_state)
        val = [s["val_acc"] for s in zoo.snapshots]
        rows.append({"task": task, "lr": lr, "mean_pairwise_iou_val": zoo.info["mean_pairwise_iou_val"],
                     "val_acc_mean": statistics.fmean(val), "val_acc_min": min(val), "base_val_acc": zoo.info["base"]["val_acc"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("-k", type=int, default=200)
    args = parser.parse_args()
    rows = ladder(args.task, args.lrs, args.k)
    print("| task | lr | mean pairwise IoU (val) | val acc mean | val acc min | base val acc |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['task']} | {r['lr']:g} | {r['mean_pairwise_iou_val']:.3f} | {r['val_acc_mean']:.2f} | {r['val_acc_min']:.2f} | "
              f"{r['base_val_acc']:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
