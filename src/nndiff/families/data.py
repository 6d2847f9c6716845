"""A family run's data: the trunk (trained once), its features for every task and split, and the
zoo of heads over the tasks (K snapshots per task from one common initialization).

    OUT/family/base.safetensors      the trunk's model, trained once on the base task
    OUT/family/heads.safetensors     {"params": [T * K, D] heads, task-major; "init": [D] the common start}
    OUT/family/manifest.json         the family, settings, the task split and each row's task, step, accuracies

The trunk and the heads are reused only where their key matches: a digest of the settings they
depend on and of the family's fingerprint (its code and data, registry.py), so a family edited in
place, another seed or another trunk budget trains them again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.families.family import code_text, split_tasks
from nndiff.families.heads import correct, features, train_heads
from nndiff.families.registry import fingerprint
from nndiff.io.files import load_json, save_json
from nndiff.io.tensors import load_metadata, load_tensors, save_tensors
from nndiff.runtime.device import seed_everything
from nndiff.runtime.stage import Stage
from nndiff.tasks import get_task
from nndiff.zoo.format import load_base
from nndiff.zoo.trajectory import train_base

SPLITS = ("train", "val", "test")


def key(settings: dict, family) -> str:
    """What a cached trunk or zoo of heads was made from: these settings and this family's code and data."""
    text = json.dumps([settings, fingerprint(family)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trunk(task, family, config, out: Path, *, progress: bool, stage: Stage | None = None):
    """The base task's model, trained once for these settings (then read back from
    OUT/family/base.safetensors); its training's progress is kept by the run's `stage`."""
    path, wanted = out / "family" / "base.safetensors", key(config.trunk_settings(), family)
    if path.is_file() and load_metadata(path).get("key") == wanted:
        return load_base(task, load_tensors(path))
    if config.base_epochs:
        task.base_epochs = config.base_epochs
    model = train_base(task, config.seed, torch.device("cpu"), progress, stage=stage, name="trunk")
    save_tensors(path, model.state_dict(), {"key": wanted})
    return model


def task_features(family, model, codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The trunk's features of x as the tasks see it: [N, F] when tasks share their inputs, else [T, N, F]."""
    if family.transform is None:
        return features(model, family.head, x)
    return torch.stack([features(model, family.head, family.transform(code, x)) for code in codes])


def check_family_data(family, model: torch.nn.Module, codes: torch.Tensor, x: torch.Tensor, *, labels: dict) -> None:
    """The family's contract, checked before any training: its head is a linear module of the base
    task's model, relabel gives every task integer labels below `classes` on every split, transform
    keeps the inputs' shape. One line naming what is wrong."""
    where = f"family {family.name}"
    module = dict(model.named_modules()).get(family.head)
    if not isinstance(module, torch.nn.Linear) or module.bias is None:
        what = "no module" if module is None else f"a {type(module).__name__}"
        raise NndiffError(f"{where}: head {family.head!r} must name a linear layer with a bias in the model of "
                          f"{family.base_task} (it names {what})")
    for split, y in labels.items():
        for start in range(0, len(codes), 64):  # every task, a few at a time (memory)
            _check_labels(family, codes[start : start + 64], y, f"{where} ({split} split)")
    if family.transform is not None:
        try:
            seen = family.transform(codes[0], x[:8])
        except Exception as e:
            raise NndiffError(f"{where}: transform(code, x) raised {type(e).__name__}: {e}") from e
        if not isinstance(seen, torch.Tensor) or seen.shape != x[:8].shape:
            what = list(seen.shape) if isinstance(seen, torch.Tensor) else type(seen).__name__
            raise NndiffError(
                f"{where}: transform(code, x) must keep the inputs' shape {list(x[:8].shape)} (got {what})"
            )


def _check_labels(family, codes: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    try:
        got = family.labels(codes, labels)
    except Exception as e:
        raise NndiffError(f"{where}: relabel(codes, labels) raised {type(e).__name__}: {e}") from e
    if not isinstance(got, torch.Tensor) or got.shape != (len(codes), len(labels)) or got.dtype.is_floating_point \
            or got.dtype == torch.bool:
        what = f"{got.dtype} {list(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise NndiffError(f"{where}: relabel(codes, labels) must give [tasks, examples] integer labels "
                          f"(got {what})")
    low, high = int(got.min()), int(got.max())
    if low < 0 or high >= family.classes:
        raise NndiffError(f"{where}: a task's labels run from {low} to {high}, outside the family's "
                          f"{family.classes} classes (0 to {family.classes - 1}); raise classes or fix relabel")


def check_contract(family, codes: torch.Tensor) -> None:
    """The family's contract (check_family_data) on its base task's model and data, before any work."""
    task = get_task(family.base_task)
    splits, caps = task.splits(), family.samples or {}
    check_family_data(family, task.make_model(), codes, splits["val"].x[:8],
                      labels={k: splits[k].y[: caps.get(k)] for k in SPLITS})


def load_data(family, config, out: Path, codes: torch.Tensor, *, progress: bool, stage: Stage | None = None):
    """The trunk, and for every split its features and the base labels [N]."""
    task = get_task(family.base_task)
    splits = task.splits()
    caps = family.samples or {}
    model = trunk(task, family, config, out, progress=progress, stage=stage)
    xs = {k: splits[k].x[: caps.get(k)] for k in SPLITS}
    feats = {k: task_features(family, model, codes, xs[k]) for k in SPLITS}
    return model, feats, {k: splits[k].y[: caps.get(k)] for k in SPLITS}


def collect_heads(family, config, feats, labels, *, out: Path, codes) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every task's heads (K per task, task-major) from one common initialization."""
    d, wanted = out / "family", key(config.heads_settings(), family)
    if (d / "manifest.json").is_file() and (d / "heads.safetensors").is_file():
        manifest = load_json(d / "manifest.json")
        if isinstance(manifest, dict) and manifest.get("key") == wanted:
            state = load_tensors(d / "heads.safetensors")
            return state["params"], state["init"], manifest
    seed_everything(config.seed)
    init_layer = torch.nn.Linear(feats["train"].shape[-1], family.classes)
    init = torch.cat([init_layer.weight.detach().reshape(-1), init_layer.bias.detach()])
    keep = tuple(config.steps - i * config.every for i in reversed(range(config.snapshots)))
    t0 = time.perf_counter()
    _, kept = train_heads(init, feats["train"], family.labels(codes, labels["train"]), family.classes,
                          steps=config.steps, lr=config.lr, seed=config.seed, keep=keep)
    rows = torch.stack([kept[s] for s in keep], 1).reshape(-1, init.numel())  # task-major
    accs = {}
    for split in ("val", "test"):
        right = row_correct(rows, feats[split], family.labels(codes, labels[split]), len(keep), classes=family.classes)
        accs[split] = (right.float().mean(1) * 100).tolist()
    tasks = split_tasks(len(codes), config.seed)
    manifest = {
        "format": "nndiff-family",
        "family": family.name,
        "settings": config.heads_settings(),
        "key": wanted,
        "seconds": round(time.perf_counter() - t0, 3),
        "snapshot_steps": list(keep),
        "codes": [code_text(c) for c in codes],
        "tasks": {k: v.tolist() for k, v in tasks.items()},
        "rows": [{"task": i // len(keep), "step": keep[i % len(keep)], "val_acc": accs["val"][i],
                  "test_acc": accs["test"][i]} for i in range(len(rows))],
    }
    save_tensors(d / "heads.safetensors", {"params": rows, "init": init})
    save_json(d / "manifest.json", manifest)
    return rows, init, manifest


def row_correct(rows: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, per_task: int, *, classes: int):
    """[T * K, N]: which examples each of the zoo's heads gets right (rows task-major, labels [T, N])."""
    if x.ndim == 2:
        return correct(rows, x, labels.repeat_interleave(per_task, 0), classes)
    return torch.cat([correct(rows[t * per_task : (t + 1) * per_task], x[t].expand(per_task, -1, -1),
                              labels[t].expand(per_task, -1), classes) for t in range(len(labels))])


def family_codes(family, config) -> torch.Tensor:
    """The family's tasks, or `config.tasks` of them drawn by the seed (a quick check)."""
    if not config.tasks or config.tasks >= len(family.codes):
        return family.codes
    order = torch.randperm(len(family.codes), generator=torch.Generator().manual_seed(config.seed))
    return family.codes[order[: config.tasks]]


def task_rows(rows: torch.Tensor, tasks: torch.Tensor, per_task: int) -> torch.Tensor:
    """[len(tasks), K, D]: the zoo's heads of these tasks."""
    return rows.view(-1, per_task, rows.shape[1])[tasks]
