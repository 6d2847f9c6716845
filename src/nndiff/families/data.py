"""A family run's data: the trunk (trained once), its features for every task and split, and the
zoo of heads over the tasks (K snapshots per task from one common initialization).

    OUT/family/base.safetensors      the trunk's model, trained once on the base task
    OUT/family/heads.safetensors     {"params": [T * K, D] heads, task-major; "init": [D] the common start}
    OUT/family/manifest.json         the family, settings, the task split and each row's task, step, accuracies
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.families.family import code_text, split_tasks
from nndiff.families.heads import correct, features, train_heads
from nndiff.io.files import load_json, save_json
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.runtime.device import seed_everything
from nndiff.runtime.stage import Stage
from nndiff.tasks import get_task
from nndiff.zoo.format import load_base
from nndiff.zoo.trajectory import train_base

SPLITS = ("train", "val", "test")


def trunk(task, config, out: Path, progress: bool):
    """The base task's model, trained once (then read back from OUT/family/base.safetensors)."""
    path = out / "family" / "base.safetensors"
    if path.is_file():
        return load_base(task, load_tensors(path))
    if config.base_epochs:
        task.base_epochs = config.base_epochs
    model = train_base(task, config.seed, torch.device("cpu"), progress, Stage(out / "family"))
    save_tensors(path, model.state_dict())
    return model


def task_features(family, model, codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The trunk's features of x as the tasks see it: [N, F] when tasks share their inputs, else [T, N, F]."""
    if family.transform is None:
        return features(model, family.head, x)
    return torch.stack([features(model, family.head, family.transform(code, x)) for code in codes])


def check_family_data(family, codes: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> None:
    """What a family's relabel and transform give, checked on two tasks and a few examples before any
    work: one line naming what is wrong."""
    where = f"family {family.name}"
    try:
        got = family.labels(codes[:2], labels[:8])
    except Exception as e:
        raise NndiffError(f"{where}: relabel(codes, labels) raised {type(e).__name__}: {e}") from e
    if not isinstance(got, torch.Tensor) or got.shape != (min(2, len(codes)), min(8, len(labels))) \
            or got.dtype.is_floating_point or int(got.min()) < 0 or int(got.max()) >= family.classes:
        what = f"{got.dtype} {list(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise NndiffError(f"{where}: relabel(codes, labels) must give [tasks, examples] integer labels below "
                          f"{family.classes} (got {what})")
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


def load_data(family, config, out: Path, codes: torch.Tensor, progress: bool):
    """The trunk, and for every split its features and the base labels [N]."""
    task = get_task(family.base_task)
    splits = task.splits()
    check_family_data(family, codes, splits["val"].x, splits["val"].y)
    model = trunk(task, config, out, progress)
    caps = family.samples or {}
    xs = {k: splits[k].x[: caps.get(k)] for k in SPLITS}
    feats = {k: task_features(family, model, codes, xs[k]) for k in SPLITS}
    return model, feats, {k: splits[k].y[: caps.get(k)] for k in SPLITS}


def collect(family, config, feats, labels, out: Path, codes) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every task's heads (K per task, task-major) from one common initialization."""
    d = out / "family"
    if (d / "manifest.json").is_file() and (d / "heads.safetensors").is_file():
        manifest = load_json(d / "manifest.json")
        if manifest.get("settings") == config.settings() and manifest.get("family") == family.name:
            state = load_tensors(d / "heads.safetensors")
            return state["params"], state["init"], manifest
    seed_everything(config.seed)
    init_layer = torch.nn.Linear(feats["train"].shape[-1], family.classes)
    init = torch.cat([init_layer.weight.detach().reshape(-1), init_layer.bias.detach()])
    keep = tuple(config.steps - i * config.every for i in reversed(range(config.snapshots)))
    if keep[0] < 1:
        raise NndiffError(f"{config.snapshots} snapshots {config.every} steps apart need over {config.steps} steps")
    t0 = time.perf_counter()
    _, kept = train_heads(init, feats["train"], family.labels(codes, labels["train"]), family.classes,
                          config.steps, config.lr, config.seed, keep)
    rows = torch.stack([kept[s] for s in keep], 1).reshape(-1, init.numel())  # task-major
    accs = {}
    for split in ("val", "test"):
        right = row_correct(rows, feats[split], family.labels(codes, labels[split]), len(keep), family.classes)
        accs[split] = (right.float().mean(1) * 100).tolist()
    tasks = split_tasks(len(codes), config.seed)
    manifest = {
        "format": "nndiff-family",
        "family": family.name,
        "settings": config.settings(),
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


def row_correct(rows: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, per_task: int, classes: int):
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
