"""Collecting checkpoints: train a base model, then keep training only the selected parameters
and snapshot them K times. Also the on-disk zoo format.

Protocol (per run): start from the base model, put it in eval mode — BatchNorm running statistics
stay frozen at the base model's values, so every snapshot is evaluated with exactly the function it
was trained as — train the selected parameters with SGD (momentum 0.9) at a high learning rate for
`burn_in` steps, then save one snapshot every `every` steps (one per step by default; whole-network
tasks use a gentler learning rate and space their snapshots out instead). A small learning rate gives near-copies; measured
on mnist1d-cnn: lr 0.05 → mean pairwise IoU of wrong validation predictions 0.955, lr 0.5 → 0.835 at
nearly the same accuracy (bench/collect_lr.py). Several runs (seeds) may be collected into one zoo.

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
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import SEED_MAX, bounded, check_fields
from .errors import NndiffError
from .evaluate import evaluate_sharded, mean_offdiagonal, pairwise_iou
from .checkpoint import Progress, rng_state, set_rng_state
from .params import Layout
from .runtime import all_gather, broadcast, is_main, rank, resolve_device, seed_everything, world_size
from .storage import load_json, load_tensors, save_json, save_tensors
from .tasks import ClassificationTask, get_task, resolve_task_spec

ZOO_VERSION = 1
FILES = {"params": "params.safetensors", "base": "base.safetensors"}
CHECKPOINT_EVERY = 50  # collection steps between progress checkpoints


@dataclass
class CollectConfig:
    select: list[str] | None = None  # glob patterns over named_parameters(); None: the task's default
    k: int = bounded(200, low=1, integer=True, flag="-k")  # snapshots in total, split evenly over runs
    runs: int = bounded(1, low=1, integer=True, flag="--runs")
    seed: int = bounded(0, low=0, high=SEED_MAX, integer=True, flag="--seed")
    # "auto": found by a short probe from the base model (lr_probe.py); None: the task's collect_lr as it is
    lr: float | str | None = bounded("auto", low=0, low_open=True, optional=True, words=("auto",), flag="--lr")
    momentum: float = bounded(0.9, low=0, high=1, high_open=True)
    burn_in: int = bounded(100, low=0, integer=True, flag="--burn-in")
    # SGD steps between snapshots; None: the task's collect_every
    every: int | None = bounded(None, low=1, integer=True, optional=True, flag="--every")
    heldout: int = bounded(100, low=0, integer=True, flag="--heldout")  # snapshots from one extra run (a new seed) that training never sees
    device: str = "auto"
    data_root: str | None = None  # vision tasks: where the dataset lies (default: $NNDIFF_DATA_ROOT)
    base_epochs: int | None = bounded(None, low=1, integer=True, optional=True, flag="--epochs")  # None: the task's
    amp: bool = False  # bf16 autocast in base training and collection (evaluation stays float32)

    def validate(self) -> "CollectConfig":
        check_fields(self)
        if self.k < self.runs:
            raise NndiffError(f"-k {self.k} snapshots cannot be split over --runs {self.runs}; need k >= runs")
        if self.select is not None and (isinstance(self.select, str) or not all(isinstance(p, str) for p in self.select)):
            raise NndiffError(f"select must be a list of glob patterns such as ['bn1.*'] (got {self.select!r})")
        return self


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

    def make_task(self):
        """The task this zoo was collected on (vision tasks: reading the recorded data root)."""
        return get_task(self.task, self.info.get("data_root"))

    def model(self, task: ClassificationTask) -> nn.Module:
        """A fresh model of the task holding the base weights, in eval mode."""
        model = task.make_model()
        try:
            model.load_state_dict(self.base_state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0:3]
            raise NndiffError(f"the zoo's base model does not fit task {task.name!r}: {' '.join(first)}") from None
        self.layout.check_model(model)
        return model.eval()

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        save_tensors(d / FILES["base"], self.base_state)
        save_tensors(d / FILES["params"], {"params": self.params, "heldout": self.heldout.reshape(-1, self.layout.size)})
        manifest = {
            "format": "nndiff-zoo",
            "version": ZOO_VERSION,
            "task": self.task,
            "files": FILES,
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
        try:
            return cls._from_manifest(d, m)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise NndiffError(f"{d / 'manifest.json'} is malformed ({type(e).__name__}: {e}); re-collect the zoo") from None

    @classmethod
    def _from_manifest(cls, d: Path, m: dict) -> "Zoo":
        files = {**FILES, **m.get("files", {})}
        paths = {key: _inside(d, files[key]) for key in FILES}
        task = m["task"]
        if not isinstance(task, str):
            raise TypeError("task must be a string")
        layout = Layout.from_json(m.get("layout", []))
        tensors = load_tensors(paths["params"])
        params = tensors.get("params")
        if params is None or params.ndim != 2 or params.shape[1] != layout.size:
            shape = None if params is None else list(params.shape)
            raise NndiffError(f"{paths['params']} holds params of shape {shape}, but the manifest's layout needs [K, {layout.size}]")
        snapshots, heldout_snapshots = list(m.get("snapshots", [])), list(m.get("heldout", []))
        if len(snapshots) != params.shape[0]:
            raise NndiffError(f"{d}: manifest lists {len(snapshots)} snapshots but {paths['params'].name} holds {params.shape[0]}")
        heldout = tensors.get("heldout", torch.empty(0, layout.size))
        if heldout.ndim != 2 or heldout.shape[1] != layout.size or len(heldout_snapshots) != heldout.shape[0]:
            raise NndiffError(f"{d}: held-out snapshots of shape {list(heldout.shape)} do not match the manifest "
                              f"({len(heldout_snapshots)} listed, layout size {layout.size})")
        if not params.is_floating_point() or not heldout.is_floating_point():
            raise NndiffError(f"{paths['params']}: parameters must be floating point, got {params.dtype}")
        for name, rows in (("snapshot", params), ("held-out snapshot", heldout)):
            if not torch.isfinite(rows).all():
                bad = int((~torch.isfinite(rows)).any(1).sum())
                raise NndiffError(f"{d}: {bad} {name}(s) contain NaN or Inf; re-collect with a smaller learning rate")
        for where, records in (("snapshots", snapshots), ("heldout", heldout_snapshots)):
            _check_records(d / "manifest.json", where, records)
        skip = {"format", "version", "task", "files", "count", "dim", "layout", "snapshots", "heldout"}
        info = {k: v for k, v in m.items() if k not in skip}
        return cls(task, layout, params.float(), load_tensors(paths["base"]), snapshots, info, heldout.float(), heldout_snapshots)


def _check_records(manifest: Path, where: str, records: list) -> None:
    """Each snapshot's record carries the accuracies that evaluation and conditioning read."""
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise NndiffError(f"{manifest}: {where}[{i}] must be a mapping, got {type(r).__name__}; re-collect the zoo")
        for key in ("val_acc", "test_acc"):
            value = r.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise NndiffError(f"{manifest}: {where}[{i}].{key} must be an accuracy in percent, got {value!r}; re-collect the zoo")


