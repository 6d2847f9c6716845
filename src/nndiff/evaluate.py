"""Evaluation: accuracy of the originals, the generated models and the weight average.

Selection is honest: the "best" generated model is chosen by validation accuracy and reported with
its test accuracy; the maximum test accuracy is reported too, labelled as an oracle (it is what the
reference code calls "best", and it is chosen on the test set).

Longer than 250 lines because evaluating parameter sets, the metrics of a run and their printed
table are one chain.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .batched import predict_batched, trunk_and_head
from .memo import MEMO, context_key, row_digests, split_key
from .params import Layout, finite_rows, rows_where
from .runtime import all_gather, shard
from .uncertainty import REPLICATES, Bootstrap, compare, estimate, mean_accuracy


@dataclass
class GroupEvaluation:
    """N models on one split."""

    accuracy: torch.Tensor  # [N] percent
    predictions: torch.Tensor  # [N, n] predicted class per sample, on the CPU


def batchable(task) -> bool:
    """Whether the batched path computes what the task does: only for a ClassificationTask whose
    predictions are the default argmax of the logits (an overridden `predict` or `evaluate`, e.g.
    test-time augmentation, is always honoured by the plain path)."""
    from .tasks.base import ClassificationTask

    if not isinstance(task, ClassificationTask) or not task.batched_eval:
        return False
    return all(
        getattr(type(task), m) is getattr(ClassificationTask, m) and m not in vars(task)
        for m in ("predict", "evaluate")
    )


def evaluate_params(
    task,
    model: nn.Module,
    layout: Layout,
    params: torch.Tensor,
    splits: dict,
    progress: bool = True,
    batched: bool = True,
) -> dict[str, GroupEvaluation]:
    """Evaluate every row of `params` written into `model` on every split.

    Uses the batched path (frozen trunk once, generated head vectorized over models) when the task
    predicts by argmax and the model can be traced; its answer for one parameter set is checked
    against the plain `task.evaluate` path, and a disagreement falls back to one forward pass per
    model (with a warning), so the batched path can never silently differ from the model. Rows this
    process has evaluated on the same split before are answered from memo.py.
    """
    device = next(model.parameters()).device
    keys = {name: split_key(split) for name, split in splits.items()}
    if not len(params) or any(k is None for k in keys.values()):
        return _evaluate(task, model, layout, params, splits, progress, batched)
    # Vectors evaluated before in this process (the snapshots at collection, the generated models
    # at evaluation) are not evaluated again: memo.py keys them by everything their predictions depend on.
    context = context_key(task, model, layout, device, batched)
    rows = row_digests(params)
    todo = [i for i, r in enumerate(rows) if any((context, keys[n], r) not in MEMO.entries for n in splits)]
    skip = set(todo)
    cached = {n: {i: MEMO.get((context, keys[n], r)) for i, r in enumerate(rows) if i not in skip} for n in splits}
    missing = params if len(todo) == len(params) else params[todo]  # a copy only of what is not known
    fresh = _evaluate(task, model, layout, missing, splits, progress, batched) if todo else {}
    out = {}
    for name, split in splits.items():
        preds = torch.empty(len(params), len(split), dtype=torch.long)
        for i, p in cached[name].items():
            preds[i] = p
        if todo:
            preds[todo] = fresh[name].predictions.cpu()
            for i, p in zip(todo, fresh[name].predictions):
                MEMO.put((context, keys[name], rows[i]), p)
        out[name] = GroupEvaluation(_accuracy(preds, split.y.cpu()), preds)
    return out


def _evaluate(
    task, model: nn.Module, layout: Layout, params: torch.Tensor, splits: dict, progress: bool, batched: bool
):
    device = next(model.parameters()).device
    parts = trunk_and_head(model, layout) if batched and len(params) and batchable(task) else None
    if parts is not None:
        out = {}
        try:
            for name, split in splits.items():
                preds = predict_batched(parts, layout, params.to(device), split.x).cpu()
                out[name] = GroupEvaluation(_accuracy(preds, split.y.cpu()), preds)
        except Exception:  # a traced head that vmap cannot run (an op without a batching rule): the plain loop
            return _plain(task, model, layout, params, splits, progress)
        check = _plain(task, model, layout, params[:1], splits, progress=False)
        if all(torch.equal(check[name].predictions[0], out[name].predictions[0]) for name in splits):
            return out
        warnings.warn(
            "batched evaluation disagrees with the model's own predictions; evaluating one model at a time",
            stacklevel=2,
        )
    return _plain(task, model, layout, params, splits, progress)


def _plain(
    task, model: nn.Module, layout: Layout, params: torch.Tensor, splits: dict, progress: bool
) -> dict[str, GroupEvaluation]:
    """One `task.evaluate` per parameter set and split."""
    device = next(model.parameters()).device
    model = copy.deepcopy(model)
    preds = {name: [] for name in splits}
    for v in tqdm(params, desc="evaluate", disable=not progress, leave=False):
        layout.write(model, v.to(device))
        for name, split in splits.items():
            preds[name].append(task.evaluate(model, split).predictions)
    out = {}
    for name, split in splits.items():
        p = torch.stack(preds[name]) if preds[name] else torch.empty(0, len(split), dtype=torch.long)
        out[name] = GroupEvaluation(_accuracy(p, split.y.cpu()), p)
    return out


def evaluate_params_sharded(
    task, model: nn.Module, layout: Layout, params: torch.Tensor, splits: dict, progress: bool = True
) -> dict[str, GroupEvaluation]:
    """evaluate_params, with the rows shared out over the ranks of a torchrun job (every rank must
    call it; every rank gets all results). A single process evaluates everything itself."""
    mine = evaluate_params(task, model, layout, params[shard(len(params))], splits, progress)
    parts = all_gather({k: (v.accuracy.cpu(), v.predictions.cpu()) for k, v in mine.items()})
    return {
        k: GroupEvaluation(torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts])) for k in splits
    }


def _accuracy(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 100.0 * (preds == labels).double().mean(1)


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
    progress: bool = True,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict:
    """Metrics for the originals, the generated models (row i of `generated` is file i) and the
    weight average, with 95% intervals on the comparisons between them (paired bootstrap over test
    samples and models; see uncertainty.py)."""
    model = zoo.model(task).to(device)
    splits = {name: task.splits()[name].to(device) for name in ("val", "test")}
    labels = splits["test"].y.cpu()
    finite = finite_rows(generated)
    files = finite.nonzero().squeeze(1).tolist()  # the file number of each evaluated model
    gen_evals = evaluate_params_sharded(task, model, zoo.layout, rows_where(generated, finite), splits, progress)
    gen_val, gen_test = gen_evals["val"].accuracy.tolist(), gen_evals["test"].accuracy.tolist()
    ens = evaluate_params(task, model, zoo.layout, zoo.params.mean(0, keepdim=True), splits, progress=False)
    orig_eval = evaluate_params_sharded(task, model, zoo.layout, zoo.params, {"test": splits["test"]}, progress=False)[
        "test"
    ]
    orig_val = [s["val_acc"] for s in zoo.snapshots]
    orig_test = orig_eval.accuracy.tolist()
    best_orig = max(orig_test)
    selected = None
    if gen_test:
        selected = select_by_val(gen_val, gen_test)
        selected["index"] = files[selected["index"]]  # the file number in generated/, counting non-finite ones
    total = len(generated)
    generated_metrics = {
        "count": total,
        "evaluated": len(gen_test),
        "nonfinite": total - len(gen_test),
        "test_acc": summarize(gen_test),
        "val_acc": summarize(gen_val),
        "selected_by_val": selected,
        "oracle_best_test": max(gen_test) if gen_test else None,  # chosen on test: for comparison only
        # a non-finite model is a failure in every share
        "within_1pt_of_best_original": sum(a >= best_orig - 1.0 for a in gen_test) / total if total else 0.0,
    }
    orig_sel = select_by_val(orig_val, orig_test)
    metrics = {
        "task": zoo.task,
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
    if gen_test:
        metrics["comparisons"] = compare_groups(
            gen_evals["test"].predictions,
            orig_eval.predictions,
            ens["test"].predictions,
            labels,
            selected_files=(files.index(selected["index"]), orig_sel["index"]),
            replicates=replicates,
            seed=seed,
        )
    return metrics


def compare_groups(
    gen: torch.Tensor,
    orig: torch.Tensor,
    average: torch.Tensor,
    labels: torch.Tensor,
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


def format_table(metrics: dict) -> str:
    """A plain-text table of test accuracies (percent)."""
    rows = [("group", "count", "best", "mean", "median", "min", "val-selected")]
    o, g = metrics["originals"], metrics["generated"]
    sel_o = f"{o['selected_by_val']['test_acc']:.2f}"
    sel_g = f"{g['selected_by_val']['test_acc']:.2f}" if g["selected_by_val"] else "-"
    for name, group, sel in (("originals", o, sel_o), ("generated", g, sel_g)):
        t = group["test_acc"]
        rows.append(
            (
                name,
                str(group["count"]),
                f"{t['best']:.2f}",
                f"{t['mean']:.2f}",
                f"{t['median']:.2f}",
                f"{t['min']:.2f}",
                sel,
            )
        )
    e = metrics["weight_average"]["test_acc"]
    rows.append(("weight average", "1", f"{e:.2f}", f"{e:.2f}", f"{e:.2f}", f"{e:.2f}", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("test accuracy (%). 'best' is the maximum on test (an oracle, for comparison with the paper);")
    lines.append("'val-selected' is the test accuracy of the model with the best validation accuracy.")
    if g.get("nonfinite"):
        lines.append(
            f"{g['nonfinite']} of {g['count']} generated model(s) contained NaN/Inf: not evaluated, counted as "
            "failures."
        )
    lines.append(
        f"{100 * g['within_1pt_of_best_original']:.0f}% of generated models are within 1 point of the best original."
    )
    lines += comparison_lines(metrics)
    return "\n".join(lines)


def comparison_lines(metrics: dict) -> list[str]:
    """The comparisons of metrics.json in words, each with its uncertainty."""
    c = metrics.get("comparisons")
    if not c:
        return []
    return [
        f"Mean test accuracy, generated vs originals: {compare(c['generated_minus_originals'], 'higher', 'lower')}.",
        "Mean test accuracy, generated vs the weight average: "
        f"{compare(c['generated_minus_weight_average'], 'higher', 'lower')}.",
        "Val-selected generated vs val-selected original: "
        f"{compare(c['selected_generated_minus_selected_original'], 'higher', 'lower')}.",
    ]
