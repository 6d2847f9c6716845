"""Collecting checkpoints: train a base model, then keep training only the selected parameters
and snapshot them K times. Also the on-disk zoo format.

Protocol (per run): start from the base model, put it in eval mode — BatchNorm running statistics
stay frozen at the base model's values, so every snapshot is evaluated with exactly the function it
was trained as — train the selected parameters with SGD (momentum 0.9) at a high learning rate for
`burn_in` steps, then save one snapshot per step. A small learning rate gives near-copies; measured
on mnist1d-cnn: lr 0.05 → mean pairwise IoU of wrong predictions 0.94, lr 0.5 → 0.70 at the same
accuracy. Several runs (seeds) may be collected into one zoo.

A zoo directory holds
    manifest.json        task, selection, layout, per-snapshot metadata (run, seed, step, accuracies),
                         the same for the held-out snapshots
    params.safetensors   {"params": [K, D], "heldout": [H, D]} the flattened selected parameters
    base.safetensors     the full base model state_dict (everything that is not generated)
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import NndiffError
from .evaluate import evaluate_params, mean_offdiagonal, pairwise_iou
from .params import Layout
from .runtime import resolve_device, seed_everything
from .storage import load_json, load_tensors, save_json, save_tensors
from .tasks import ClassificationTask, get_task

ZOO_VERSION = 1


@dataclass
class CollectConfig:
    select: list[str] | None = None  # glob patterns over named_parameters(); None: the task's default
    k: int = 200  # snapshots in total, split evenly over runs
    runs: int = 1
    seed: int = 0
    lr: float | None = None  # None: the task's collect_lr
    momentum: float = 0.9
    burn_in: int = 100
    heldout: int = 100  # snapshots from one extra run (a new seed) that training never sees
    device: str = "auto"


@dataclass
class Zoo:
    task: str
    layout: Layout
    params: torch.Tensor  # [K, D]
    base_state: dict[str, torch.Tensor]
    snapshots: list[dict]  # per row of params: run, seed, step, val_acc, test_acc
    info: dict = field(default_factory=dict)  # select patterns, collection config, base metrics
    # Held-out originals: what a genuinely new model from the same collection process looks like.
    heldout: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    heldout_snapshots: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return self.params.shape[0]

    def model(self, task: ClassificationTask) -> nn.Module:
        """A fresh model of the task holding the base weights."""
        model = task.make_model()
        try:
            model.load_state_dict(self.base_state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0:3]
            raise NndiffError(f"the zoo's base model does not fit task {task.name!r}: {' '.join(first)}") from None
        self.layout.check_model(model)
        return model

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        save_tensors(d / "base.safetensors", self.base_state)
        save_tensors(d / "params.safetensors", {"params": self.params, "heldout": self.heldout.reshape(-1, self.layout.size)})
        manifest = {
            "format": "nndiff-zoo",
            "version": ZOO_VERSION,
            "task": self.task,
            "count": len(self),
            "dim": self.layout.size,
            "layout": self.layout.to_json(),
            "snapshots": self.snapshots,
            "heldout": self.heldout_snapshots,
            **self.info,
        }
        save_json(d / "manifest.json", manifest)  # written last: its presence means the zoo is complete

    @classmethod
    def load(cls, directory: str | Path) -> "Zoo":
        d = Path(directory)
        if not d.is_dir():
            raise NndiffError(f"zoo directory {d} does not exist; create one with `nndiff collect --out {d}`")
        if not (d / "manifest.json").is_file():
            raise NndiffError(f"{d} is not a zoo (no manifest.json); create one with `nndiff collect --out {d}`")
        m = load_json(d / "manifest.json")
        if not isinstance(m, dict) or m.get("format") != "nndiff-zoo":
            raise NndiffError(f"{d / 'manifest.json'} is not an nndiff zoo manifest")
        layout = Layout.from_json(m.get("layout", []))
        tensors = load_tensors(d / "params.safetensors")
        params = tensors.get("params")
        if params is None or params.ndim != 2 or params.shape[1] != layout.size:
            shape = None if params is None else list(params.shape)
            raise NndiffError(f"{d / 'params.safetensors'} holds params of shape {shape}, but the manifest's layout needs [K, {layout.size}]")
        snapshots = m.get("snapshots", [])
        if len(snapshots) != params.shape[0]:
            raise NndiffError(f"{d}: manifest lists {len(snapshots)} snapshots but params.safetensors holds {params.shape[0]}")
        heldout = tensors.get("heldout", torch.empty(0, layout.size))
        heldout_snapshots = m.get("heldout", [])
        if heldout.ndim != 2 or heldout.shape[1] != layout.size or len(heldout_snapshots) != heldout.shape[0]:
            raise NndiffError(f"{d}: held-out snapshots of shape {list(heldout.shape)} do not match the manifest "
                              f"({len(heldout_snapshots)} listed, layout size {layout.size})")
        for name, rows in (("snapshot", params), ("held-out snapshot", heldout)):
            if not torch.isfinite(rows).all():
                bad = int((~torch.isfinite(rows)).any(1).sum())
                raise NndiffError(f"{d}: {bad} {name}(s) contain NaN or Inf; re-collect with a smaller learning rate")
        skip = {"format", "version", "task", "count", "dim", "layout", "snapshots", "heldout"}
        info = {k: v for k, v in m.items() if k not in skip}
        return cls(m["task"], layout, params.float(), load_tensors(d / "base.safetensors"), snapshots, info,
                   heldout.float(), heldout_snapshots)


def train_base(task: ClassificationTask, seed: int, device: torch.device, progress: bool = True) -> nn.Module:
    """Train the task's model from scratch: AdamW with a one-cycle schedule for task.base_epochs."""
    gen = seed_everything(seed)
    model = task.make_model().to(device)
    train = task.splits()["train"].to(device)
    steps_per_epoch = max(1, len(train) // task.batch_size)
    total = task.base_epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=task.base_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.base_lr, total_steps=total)
    model.train()
    bar = tqdm(total=total, desc="base model", disable=not progress, leave=False)
    for _ in range(task.base_epochs):
        order = torch.randperm(len(train), generator=gen).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * task.batch_size : (i + 1) * task.batch_size]
            loss = task.train_step(model, train.x[idx], train.y[idx], opt)
            sched.step()
            bar.update()
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    model.eval()
    return model


