"""Collecting checkpoints: train a base model, then keep training only the selected parameters
and snapshot them K times (the zoo format is in zoo.py).

Protocol (per run): start from the base model, put it in eval mode — BatchNorm running statistics
stay frozen at the base model's values, so every snapshot is evaluated with exactly the function it
was trained as — train the selected parameters with SGD (momentum 0.9) at a high learning rate for
`burn_in` steps, then save one snapshot every `every` steps (one per step by default; whole-network
tasks use a gentler learning rate and space their snapshots out instead). A small learning rate
gives near-copies; measured on mnist1d-cnn: lr 0.05 → mean pairwise IoU of wrong validation
predictions 0.955, lr 0.5 → 0.835 at nearly the same accuracy (bench/collect_lr.py). Several runs
(seeds) may be collected into one zoo, from one base model or, for whole networks (`--bases N`),
from N base models trained from independent initializations, each permuted towards the first by
weight matching (align.py) so that the zoo's coordinates mean the same in every run. Each snapshot
is written to disk as it is taken (a RowFile in the progress directory, which becomes the zoo's
params.safetensors), so a zoo need not fit in memory; a resumed collection keeps the rows already
written.

Longer than 250 lines because collection is one protocol read top to bottom: its settings, base
training, the trajectory, the run loop, and how runs are dealt out under torchrun.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .align import align, chain
from .checkpoint import rng_state, set_rng_state
from .checks import SEED_MAX, setting, check_fields
from .errors import NndiffError
from .evaluate import evaluate_params_sharded, mean_offdiagonal, pairwise_iou
from .params import Layout
from .rowfile import RowFile
from .runtime import (
    DEVICES,
    all_gather,
    broadcast,
    broadcast_buffers,
    check_ranks_agree,
    data_parallel,
    is_main,
    rank,
    resolve_device,
    seed_everything,
    shard,
    world_size,
)
from .stage import Stage
from .tasks import ClassificationTask, get_task, resolve_task_spec
from .tasks.images import StreamedSplit
from .zoo import Zoo, load_base

CHECKPOINT_EVERY = 50  # collection steps between progress checkpoints
RECIPES = ("adamw", "sgd")  # how a base model is trained (base_optimizer)
ALIGNMENTS = ("weights", "none")  # how independent base models are made comparable (align.py)
ZOO_ROWS = "zoo-rows"  # the stage's row file the snapshots are written to (it becomes params.safetensors)


@dataclass
class CollectConfig:
    select: list[str] | None = setting(
        None,
        "glob patterns over the model's parameter names to generate (default: the task's, e.g. 'bn3.*' 'bn4.*')",
        flag="--select",
    )
    k: int = setting(200, "number of snapshots to collect", low=1, integer=True, flag="-k")
    runs: int = setting(
        1, "independent collection runs (seeds) the k snapshots are split over", low=1, integer=True, flag="--runs"
    )
    bases: int = setting(
        1,
        "independent base models, each trained here from its own initialization, that the runs are dealt "
        "over (whole networks without buffers only); with more than one, the held-out run gets one more of its own",
        low=1,
        integer=True,
        flag="--bases",
    )
    align: str = setting(
        "weights",
        "with --bases above 1: permute each base model's hidden units towards the first's before collecting from "
        "it (weights: weight matching, Git Re-Basin; plain chains of Linear and Conv layers) or leave them (none)",
        choices=ALIGNMENTS,
        flag="--align",
    )
    seed: int = setting(
        0, "random seed; the same seed gives the same result", low=0, high=SEED_MAX, integer=True, flag="--seed"
    )
    lr: float | str | None = setting(
        "auto",
        "collection learning rate, or 'auto': a short probe from the base model "
        "picks the rate whose snapshots differ most while keeping its validation accuracy "
        "(too small a rate gives copies, too large loses accuracy)",
        low=0,
        low_open=True,
        optional=True,
        words=("auto",),
        flag="--lr",
    )
    momentum: float = setting(0.9, "SGD momentum of the collection runs", low=0, high=1, high_open=True)
    burn_in: int = setting(
        100, "SGD steps before the first snapshot of each run", low=0, integer=True, flag="--burn-in"
    )
    every: int | None = setting(
        None,
        "SGD steps between snapshots (default: the task's, 1 for a few layers; "
        "whole-network tasks take a gentler --lr and space snapshots out)",
        low=1,
        integer=True,
        optional=True,
        flag="--every",
    )
    heldout: int = setting(
        100,
        "snapshots collected from one more run (a new seed) that the generator never sees; "
        "the novelty report compares generated models with them",
        low=0,
        integer=True,
        flag="--heldout",
    )
    device: str = setting("auto", "where to compute (auto: CUDA if present)", choices=DEVICES, flag="--device")
    data_root: str | None = setting(
        None, "vision tasks: the directory holding the dataset (default: $NNDIFF_DATA_ROOT)", flag="--data-root"
    )
    base_epochs: int | None = setting(
        None, "base model training epochs (default: the task's)", low=1, integer=True, optional=True, flag="--epochs"
    )
    amp: bool = setting(
        False, "bf16 autocast for base training and collection (for CUDA; evaluation stays float32)", flag="--amp"
    )
    recipe: str = setting(
        "adamw",
        "how the base model is trained: adamw (AdamW, one-cycle, the task's base_lr) or sgd (the paper's: "
        "SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay)",
        choices=RECIPES,
        flag="--recipe",
    )
    image_size: int | None = setting(
        None,
        "vision tasks: the side of the images the model sees, in pixels (default: the dataset's, 32 for "
        "CIFAR, MNIST and ImageFolder, 96 for STL-10, 224 for Flowers-102, Pets, Food-101 and ImageNet)",
        low=8,
        integer=True,
        optional=True,
        flag="--image-size",
    )

    def validate(self) -> "CollectConfig":
        check_fields(self)
        if self.k < self.runs:
            raise NndiffError(f"-k {self.k} snapshots cannot be split over --runs {self.runs}; need k >= runs")
        if self.runs < self.bases:
            raise NndiffError(
                f"--bases {self.bases} needs at least as many --runs (got {self.runs}): one per base model"
            )
        if self.select is not None and (
            isinstance(self.select, str) or not all(isinstance(p, str) for p in self.select)
        ):
            raise NndiffError(f"select must be a list of glob patterns such as ['bn1.*'] (got {self.select!r})")
        return self


def augment(task, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The task's augmentation of a training batch (a user task without `augment` has none)."""
    return task.augment(x, generator) if hasattr(task, "augment") else x


