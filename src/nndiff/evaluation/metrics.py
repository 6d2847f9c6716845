"""Evaluation: accuracy of the originals, the generated models and the weight average.

Selection is honest: the "best" generated model is chosen by validation accuracy and reported with
its test accuracy; the maximum test accuracy is reported too, labelled as an oracle (it is what the
reference code calls "best", and it is chosen on the test set).

A generated model with NaN or Inf is not evaluated and is a failure: accuracy 0, in every mean, median,
minimum and share, here and in the health check (`FAILED`); it is never the validation-selected one.
"""

from __future__ import annotations

import statistics
from typing import Sequence

import torch

from nndiff.evaluation.engine import evaluate_params, evaluate_params_sharded
from nndiff.evaluation.uncertainty import REPLICATES, Bootstrap, estimate, mean_accuracy
from nndiff.params.rows import finite_rows, rows_where
from nndiff.tasks import named_task, task_fingerprint

COPIES_IOU = 0.995  # models whose wrong validation predictions agree this much (mean pairwise IoU) are copies


def pairwise_iou(preds: torch.Tensor, labels: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of the sets of wrongly predicted samples, |W_i ∩ W_j| / |W_i ∪ W_j|.

    preds: [N, n] predictions of N models on n samples; other: [M, n] (default: preds). Returns
    [N, M]. Two models that are both never wrong count as identical (IoU 1).
    """
    wa = (preds != labels).float()
    wb = wa if other is None else (other != labels).float()
    inter = wa @ wb.T
    union = wa.sum(1, keepdim=True) + wb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def mean_offdiagonal(m: torch.Tensor) -> float:
    n = m.shape[0]
    if n < 2:
        return float("nan")
    return float((m.sum() - m.diagonal().sum()) / (n * (n - 1)))


FAILED = -1  # the prediction a non-finite model is given on every sample: never a label, so accuracy 0


def with_failures(accs: torch.Tensor | list, finite: torch.Tensor) -> list[float]:
    """Accuracies of the finite models, placed at their rows among all, and 0 for the non-finite ones."""
    out = [0.0] * len(finite)
    for row, acc in zip(finite.nonzero().squeeze(1).tolist(), list(accs)):
        out[row] = float(acc)
    return out


def summarize(accs: Sequence[float]) -> dict[str, float]:
    if not accs:
        return {"best": float("nan"), "mean": float("nan"), "median": float("nan"), "min": float("nan")}
    return {"best": max(accs), "mean": statistics.fmean(accs), "median": statistics.median(accs), "min": min(accs)}


def select_by_val(val: Sequence[float], test: Sequence[float]) -> dict[str, float | int]:
    """The model with the highest validation accuracy (first on ties) and its test accuracy."""
    i = max(range(len(val)), key=lambda j: (val[j], -j))
    return {"index": i, "val_acc": val[i], "test_acc": test[i]}


def compute_metrics(
    task,
    zoo,
    generated: torch.Tensor,
    device: torch.device,
    *,
    progress: bool = True,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict:
    """Metrics for the originals, the generated models (row i of `generated` is file i) and the
    weight average, with 95% intervals on the comparisons between them (paired bootstrap over test
    samples and models; see uncertainty.py)."""
    zoo = zoo.with_accuracies(task)  # a zoo recorded without a task: its snapshots measured now
    model = zoo.model(task).to(device)
    splits = {name: task.splits()[name].to(device) for name in ("val", "test")}
    labels = splits["test"].y.cpu()
    finite = finite_rows(generated)
    files = finite.nonzero().squeeze(1).tolist()  # the file number of each evaluated model
    gen_evals = evaluate_params_sharded(
        task, model, zoo.layout, rows_where(generated, finite), splits=splits, progress=progress
    )
    gen_val, gen_test = (with_failures(gen_evals[s].accuracy, finite) for s in ("val", "test"))
    gen_preds = torch.full((len(generated), len(labels)), FAILED, dtype=torch.long)
    gen_preds[finite] = gen_evals["test"].predictions
    ens = evaluate_params(task, model, zoo.layout, zoo.params.mean(0, keepdim=True), splits=splits, progress=False)
    orig_eval = evaluate_params_sharded(
        task, model, zoo.layout, zoo.params, splits={"test": splits["test"]}, progress=False
    )["test"]
    orig_val = [s["val_acc"] for s in zoo.snapshots]
    orig_test = orig_eval.accuracy.tolist()
    oracle_best_orig = max(orig_test)  # chosen on the test set: the share below is an oracle comparison
    selected = None
    if files:  # chosen among the evaluated models only
        selected = select_by_val([gen_val[f] for f in files], [gen_test[f] for f in files])
        selected["index"] = files[selected["index"]]  # the file number in generated/, counting non-finite ones
    total = len(generated)
    generated_metrics = {
        "count": total,
        "evaluated": len(files),
        "nonfinite": total - len(files),
        "test_acc": summarize(gen_test),
        "val_acc": summarize(gen_val),
        "selected_by_val": selected,
        "oracle_best_test": max(gen_test) if files else None,  # chosen on test: for comparison only
        # share of all generated models (failures included) within 1 point of the best original on
        # test: an oracle yardstick (the best original is chosen on the test set), for the paper's sake
        "oracle_within_1pt_of_best_original": (
            sum(a >= oracle_best_orig - 1.0 for a in gen_test) / total if total else 0.0
        ),
    }
    orig_sel = select_by_val(orig_val, orig_test)
    spec = zoo.task if zoo.task is not None else named_task()  # recorded without one: the one named
    metrics = {
        "task": spec,
        "task_fingerprint": task_fingerprint(spec) if spec else None,  # the task's code, as it was measured with
        "base": zoo.info.get("base"),
        "originals": {
            "count": len(orig_test),
            "test_acc": summarize(orig_test),
            "val_acc": summarize(orig_val),
            "selected_by_val": orig_sel,
            "mean_pairwise_iou_val": zoo.info.get("mean_pairwise_iou_val"),
        },
        "generated": generated_metrics,
        "weight_average": {"val_acc": ens["val"].accuracy.item(), "test_acc": ens["test"].accuracy.item()},
    }
    if files:
        metrics["comparisons"] = compare_groups(
            gen_preds,
            orig_eval.predictions,
            ens["test"].predictions,
            labels,
            selected_files=(selected["index"], orig_sel["index"]),
            replicates=replicates,
            seed=seed,
        )
    return metrics


def compare_groups(
    gen: torch.Tensor,
    orig: torch.Tensor,
    average: torch.Tensor,
    labels: torch.Tensor,
    *,
    selected_files: tuple[int, int],
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict:
    """Generated vs originals vs the weight average on the test set, each difference with its 95%
    interval; the test samples are resampled once per replicate for all three (a paired bootstrap)."""
    boot = Bootstrap(len(labels), replicates, seed)
    correct = {"generated": gen == labels, "originals": orig == labels, "weight_average": average == labels}
    point, means = {}, {}
    for k, c in correct.items():
        point[k], means[k] = mean_accuracy(boot, c)
    g, o = selected_files
    sel_point, sel_gen = mean_accuracy(boot, correct["generated"][[g]])
    sel_orig_point, sel_orig = mean_accuracy(boot, correct["originals"][[o]])
    return {
        "test_acc_mean": {k: estimate(point[k], means[k]) for k in means},
        "generated_minus_originals": estimate(
            point["generated"] - point["originals"], means["generated"] - means["originals"]
        ),
        "generated_minus_weight_average": estimate(
            point["generated"] - point["weight_average"], means["generated"] - means["weight_average"]
        ),
        "selected_generated_minus_selected_original": estimate(sel_point - sel_orig_point, sel_gen - sel_orig),
        "bootstrap": {
            "replicates": replicates,
            "confidence": 0.95,
            "seed": seed,
            "resampled": "test samples (shared by every group) and each group's models",
        },
    }