def _inside(directory: Path, name) -> Path:
    """A file named in a manifest, which must stay inside the zoo directory (no '..', no absolute paths)."""
    if not isinstance(name, str) or not name:
        raise NndiffError(f"{directory / 'manifest.json'}: file name {name!r} is not a string")
    path = (directory / name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise NndiffError(f"{directory / 'manifest.json'} names {name!r}, which points outside the zoo directory; refusing to read it")
    return path


def train_base(task: ClassificationTask, seed: int, device: torch.device, progress: bool = True,
               checkpoints: Progress | None = None) -> nn.Module:
    """Train the task's model from scratch: AdamW with a one-cycle schedule for task.base_epochs.

    With `checkpoints`, the state is saved after every epoch and training resumes from the last one.
    """
    gen = seed_everything(seed)
    model = task.make_model().to(device)
    train = task.splits()["train"].to(device)
    batch = min(task.batch_size, len(train))
    steps_per_epoch = max(1, len(train) // batch)
    total = task.base_epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=task.base_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.base_lr, total_steps=total)
    start = 0
    saved = checkpoints.load("base") if checkpoints else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        set_rng_state(gen, saved["rng"])
        start = saved["epoch"]
    model.train()
    bar = tqdm(total=total, initial=start * steps_per_epoch, desc="base model", disable=not progress, leave=False)
    for epoch in range(start, task.base_epochs):
        order = torch.randperm(len(train), generator=gen).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            loss = task.train_step(model, train.x[idx], train.y[idx], opt)
            sched.step()
            bar.update()
        bar.set_postfix(loss=f"{loss:.3f}")
        if checkpoints:
            checkpoints.save("base", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "rng": rng_state(gen), "epoch": epoch + 1})
    bar.close()
    model.eval()
    return model