def base_optimizer(model: nn.Module, task, recipe: str, total: int):
    """The base model's optimizer and schedule. adamw: AdamW at the task's base_lr, weight decay 1e-4,
    a one-cycle schedule (what the small built-ins are tuned for); sgd: the paper's recipe, SGD at
    lr 0.1, momentum 0.9, weight decay 5e-4, the learning rate decayed to zero on a cosine."""
    if recipe == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    opt = torch.optim.AdamW(model.parameters(), lr=task.base_lr, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=task.base_lr, total_steps=total)


def train_base(
    task: ClassificationTask,
    seed: int,
    device: torch.device,
    progress: bool = True,
    stage: Stage | None = None,
    recipe: str = "adamw",
    name: str = "base",
) -> nn.Module:
    """Train the task's model from scratch for task.base_epochs with `recipe` (see base_optimizer).

    Under torchrun it is data-parallel: every rank draws the same batch and trains on its share of
    it, gradients averaged over the ranks. With a `stage`, the state is saved under `name` after
    every epoch and training resumes from the last one.
    """
    stage = stage or Stage(None)
    gen = seed_everything(seed)
    model = task.make_model().to(device)
    train = task.splits()["train"].to(device)
    batch = min(task.batch_size, len(train))
    steps_per_epoch = max(1, len(train) // batch)
    total = task.base_epochs * steps_per_epoch
    opt, sched = base_optimizer(model, task, recipe, total)
    start = 0
    saved = stage.load(name)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        set_rng_state(gen, saved["rng"])
        start = saved["epoch"]
    model.train()
    net = data_parallel(model)
    share = shard(batch)  # this rank's part of every batch (all of it in a single process)
    streamed = isinstance(train, StreamedSplit)
    bar = tqdm(
        total=total,
        initial=start * steps_per_epoch,
        desc=name.replace("base", "base model ", 1).strip(),
        disable=not progress or not is_main(),
        leave=False,
    )
    for epoch in range(start, task.base_epochs):
        if streamed:  # the images and their augmentation follow from (seed, epoch)
            loader = train.epoch_batches(batch, seed, epoch, share)
        else:
            order = torch.randperm(len(train), generator=gen).to(device)
        for i in range(steps_per_epoch):
            if streamed:
                x, y = next(loader)
            else:
                idx = order[i * batch : (i + 1) * batch]
                x, y = augment(task, train.x[idx], gen)[share], train.y[idx][share]
            loss = task.train_step(net, x, y, opt)
            sched.step()
            bar.update()
        bar.set_postfix(loss=f"{loss:.3f}")
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": rng_state(gen),
            "epoch": epoch + 1,
        }
        stage.save(name, state)
    bar.close()
    broadcast_buffers(model)
    check_ranks_agree(model)
    model.eval()
    return model


