"""Collecting checkpoints: train a base model, then keep training only the selected parameters
and snapshot them K times (the zoo format is in format.py).

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
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from nndiff.config.settings import SEED_MAX
from nndiff.errors import NndiffError
from nndiff.evaluation.engine import evaluate_params_sharded
from nndiff.evaluation.metrics import COPIES_IOU, mean_offdiagonal, pairwise_iou
from nndiff.io.rowfile import RowFile
from nndiff.params.layout import Layout
from nndiff.runtime.device import resolve_device
from nndiff.runtime.distributed import all_gather, broadcast, is_main, rank, world_size
from nndiff.runtime.stage import Stage
from nndiff.tasks import ClassificationTask, resolve_task_spec, training_split
from nndiff.tasks.images import StreamedSplit
from nndiff.zoo import lr_probe
from nndiff.zoo.align import align, chain
from nndiff.zoo.config import ZOO_ROWS, CollectConfig, collection_settings, configured_task
from nndiff.zoo.format import Zoo, load_base
from nndiff.zoo.trajectory import Trajectory, train_base

CHECKPOINT_EVERY = 50  # collection steps between progress checkpoints


def collect_run(
    trajectory: Trajectory,
    rows: RowFile,
    start: int,
    count: int,
    *,
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
    if saved is not None and rows.kept and saved.get("rows") == rows.id:  # only with the rows it counted
        trajectory.load_state_dict(saved["trajectory"])
        filled = saved["filled"]
    resumed_at = trajectory.steps
    if bar is not None:
        bar.update(trajectory.steps)
    total = burn_in + count * every

    def state() -> dict:
        rows.sync()
        return {"trajectory": trajectory.state_dict(), "filled": filled, "rows": rows.id}

    for snap in trajectory.run(count, burn_in, every):  # steps on from where it resumed
        if snap is not None:
            rows.write(start + filled, snap[None])
            filled += 1
        if bar is not None:
            bar.update()
        stage.checkpoint(name, trajectory.steps, total, state, every=CHECKPOINT_EVERY, mine=True)
    return resumed_at


def _base_model(task, config: CollectConfig, device, progress: bool, *, base_state, stage: Stage) -> nn.Module:
    """The model collection starts from: `base_state`, or one trained here (data-parallel under torchrun)."""
    if base_state is None:
        return train_base(task, config.seed, device, progress, stage=stage, recipe=config.recipe)
    return load_base(task, base_state).to(device)


def _other_bases(task, first: nn.Module, layout: Layout, config: CollectConfig, *, device, progress, stage):
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
        train = training_split(task)
        inputs = next(train.random_batches(8, 0, 0))[0] if isinstance(train, StreamedSplit) else train.x[:64]
        layers = chain(first, inputs.to(device))
    models, moved = [], []
    for b in range(1, config.bases + (1 if config.heldout else 0)):
        model = train_base(
            task, _base_seed(config, b), device, progress, stage=stage, recipe=config.recipe, name=f"base{b}"
        )
        if layers is not None:
            moved.append({"base": b, **align(first, model, layers, seed=b)})
        models.append(model)
    return models, moved


def derived_seed(seed: int, kind: str, index: int) -> int:
    """A seed of its own for each (collection seed, kind, index): a hash, so that no two of them meet
    (arithmetic like seed * 1000 + run gave run 1000 + r under seed s the seed of run r under s + 1).
    At most SEED_MAX, as every seed: the streamed image sampler derives seed * 1,000,003 + step."""
    return int.from_bytes(hashlib.sha256(f"{kind}:{seed}:{index}".encode()).digest()[:4], "little") % (SEED_MAX + 1)


def _base_seed(config: CollectConfig, base: int) -> int:
    """Base model 0 is trained from the collection's seed (as with one base); the others from seeds of their own."""
    return config.seed if base == 0 else derived_seed(config.seed, "base", base)


def _probe_lr(task, base, layout, val, *, config: CollectConfig, every: int, device, stage: Stage) -> dict:
    """The --lr auto probe (rank 0 runs it, every rank gets its answer; a resumed collection reuses it)."""
    found = stage.load("probe")
    if found is None:
        found = (
            lr_probe.probe(
                task,
                base,
                layout,
                val,
                hint=task.collect_lr,
                every=every,
                momentum=config.momentum,
                seed=derived_seed(config.seed, "probe", 0),
                device=device,
                burn_in=config.burn_in,
            )
            if is_main()
            else None
        )
        found = broadcast(found)
        stage.save("probe", found)
    return found