class Trajectory:
    """One collection run: SGD on the selected parameters only, from the base model, one step at a time."""

    def __init__(self, task, base: nn.Module, layout: Layout, seed: int, lr: float, momentum: float, device: torch.device):
        self.task, self.layout, self.lr = task, layout, lr
        self.model = copy.deepcopy(base).to(device)
        self.model.eval()  # BatchNorm keeps the base model's running statistics; see module docstring
        selected = set(layout.names)
        params = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in selected)
            if name in selected:
                params.append(p)
        self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        self.train = task.splits()["train"].to(device)
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.resumed_at = 0  # the step a resumed run continued from (0: not resumed)

    def step(self) -> None:
        idx = torch.randint(len(self.train), (min(self.task.batch_size, len(self.train)),), generator=self.gen).to(self.device)
        loss = self.task.train_step(self.model, self.train.x[idx], self.train.y[idx], self.opt)
        if not math.isfinite(loss):
            raise NndiffError(f"collection diverged (loss {loss}) at step {self.steps} with lr {self.lr}; use a smaller --lr")
        self.steps += 1

    def snapshot(self) -> torch.Tensor:
        return self.layout.flatten(dict(self.model.named_parameters())).cpu()

    def state_dict(self) -> dict:
        return {"params": self.layout.unflatten(self.snapshot()), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.layout.write(self.model, self.layout.flatten(state["params"]).to(self.device))
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.steps = state["steps"]


def snapshot_trajectory(task, base: nn.Module, layout: Layout, count: int, seed: int, lr: float, momentum: float,
                        burn_in: int, device: torch.device, every: int = 1) -> Iterator[torch.Tensor]:
    """Yields `count` snapshots of one collection run, one every `every` SGD steps after `burn_in` steps."""
    trajectory = Trajectory(task, base, layout, seed, lr, momentum, device)
    for _ in range(burn_in + count * every):
        trajectory.step()
        if _snapshot_due(trajectory.steps, burn_in, every):
            yield trajectory.snapshot()


def _snapshot_due(steps: int, burn_in: int, every: int) -> bool:
    return steps > burn_in and (steps - burn_in) % every == 0


def collect_run(trajectory: Trajectory, count: int, burn_in: int, every: int, name: str, checkpoints: Progress | None,
                bar=None) -> torch.Tensor:
    """Run a trajectory to `burn_in + count * every` steps and return its [count, D] snapshots (one
    every `every` steps), resuming from and saving to `checkpoints` under `name` as it goes."""
    snaps: list[torch.Tensor] = []
    saved = checkpoints.load(name) if checkpoints else None
    if saved is not None:
        trajectory.load_state_dict(saved["trajectory"])
        snaps = list(saved["snapshots"])
        trajectory.resumed_at = trajectory.steps
    if bar is not None:
        bar.update(trajectory.steps)
    total = burn_in + count * every
    while trajectory.steps < total:
        trajectory.step()
        if _snapshot_due(trajectory.steps, burn_in, every):
            snaps.append(trajectory.snapshot())
        if bar is not None:
            bar.update()
        done = trajectory.steps == total
        if checkpoints and (done or trajectory.steps % CHECKPOINT_EVERY == 0):
            rows = torch.stack(snaps) if snaps else torch.empty(0, trajectory.layout.size)
            checkpoints.save(name, {"trajectory": trajectory.state_dict(), "snapshots": rows})
    return torch.stack(snaps)


def collection_settings(task, config: CollectConfig, base_state: dict[str, torch.Tensor] | None = None) -> dict:
    """Everything a collection's result depends on (not where it runs): its progress is resumed,
    and a complete zoo reused, only under the same settings."""
    from .generate import fingerprint

    settings = {**asdict(config), "select": list(config.select or task.default_select),
                "lr": config.lr if config.lr is not None else task.collect_lr,
                "every": config.every if config.every is not None else getattr(task, "collect_every", 1),
                "data_root": getattr(task, "data_root", None),
                "base": None if base_state is None else fingerprint(torch.cat([v.detach().reshape(-1).float() for v in base_state.values()]))}
    settings.pop("device")  # resuming on another device is fine
    return settings


def _probe_lr(task, base, layout, val, config: CollectConfig, every: int, device, checkpoints: Progress | None) -> dict:
    """The --lr auto probe (rank 0 runs it, every rank gets its answer; a resumed collection reuses it)."""
    from .lr_probe import probe

    found = checkpoints.load("probe") if checkpoints else None
    if found is None:
        found = probe(task, base, layout, val, task.collect_lr, every, config.momentum, _run_seed(config, 999), device,
                      config.burn_in) if is_main() else None
        found = broadcast(found)
        if checkpoints and is_main():
            checkpoints.save("probe", found)
    return found


def _run_seed(config: CollectConfig, run: int) -> int:
    return config.seed * 1000 + run + 1


def collect(task: ClassificationTask | str, config: CollectConfig = CollectConfig(), progress: bool = True,
            base_state: dict[str, torch.Tensor] | None = None, checkpoints: Progress | None = None) -> Zoo:
    """Collect `config.k` snapshots of the selected parameters (plus `config.heldout` held-out ones)
    from a base model: `base_state` if given, else one trained here.

    With `checkpoints`, progress (base model epochs, each run's steps) is saved as it goes and a
    repeated call with the same configuration resumes from it.

    Under torchrun every rank calls this: rank 0 trains the base model, the runs (held-out one
    included) are dealt out over the ranks, and the snapshots are evaluated in shares; every rank
    returns the whole zoo. The result equals a single process's, run for run.
    """
    # The zoo records how to rebuild the task: a built-in name or a user task's file:function spec.
    config.validate()
    task_ref = resolve_task_spec(task) if isinstance(task, str) else task.name
    task = get_task(task, config.data_root) if isinstance(task, str) else task
    if config.amp:
        if not hasattr(task, "amp"):
            raise NndiffError("--amp needs a task built on nndiff.tasks.ClassificationTask")
        task.amp = True
    if config.base_epochs is not None:
        task.base_epochs = config.base_epochs
    device = resolve_device(config.device)
    settings = collection_settings(task, config, base_state)
    select, lr, every = settings["select"], settings["lr"], settings["every"]
    t0 = time.perf_counter()
    given_base = base_state is not None
    if checkpoints:
        saved = checkpoints.load("config")
        current = {**settings, "processes": world_size()}
        if saved is not None and saved != current:
            raise NndiffError(f"{checkpoints.dir} holds progress of a collection with other settings or another base model "
                              "(or another number of processes); rerun with the same settings to resume, or pass --fresh to start over")
        if is_main():
            checkpoints.save("config", current)
    # Under torchrun rank 0 trains the base model and the other ranks start from its weights.
    base = train_base(task, config.seed, device, progress, checkpoints) if not given_base and is_main() else None
    if not given_base and world_size() > 1:
        base_state = broadcast({k: v.cpu() for k, v in base.state_dict().items()} if is_main() else None)
    if base is None:
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

    probe = None
    if lr == "auto":
        probe = _probe_lr(task, base, layout, val, config, every, device, checkpoints)
        lr = probe["lr"]

    per_run = [config.k // config.runs + (r < config.k % config.runs) for r in range(config.runs)]
    if config.heldout:
        per_run.append(config.heldout)  # the last run is held out
    # Run r is collected by rank r mod world size (all of them in a single process), then gathered.
    mine = [run for run in range(len(per_run)) if run % world_size() == rank()]
    collected, snapshots = {}, []
    bar = tqdm(total=sum(per_run[r] * every + config.burn_in for r in mine), desc="collect", disable=not progress, leave=False)
    for run in mine:
        trajectory = Trajectory(task, base, layout, _run_seed(config, run), lr, config.momentum, device)
        snaps = collect_run(trajectory, per_run[run], config.burn_in, every, f"run{run}", checkpoints, bar)
        collected[run] = (snaps.cpu(), trajectory.resumed_at)
    bar.close()
    for part in all_gather(collected):
        collected.update(part)
    for run, count in enumerate(per_run):
        snapshots += [{"run": run, "seed": _run_seed(config, run), "step": config.burn_in + (i + 1) * every} for i in range(count)]

    params = torch.cat([collected[run][0] for run in range(len(per_run))])
    resumed_at = [collected[run][1] for run in range(len(per_run))]
    evals = evaluate_sharded(task, base, layout, params, {"val": val, "test": test}, progress)
    for meta, va, te in zip(snapshots, evals["val"].accuracy.tolist(), evals["test"].accuracy.tolist()):
        meta["val_acc"], meta["test_acc"] = va, te
    k = config.k
    # Diversity is measured on validation predictions: it may steer the collection settings, so it
    # must never look at the test set.
    diversity = mean_offdiagonal(pairwise_iou(evals["val"].predictions[:k], splits["val"].y.cpu()))
    if diversity > 0.995:
        warnings.warn(f"the {config.k} snapshots are near-copies (mean pairwise IoU of wrong validation predictions "
                      f"{diversity:.4f}); raise --lr or --burn-in, or collect more --runs", stacklevel=2)
    info = {
        "select": list(select),
        "data_root": getattr(task, "data_root", None),
        "mean_pairwise_iou_val": diversity,
        "collect": {**asdict(config), "select": list(select), "lr": lr, "every": every, "device": str(device)},
        "settings": settings,  # what the zoo depends on: a rerun with the same settings reuses it
        "base": base_metrics,
        "seconds": round(time.perf_counter() - t0, 2),
        "resumed_at_steps": resumed_at,  # per run, the step collection resumed from after an interruption
    }
    if probe is not None:
        info["lr_probe"] = probe
    base_state = {name: v.cpu() for name, v in base.state_dict().items()}
    return Zoo(task_ref, layout, params[:k], base_state, snapshots[:k], info, params[k:], snapshots[k:])
