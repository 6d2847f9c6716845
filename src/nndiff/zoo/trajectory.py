"""Base training and the one SGD trajectory loop (collection, the `--lr auto` probe and bench/ use it)."""

from __future__ import annotations

import copy
import math
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from nndiff.errors import NndiffError
from nndiff.io.checkpoint import rng_state, set_rng_state
from nndiff.params.layout import Layout
from nndiff.runtime.device import seed_everything
from nndiff.runtime.distributed import broadcast_buffers, check_ranks_agree, data_parallel, is_main, shard
from nndiff.runtime.stage import Stage
from nndiff.tasks import ClassificationTask, training_split
from nndiff.tasks.images import StreamedSplit


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
    *,
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
    train = training_split(task).to(device)
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
        self, task, base: nn.Module, layout: Layout, seed: int, *, lr: float, momentum: float, device: torch.device
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
        self.train = training_split(task).to(device)
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