class Trajectory:
    """One collection run: SGD on the selected parameters only, from the base model, one step at a time.

    The one trajectory loop: collection, the --lr auto probe and the benchmarks all step through
    `run`."""

    def __init__(
        self, task, base: nn.Module, layout: Layout, seed: int, lr: float, momentum: float, device: torch.device
    ):
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
        self.seed, self.gen = seed, torch.Generator().manual_seed(seed)
        self.steps = 0
        self._stream = None  # a streamed split's batches, from the current step on

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        count = min(self.task.batch_size, len(self.train))
        if isinstance(self.train, StreamedSplit):  # a pure function of (seed, step): see tasks/images.py
            if self._stream is None:
                self._stream = self.train.random_batches(count, self.seed, self.steps)
            return next(self._stream)
        idx = torch.randint(len(self.train), (count,), generator=self.gen).to(self.device)
        return augment(self.task, self.train.x[idx], self.gen), self.train.y[idx]

    def step(self) -> None:
        x, y = self.batch()
        loss = self.task.train_step(self.model, x, y, self.opt)
        if not math.isfinite(loss):
            raise NndiffError(
                f"collection diverged (loss {loss}) at step {self.steps} with lr {self.lr}; use a smaller --lr"
            )
        self.steps += 1

    def run(self, count: int, burn_in: int, every: int) -> Iterator[torch.Tensor | None]:
        """Step on to `burn_in + count * every` steps in all, yielding after each step: the snapshot
        where one is due (every `every` steps after the burn-in), None otherwise."""
        while self.steps < burn_in + count * every:
            self.step()
            due = self.steps > burn_in and (self.steps - burn_in) % every == 0
            yield self.snapshot() if due else None

    def snapshot(self) -> torch.Tensor:
        return self.layout.flatten(dict(self.model.named_parameters())).cpu()

    def state_dict(self) -> dict:
        return {
            "params": self.layout.unflatten(self.snapshot()),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.layout.write(self.model, self.layout.flatten(state["params"]).to(self.device))
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.steps = state["steps"]
        self._stream = None


def snapshots(trajectory: Trajectory, count: int, burn_in: int, every: int) -> Iterator[torch.Tensor]:
    """The snapshots of a trajectory run to `burn_in + count * every` steps."""
    return (snap for snap in trajectory.run(count, burn_in, every) if snap is not None)


def collect_run(
    trajectory: Trajectory,
    rows: RowFile,
    start: int,
    count: int,
    burn_in: int,
    every: int,
    name: str,
    stage: Stage,
    bar=None,
) -> int:
    """Write a trajectory's `count` snapshots into rows start .. start + count - 1 of `rows` as they
    are taken, resuming from and checkpointing to the stage under `name` as it goes; returns the
    step it resumed from (0: started afresh). A checkpoint counts the rows already on disk, so no
    snapshot is held in memory beyond the one being written."""
    filled = 0
    saved = stage.load(name, mine=True)  # each run is collected by one rank
    if saved is not None and rows.kept:  # without the rows it counted, a checkpoint is no use
        trajectory.load_state_dict(saved["trajectory"])
        filled = saved["filled"]
    resumed_at = trajectory.steps
    if bar is not None:
        bar.update(trajectory.steps)
    total = burn_in + count * every

    def state() -> dict:
        rows.sync()
        return {"trajectory": trajectory.state_dict(), "filled": filled}

    for snap in trajectory.run(count, burn_in, every):  # steps on from where it resumed
        if snap is not None:
            rows.write(start + filled, snap[None])
            filled += 1
        if bar is not None:
            bar.update()
        stage.checkpoint(name, trajectory.steps, total, state, CHECKPOINT_EVERY, mine=True)
    return resumed_at


def collection_settings(task, config: CollectConfig, base_state: dict[str, torch.Tensor] | None = None) -> dict:
    """Everything a collection's result depends on (not where it runs): its progress is resumed,
    and a complete zoo reused, only under the same settings."""
    from .generate import fingerprint

    base = (
        None
        if base_state is None
        else fingerprint(torch.cat([v.detach().reshape(-1).float() for v in base_state.values()]))
    )
    settings = {
        **asdict(config),
        "select": list(config.select or task.default_select),
        "lr": config.lr if config.lr is not None else task.collect_lr,
        "every": config.every if config.every is not None else getattr(task, "collect_every", 1),
        "data_root": getattr(task, "data_root", None),
        "base": base,
    }
    settings.pop("device")  # resuming on another device is fine
    return settings


def configured_task(task: ClassificationTask | str, config: CollectConfig):
    """The task with the collection's overrides (--amp, --epochs), leaving the caller's object as it was."""
    task = get_task(task, config.data_root, config.image_size) if isinstance(task, str) else copy.copy(task)
    if config.amp:
        if not hasattr(task, "amp"):
            raise NndiffError("--amp needs a task built on nndiff.tasks.ClassificationTask")
        task.amp = True
    if config.base_epochs is not None:
        task.base_epochs = config.base_epochs
    return task


def _base_model(task, config: CollectConfig, device, progress: bool, base_state, stage: Stage) -> nn.Module:
    """The model collection starts from: `base_state`, or one trained here (data-parallel under torchrun)."""
    if base_state is None:
        return train_base(task, config.seed, device, progress, stage, config.recipe)
    return load_base(task, base_state).to(device)


def _other_bases(task, first: nn.Module, layout: Layout, config: CollectConfig, device, progress, stage):
    """With --bases N > 1, the base models of runs 1.. N-1 and of the held-out run (one more): each
    trained here from its own initialization (seed `_base_seed`) and, with --align weights, its hidden
    units permuted towards `first`'s by weight matching (align.py), which leaves its function as it
    was. Returns the models and, per model, how far weight matching moved it."""
    if config.bases == 1:
        return [], []
    names = {n for n, _ in first.named_parameters()}
    if set(layout.names) != names or list(first.buffers()):
        raise NndiffError(
            "--bases needs the whole network generated (--select '*') and a model without buffers: the zoo keeps "
            "one base model for everything not generated, and independent base models differ there"
        )
    layers = None
    if config.align == "weights":
        train = task.splits()["train"]
        inputs = next(train.random_batches(8, 0, 0))[0] if isinstance(train, StreamedSplit) else train.x[:64]
        layers = chain(first, inputs.to(device))
    models, moved = [], []
    for b in range(1, config.bases + (1 if config.heldout else 0)):
        model = train_base(task, _base_seed(config, b), device, progress, stage, config.recipe, name=f"base{b}")
        if layers is not None:
            moved.append({"base": b, **align(first, model, layers, seed=b)})
        models.append(model)
    return models, moved


def _base_seed(config: CollectConfig, base: int) -> int:
    """Base model 0 is trained from the run's seed (as with one base); the others from seeds of their own."""
    return config.seed if base == 0 else config.seed * 1000 + 500 + base


def _probe_lr(task, base, layout, val, config: CollectConfig, every: int, device, stage: Stage) -> dict:
    """The --lr auto probe (rank 0 runs it, every rank gets its answer; a resumed collection reuses it)."""
    from .lr_probe import probe

    found = stage.load("probe")
    if found is None:
        found = (
            probe(
                task,
                base,
                layout,
                val,
                task.collect_lr,
                every,
                config.momentum,
                _run_seed(config, 999),
                device,
                config.burn_in,
            )
            if is_main()
            else None
        )
        found = broadcast(found)
        stage.save("probe", found)
    return found


def _run_seed(config: CollectConfig, run: int) -> int:
    return config.seed * 1000 + run + 1


def collect(
    task: ClassificationTask | str,
    config: CollectConfig | None = None,
    progress: bool = True,
    base_state: dict[str, torch.Tensor] | None = None,
    stage: Stage | None = None,
) -> Zoo:
    """Collect `config.k` snapshots of the selected parameters (plus `config.heldout` held-out ones)
    from a base model: `base_state` if given, else one trained here.

    With a `stage`, progress (base model epochs, each run's steps) is saved as it goes and a
    repeated call with the same configuration resumes from it.

    Under torchrun every rank calls this: rank 0 trains the base model, the runs (held-out one
    included) are dealt out over the ranks, and the snapshots are evaluated in shares; every rank
    returns the whole zoo. The result equals a single process's, run for run. (Sharing the runs'
    rows passes them through memory: a zoo larger than memory is collected in a single process.)
    """
    config = (config or CollectConfig()).validate()
    # The zoo records how to rebuild the task: a built-in name or a user task's file:function spec.
    task_ref = resolve_task_spec(task) if isinstance(task, str) else task.name
    task = configured_task(task, config)
    device = resolve_device(config.device)
    stage = stage or Stage(None)
    settings = collection_settings(task, config, base_state)
    select, lr, every = settings["select"], settings["lr"], settings["every"]
    t0 = time.perf_counter()
    stage.claim({**settings, "processes": world_size()}, "a collection")
    if base_state is not None and config.bases > 1:
        raise NndiffError("--bases trains every base model here from its own initialization; drop --base")
    base = _base_model(task, config, device, progress, base_state, stage)
    layout = Layout.select(base, select)
    others, alignment = _other_bases(task, base, layout, config, device, progress, stage)
    bases = [base, *others]  # run r starts from bases[r % --bases]; the held-out run from the last
    splits = task.splits()
    val, test = splits["val"].to(device), splits["test"].to(device)
    base_metrics = {"val_acc": task.evaluate(base, val).accuracy, "test_acc": task.evaluate(base, test).accuracy}
    probe = _probe_lr(task, base, layout, val, config, every, device, stage) if lr == "auto" else None
    lr = probe["lr"] if probe else lr

    per_run = [config.k // config.runs + (r < config.k % config.runs) for r in range(config.runs)]
    if config.heldout:
        per_run.append(config.heldout)  # the last run is held out
    # Run r is collected by rank r mod world size (all of them in a single process), then gathered.
    mine = [run for run in range(len(per_run)) if run % world_size() == rank()]
    offsets = [sum(per_run[:r]) for r in range(len(per_run) + 1)]
    # every snapshot goes to disk as it is taken (the held-out run's after the others')
    rows = stage.rows(ZOO_ROWS, {"params": config.k, "heldout": config.heldout}, layout.size)
    resumed_at: dict[int, int] = {}
    bar = tqdm(
        total=sum(per_run[r] * every + config.burn_in for r in mine), desc="collect", disable=not progress, leave=False
    )

    def base_of(run: int) -> int:
        return len(bases) - 1 if run == config.runs else run % config.bases

    for run in mine:
        trajectory = Trajectory(task, bases[base_of(run)], layout, _run_seed(config, run), lr, config.momentum, device)
        resumed_at[run] = collect_run(
            trajectory, rows, offsets[run], per_run[run], config.burn_in, every, f"run{run}", stage, bar
        )
    bar.close()
    if world_size() > 1:  # each rank wrote its own runs' rows: share them
        parts = all_gather({run: (rows.read(offsets[run], offsets[run + 1]), resumed_at[run]) for run in mine})
        for part in parts:
            for run, (block, resumed) in part.items():
                rows.write(offsets[run], block)
                resumed_at[run] = resumed
    everything = rows.matrix()
    rows.close()
    params, heldout = everything[: config.k], everything[config.k :]
    records = [
        {"run": run, "seed": _run_seed(config, run), "base": base_of(run), "step": config.burn_in + (i + 1) * every}
        for run, count in enumerate(per_run)
        for i in range(count)
    ]
    evals = evaluate_params_sharded(task, base, layout, everything, {"val": val, "test": test}, progress)
    for meta, va, te in zip(records, evals["val"].accuracy.tolist(), evals["test"].accuracy.tolist()):
        meta["val_acc"], meta["test_acc"] = va, te
    k = config.k
    # Diversity is measured on validation predictions: it may steer the collection settings, so it
    # must never look at the test set.
    diversity = mean_offdiagonal(pairwise_iou(evals["val"].predictions[:k], splits["val"].y.cpu()))
    if diversity > 0.995:
        warnings.warn(
            f"the {config.k} snapshots are near-copies (mean pairwise IoU of wrong validation predictions "
            f"{diversity:.4f}); raise --lr or --burn-in, or collect more --runs",
            stacklevel=2,
        )
    info = {
        "select": list(select),
        "data_root": getattr(task, "data_root", None),
        "image_size": getattr(task, "image_size", None),
        "mean_pairwise_iou_val": diversity,
        "collect": {**asdict(config), "select": list(select), "lr": lr, "every": every, "device": str(device)},
        "settings": settings,  # what the zoo depends on: a rerun with the same settings reuses it
        "base": base_metrics,
        "seconds": round(time.perf_counter() - t0, 2),
        # per run, the step collection resumed from after an interruption
        "resumed_at_steps": [resumed_at[run] for run in range(len(per_run))],
    }
    if probe is not None:
        info["lr_probe"] = probe
    if others:
        info["bases"] = [
            {
                "seed": _base_seed(config, b),
                "val_acc": task.evaluate(m, val).accuracy,
                "test_acc": task.evaluate(m, test).accuracy,
            }
            for b, m in enumerate(bases)
        ]
        info["alignment"] = alignment  # per base model: distance to the first before and after weight matching
    base_state = {name: v.cpu() for name, v in base.state_dict().items()}
    return Zoo(task_ref, layout, params, base_state, records[:k], info, heldout, records[k:])