def _run_seed(config: CollectConfig, run: int) -> int:
    return derived_seed(config.seed, "run", run)


def collect(
    task: ClassificationTask | str,
    config: CollectConfig | None = None,
    progress: bool = True,
    base_state: dict[str, torch.Tensor] | None = None,
    *,
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
    training_split(task)  # a task without one can only evaluate: said before anything is written
    device = resolve_device(config.device)
    stage = stage or Stage(None)
    settings = collection_settings(task, config, base_state)
    select, lr, every = settings["select"], settings["lr"], settings["every"]
    t0 = time.perf_counter()
    stage.claim({**settings, "processes": world_size()}, "a collection")
    if base_state is not None and config.bases > 1:
        raise NndiffError("--bases trains every base model here from its own initialization; drop --base")
    base = _base_model(task, config, device, progress, base_state=base_state, stage=stage)
    layout = Layout.select(base, select)
    others, alignment = _other_bases(task, base, layout, config, device=device, progress=progress, stage=stage)
    bases = [base, *others]  # run r starts from bases[r % --bases]; the held-out run from the last
    splits = task.splits()
    val, test = splits["val"].to(device), splits["test"].to(device)
    base_metrics = {"val_acc": task.evaluate(base, val).accuracy, "test_acc": task.evaluate(base, test).accuracy}
    probe = (
        _probe_lr(task, base, layout, val, config=config, every=every, device=device, stage=stage)
        if lr == "auto"
        else None
    )
    lr = probe["lr"] if probe else lr

    per_run = [config.k // config.runs + (r < config.k % config.runs) for r in range(config.runs)]
    if config.heldout:
        per_run.append(config.heldout)  # the last run is held out
    # Run r is collected by rank r mod world size (all of them in a single process), then gathered.
    mine = [run for run in range(len(per_run)) if run % world_size() == rank()]
    offsets = [sum(per_run[:r]) for r in range(len(per_run) + 1)]
    # every snapshot goes to disk as it is taken (the held-out run's after the others')
    resumed_at: dict[int, int] = {}

    def base_of(run: int) -> int:
        return len(bases) - 1 if run == config.runs else run % config.bases

    with stage.rows(ZOO_ROWS, {"params": config.k, "heldout": config.heldout}, layout.size) as rows:
        total = sum(per_run[r] * every + config.burn_in for r in mine)
        with tqdm(total=total, desc="collect", disable=not progress, leave=False) as bar:
            for run in mine:
                start = bases[base_of(run)]
                trajectory = Trajectory(
                    task, start, layout, _run_seed(config, run), lr=lr, momentum=config.momentum, device=device
                )
                resumed_at[run] = collect_run(
                    trajectory,
                    rows,
                    offsets[run],
                    per_run[run],
                    burn_in=config.burn_in,
                    every=every,
                    name=f"run{run}",
                    stage=stage,
                    bar=bar,
                )
        if world_size() > 1:  # each rank wrote its own runs' rows: share them
            parts = all_gather({run: (rows.read(offsets[run], offsets[run + 1]), resumed_at[run]) for run in mine})
            for part in parts:
                for run, (block, resumed) in part.items():
                    rows.write(offsets[run], block)
                    resumed_at[run] = resumed
        everything = rows.matrix()  # mapped: stays readable once the file is closed
    params, heldout = everything[: config.k], everything[config.k :]
    records = [
        {"run": run, "seed": _run_seed(config, run), "base": base_of(run), "step": config.burn_in + (i + 1) * every}
        for run, count in enumerate(per_run)
        for i in range(count)
    ]
    evals = evaluate_params_sharded(
        task, base, layout, everything, splits={"val": val, "test": test}, progress=progress
    )
    for meta, va, te in zip(records, evals["val"].accuracy.tolist(), evals["test"].accuracy.tolist()):
        meta["val_acc"], meta["test_acc"] = va, te
    k = config.k
    # Diversity is measured on validation predictions: it may steer the collection settings, so it
    # must never look at the test set.
    diversity = mean_offdiagonal(pairwise_iou(evals["val"].predictions[:k], splits["val"].y.cpu()))
    if diversity > COPIES_IOU:
        warnings.warn(
            f"the {config.k} snapshots are near-copies (mean pairwise IoU of wrong validation predictions "
            f"{diversity:.4f}); raise --lr or --burn-in, or collect more --runs",
            stacklevel=2,
        )
    info = {
        "select": list(select),
        "data_root": getattr(task, "data_root", None),
        "image_size": getattr(task, "image_size", None),
        "data_fingerprint": getattr(task, "data_fingerprint", None),
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