def snapshot_trajectory(task, base: nn.Module, layout: Layout, count: int, seed: int, lr: float, momentum: float,
                        burn_in: int, device: torch.device, bar=None) -> list[torch.Tensor]:
    """One collection run: `count` snapshots of the selected parameters, one per SGD step after burn-in."""
    model = copy.deepcopy(base).to(device)
    model.eval()  # BatchNorm keeps the base model's running statistics; see module docstring
    selected = set(layout.names)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in selected)
        if name in selected:
            params.append(p)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    train = task.splits()["train"].to(device)
    gen = torch.Generator().manual_seed(seed)
    snaps = []
    for step in range(burn_in + count):
        idx = torch.randint(len(train), (task.batch_size,), generator=gen).to(device)
        loss = task.train_step(model, train.x[idx], train.y[idx], opt)
        if not math.isfinite(loss):
            raise NndiffError(f"collection diverged (loss {loss}) at step {step} with lr {lr}; use a smaller --lr")
        if step >= burn_in:
            snaps.append(layout.flatten(dict(model.named_parameters())).cpu())
        if bar is not None:
            bar.update()
    return snaps


def collect(task: ClassificationTask | str, config: CollectConfig = CollectConfig(), progress: bool = True,
            base_state: dict[str, torch.Tensor] | None = None) -> Zoo:
    """Collect `config.k` snapshots of the selected parameters (plus `config.heldout` held-out ones)
    from a base model: `base_state` if given, else one trained here."""
    task = get_task(task) if isinstance(task, str) else task
    if config.k < 1 or config.runs < 1 or config.k < config.runs or config.heldout < 0:
        raise NndiffError(f"need k >= runs >= 1 and heldout >= 0 (got k={config.k}, runs={config.runs}, heldout={config.heldout})")
    device = resolve_device(config.device)
    select = config.select or task.default_select
    lr = config.lr if config.lr is not None else task.collect_lr
    t0 = time.perf_counter()
    if base_state is None:
        base = train_base(task, config.seed, device, progress)
    else:
        base = task.make_model()
        try:
            base.load_state_dict(base_state)
        except RuntimeError as e:
            raise NndiffError(f"the base model does not fit task {task.name!r}: {str(e).strip().splitlines()[0]}") from None
        base = base.to(device).eval()
    layout = Layout.select(base, select)
    splits = task.splits()
    val, test = splits["val"].to(device), splits["test"].to(device)
    base_metrics = {"val_acc": task.evaluate(base, val).accuracy, "test_acc": task.evaluate(base, test).accuracy}

    per_run = [config.k // config.runs + (r < config.k % config.runs) for r in range(config.runs)]
    if config.heldout:
        per_run.append(config.heldout)  # the last run is held out
    rows, snapshots = [], []
    bar = tqdm(total=sum(n + config.burn_in for n in per_run), desc="collect", disable=not progress, leave=False)
    for run, count in enumerate(per_run):
        seed = config.seed * 1000 + run + 1
        snaps = snapshot_trajectory(task, base, layout, count, seed, lr, config.momentum, config.burn_in, device, bar)
        for i, v in enumerate(snaps):
            rows.append(v)
            snapshots.append({"run": run, "seed": seed, "step": config.burn_in + i + 1})
    bar.close()

    params = torch.stack(rows)
    evals = evaluate_params(task, base, layout, params, {"val": val, "test": test}, progress)
    for meta, va, te in zip(snapshots, evals["val"].accuracy.tolist(), evals["test"].accuracy.tolist()):
        meta["val_acc"], meta["test_acc"] = va, te
    k = config.k
    diversity = mean_offdiagonal(pairwise_iou(evals["test"].predictions[:k], splits["test"].y.cpu()))
    if diversity > 0.995:
        warnings.warn(f"the {config.k} snapshots are near-copies (mean pairwise IoU of wrong test predictions "
                      f"{diversity:.4f}); raise --lr or --burn-in, or collect more --runs", stacklevel=2)
    info = {
        "select": list(select),
        "mean_pairwise_iou": diversity,
        "collect": {**asdict(config), "select": list(select), "lr": lr, "device": str(device)},
        "base": base_metrics,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    base_state = {name: v.cpu() for name, v in base.state_dict().items()}
    return Zoo(task.name, layout, params[:k], base_state, snapshots[:k], info, params[k:], snapshots[k:])
