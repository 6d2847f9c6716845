"""Accuracies of many parameter vectors on a split: batched where the model traces, one by one otherwise."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from nndiff.evaluation.batched import predict_batched, trunk_and_head
from nndiff.evaluation.memo import MEMO, context_key, row_digests, split_key
from nndiff.params.layout import Layout
from nndiff.params.rows import row_blocks
from nndiff.runtime.distributed import all_gather, shard


@dataclass
class GroupEvaluation:
    """N models on one split."""

    accuracy: torch.Tensor  # [N] percent
    predictions: torch.Tensor  # [N, n] predicted class per sample, on the CPU


def batchable(task) -> bool:
    """Whether the batched path computes what the task does: only for a ClassificationTask whose
    predictions are the default argmax of the logits (an overridden `predict` or `evaluate`, e.g.
    test-time augmentation, is always honoured by the plain path)."""
    from nndiff.tasks.base import ClassificationTask

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
    *,
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
        return _evaluate(task, model, layout, params, splits=splits, progress=progress, batched=batched)
    # Vectors evaluated before in this process (the snapshots at collection, the generated models
    # at evaluation) are not evaluated again: memo.py keys them by everything their predictions depend on.
    context = context_key(task, model, layout, device, batched=batched)
    rows = row_digests(params)
    todo = [i for i, r in enumerate(rows) if any((context, keys[n], r) not in MEMO.entries for n in splits)]
    skip = set(todo)
    cached = {n: {i: MEMO.get((context, keys[n], r)) for i, r in enumerate(rows) if i not in skip} for n in splits}
    # the rows not known: all of them as they are, or copied a block at a time (at 1M parameters a
    # copy of most of a zoo's rows is most of a gigabyte)
    every = len(todo) == len(params)
    parts = [todo] if every else [todo[b] for b in row_blocks(len(todo), params.shape[1])]
    fresh = [
        _evaluate(
            task, model, layout, params if every else params[part], splits=splits, progress=progress, batched=batched
        )
        for part in parts
    ]
    out = {}
    for name, split in splits.items():
        preds = torch.empty(len(params), len(split), dtype=torch.long)
        for i, p in cached[name].items():
            preds[i] = p
        for part, evaluated in zip(parts, fresh):
            preds[part] = evaluated[name].predictions.cpu()
            for i, p in zip(part, evaluated[name].predictions):
                MEMO.put((context, keys[name], rows[i]), p)
        out[name] = GroupEvaluation(_accuracy(preds, split.y.cpu()), preds)
    return out


def _evaluate(
    task, model: nn.Module, layout: Layout, params: torch.Tensor, *, splits: dict, progress: bool, batched: bool
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
            return _plain(task, model, layout, params, splits=splits, progress=progress)
        check = _plain(task, model, layout, params[:1], splits=splits, progress=False)
        if all(torch.equal(check[name].predictions[0], out[name].predictions[0]) for name in splits):
            return out
        warnings.warn(
            "batched evaluation disagrees with the model's own predictions; evaluating one model at a time",
            stacklevel=2,
        )
    return _plain(task, model, layout, params, splits=splits, progress=progress)


def _plain(
    task, model: nn.Module, layout: Layout, params: torch.Tensor, *, splits: dict, progress: bool
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
    task, model: nn.Module, layout: Layout, params: torch.Tensor, *, splits: dict, progress: bool = True
) -> dict[str, GroupEvaluation]:
    """evaluate_params, with the rows shared out over the ranks of a torchrun job (every rank must
    call it; every rank gets all results). A single process evaluates everything itself."""
    mine = evaluate_params(task, model, layout, params[shard(len(params))], splits=splits, progress=progress)
    parts = all_gather({k: (v.accuracy.cpu(), v.predictions.cpu()) for k, v in mine.items()})
    return {
        k: GroupEvaluation(torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts])) for k in splits
    }


def _accuracy(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 100.0 * (preds == labels).double().mean(1)
