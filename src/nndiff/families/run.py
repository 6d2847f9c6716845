"""`nndiff run --family NAME`: a family's zoo over its tasks, generators from descriptor to head,
and every method judged on held-out tasks.

    OUT/family/base.safetensors      the trunk's model, trained once on the base task
    OUT/family/heads.safetensors     {"params": [T * K, D] heads, task-major; "init": [D] the common start}
    OUT/family/manifest.json         the family, settings, the task split and each row's task, step, accuracies
    OUT/regression.safetensors, OUT/diffusion.safetensors    the two generators
    OUT/metrics.json, OUT/report/    every method on the held-out tasks (report.py)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.families.evaluate import SGD_STEPS, per_sample, steps_worth, summarize
from nndiff.families.family import code_text, get_family, split_tasks
from nndiff.families.generators import DiffusionGenerator, RegressionGenerator
from nndiff.families.heads import correct, features, logits, train_heads
from nndiff.generator.config import TrainConfig
from nndiff.io.files import load_json, save_json
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.runtime.device import seed_everything
from nndiff.runtime.stage import Stage
from nndiff.tasks import get_task
from nndiff.zoo.format import load_base
from nndiff.zoo.trajectory import train_base


def _diffusion_defaults() -> TrainConfig:
    config = TrainConfig()
    config.autoencoder.steps, config.diffusion.steps = 1000, 1500
    return config


@dataclass
class FamilyConfig:
    family: str = "mnist1d-binary"
    seed: int = 0
    steps: int = 1000  # SGD steps per task from the common initialization
    lr: float = 0.5
    snapshots: int = 5  # per task, the last ones `every` steps apart
    every: int = 100
    n: int = 10  # models generated per held-out task
    regression_steps: int = 3000
    tasks: int = 0  # 0: every task of the family; else this many, drawn by the seed (quick checks)
    base_epochs: int = 0  # 0: the base task's own
    diffusion: TrainConfig = field(default_factory=_diffusion_defaults)

    def settings(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("n", "diffusion", "regression_steps")}


def _data(family, config: FamilyConfig, out: Path, progress: bool):
    """The trunk (trained once, then read back) and its features and labels for every split."""
    task = get_task(family.base_task)
    if config.base_epochs:
        task.base_epochs = config.base_epochs
    path = out / "family" / "base.safetensors"
    if path.is_file():
        model = load_base(task, load_tensors(path))
    else:
        model = train_base(task, config.seed, torch.device("cpu"), progress, Stage(out / "family"))
        save_tensors(path, model.state_dict())
    splits = task.splits()
    feats = {k: features(model, family.head, splits[k].x) for k in ("train", "val", "test")}
    return model, feats, {k: splits[k].y for k in feats}


def _collect(family, config, feats, labels, out: Path, codes) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every task's heads (K per task, task-major) from one common initialization."""
    d = out / "family"
    if (d / "manifest.json").is_file() and (d / "heads.safetensors").is_file():
        manifest = load_json(d / "manifest.json")
        if manifest.get("settings") == config.settings():
            state = load_tensors(d / "heads.safetensors")
            return state["params"], state["init"], manifest
    seed_everything(config.seed)
    init_layer = torch.nn.Linear(feats["train"].shape[1], family.classes)
    init = torch.cat([init_layer.weight.detach().reshape(-1), init_layer.bias.detach()])
    keep = tuple(config.steps - i * config.every for i in reversed(range(config.snapshots)))
    if keep[0] < 1:
        raise NndiffError(f"{config.snapshots} snapshots {config.every} steps apart need over {config.steps} steps")
    t0 = time.perf_counter()
    _, kept = train_heads(init, feats["train"], family.relabel(codes, labels["train"]), family.classes,
                          config.steps, config.lr, config.seed, keep)
    rows = torch.stack([kept[s] for s in keep], 1).reshape(-1, init.numel())  # task-major
    accs = {}
    for split in ("val", "test"):
        right = correct(rows, feats[split], family.relabel(codes, labels[split]).repeat_interleave(len(keep), 0), 2)
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


def family_codes(family, config: FamilyConfig) -> torch.Tensor:
    """The family's tasks, or `config.tasks` of them drawn by the seed (a quick check)."""
    if not config.tasks or config.tasks >= len(family.codes):
        return family.codes
    order = torch.randperm(len(family.codes), generator=torch.Generator().manual_seed(config.seed))
    return family.codes[order[: config.tasks]]


def _task_rows(rows: torch.Tensor, tasks: torch.Tensor, per_task: int) -> torch.Tensor:
    """[len(tasks), K, D]: the zoo's heads of these tasks."""
    return rows.view(-1, per_task, rows.shape[1])[tasks]


def run_family(config: FamilyConfig, out: str | Path, progress: bool = True, log=print) -> dict:
    """Collect over the family's tasks, train both generators on the training tasks, choose the
    default on the validation tasks, and judge every method on the held-out tasks (metrics.json)."""
    from nndiff.families.report import write_family_report

    out, t_start = Path(out), time.perf_counter()
    family = get_family(config.family)
    codes = family_codes(family, config)
    log(f"[1/4] the {family.base_task} trunk and the heads of {len(codes)} tasks ({config.steps} SGD steps each)")
    _, feats, labels = _data(family, config, out, progress)
    rows, init, manifest = _collect(family, config, feats, labels, out, codes)
    tasks = {k: torch.tensor(v, dtype=torch.long) for k, v in manifest["tasks"].items()}
    per_task = len(manifest["snapshot_steps"])
    train_rows = _task_rows(rows, tasks["train"], per_task).reshape(-1, rows.shape[1])
    train_codes = codes[tasks["train"]].repeat_interleave(per_task, 0)

    log(f"[2/4] training the generators on {len(tasks['train'])} tasks ({len(train_rows)} heads)")
    timings = {"collect": manifest["seconds"]}
    t0 = time.perf_counter()
    generators = {"regression": RegressionGenerator.fit(train_rows, train_codes, config.regression_steps, config.seed)}
    timings["train_regression"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    generators["diffusion"] = DiffusionGenerator.fit(train_rows, train_codes, config.diffusion, progress)
    timings["train_diffusion"] = round(time.perf_counter() - t0, 3)
    for name, gen in generators.items():
        gen.save(out / f"{name}.safetensors")

    # the choice: validation data of the validation tasks (never the held-out tasks, never test data)
    lab_val = family.relabel(codes[tasks["val"]], labels["val"])
    val_shares = {name: per_sample(_sample(gen, codes[tasks["val"]], config).view(len(tasks["val"]), -1, rows.shape[1]),
                                   feats["val"], lab_val, family.classes) for name, gen in generators.items()}
    choice = {name: float(share.mean() * 100) for name, share in val_shares.items()}
    chosen = max(choice, key=choice.get)
    other = next(name for name in generators if name != chosen)
    margin = summarize(val_shares, chosen, seed=config.seed)[other][f"minus_{chosen}"]
    log(f"[3/4] validation tasks choose the {chosen} generator ({chosen} {choice[chosen]:.2f}%, {other} "
        f"{choice[other]:.2f}%; difference {margin['estimate']:+.2f}, 95% CI {margin['ci95'][0]:+.2f} to "
        f"{margin['ci95'][1]:+.2f})")

    log(f"[4/4] every method on {len(tasks['heldout'])} held-out tasks")
    held = tasks["heldout"]
    methods, seconds = _methods(family, config, generators, codes, rows, init, feats, labels, tasks, per_task)
    lab_test = family.relabel(codes[held], labels["test"])
    shares = {name: per_sample(h, feats["test"], lab_test, family.classes) for name, h in methods.items()}
    metrics = summarize(shares, chosen, seed=config.seed)
    sgd = {s: metrics[f"sgd_{s}"]["test_acc_mean"] for s in SGD_STEPS}
    metrics.update({
        "family": family.name,
        "tasks": {k: len(v) for k, v in tasks.items()},
        "models_per_task": {name: int(h.shape[1]) for name, h in methods.items()},
        "chosen_on_validation_tasks": {"generator": chosen, "val_acc_mean": choice, f"{other}_minus_{chosen}": margin},
        "sgd_steps_worth": {g: steps_worth(sgd, metrics[g]["test_acc_mean"]) for g in generators},
        "sampling_s": seconds,
        "novelty": _novelty(methods[chosen], methods["trained"], generators["regression"].normalizer),
        "timings_s": {**timings, "total": round(time.perf_counter() - t_start, 3)},
    })
    save_json(out / "metrics.json", metrics)
    write_family_report(out / "report", metrics)
    return metrics


def _sample(gen, codes: torch.Tensor, config: FamilyConfig) -> torch.Tensor:
    return gen.sample(codes, 1 if gen.kind == "regression" else config.n, config.seed)


def _methods(family, config, generators, codes, rows, init, feats, labels, tasks, per_task):
    """Each method's heads for the held-out tasks ([T, m, D]) and the generators' sampling times."""
    held, train = tasks["heldout"], tasks["train"]
    dim = rows.shape[1]
    out = {"trained": _task_rows(rows, held, per_task)}  # the yardstick: the tasks' own SGD models
    seconds = {}
    for name, gen in generators.items():
        t0 = time.perf_counter()
        out[name] = _sample(gen, codes[held], config).view(len(held), -1, dim)
        seconds[name] = {"per_task": (time.perf_counter() - t0) / len(held)}
        t0 = time.perf_counter()
        gen.sample(codes[held[:1]], 100, config.seed)
        seconds[name]["100_models_one_task"] = time.perf_counter() - t0
    lab_train = family.relabel(codes[held], labels["train"])
    for steps in SGD_STEPS:
        heads, _ = train_heads(init, feats["train"], lab_train, family.classes, steps, config.lr, config.seed + 1)
        out[f"sgd_{steps}"] = heads[:, None]
    # SGD for the wall time generating one task's models takes (one task's steps, timed alone)
    t0 = time.perf_counter()
    train_heads(init, feats["train"], lab_train[:1], family.classes, 50, config.lr, config.seed + 1)
    step_s = (time.perf_counter() - t0) / 50
    for name in generators:
        steps = max(1, int(seconds[name]["per_task"] / step_s))
        heads, _ = train_heads(init, feats["train"], lab_train, family.classes, steps, config.lr, config.seed + 1)
        out[f"sgd_same_time_as_{name}"] = heads[:, None]
        seconds[name]["sgd_steps_in_that_time"] = steps
    # retrieval: the nearest training task by descriptor, and the best training task on the new task's validation data
    hamming = (codes[held][:, None, :] != codes[train][None]).sum(2)
    out["retrieval_nearest"] = _task_rows(rows, train[hamming.argmin(1)], per_task)
    last = _task_rows(rows, train, per_task)[:, -1]
    preds = torch.cat([_predict(last[i : i + 64], feats["val"], family.classes) for i in range(0, len(last), 64)])
    lab_val = family.relabel(codes[held], labels["val"])
    best = torch.stack([(preds == lab_val[t]).float().mean(1).argmax() for t in range(len(held))])
    out["retrieval_best_on_val"] = _task_rows(rows, train[best], per_task)
    out["zoo_mean"] = _task_rows(rows, train, per_task).reshape(-1, dim).mean(0).expand(len(held), 1, dim)
    return out, seconds


def _predict(heads: torch.Tensor, x: torch.Tensor, classes: int) -> torch.Tensor:
    with torch.no_grad():
        return logits(heads, x, classes).argmax(2)


def _novelty(generated: torch.Tensor, trained: torch.Tensor, normalizer) -> dict:
    """For each held-out task: the generated heads' nearest distance to the task's own trained heads,
    in units of those heads' own nearest spacing (normalized space); a replica is nearer than 0.1."""
    rel, replicas = [], 0
    for g, t in zip(generated, trained):
        gn, tn = normalizer(g), normalizer(t)
        spacing = torch.cdist(tn, tn).fill_diagonal_(float("inf")).min(1).values.median()
        nearest = torch.cdist(gn, tn).min(1).values / spacing.clamp_min(1e-12)
        rel.append(nearest)
        replicas += int((nearest < 0.1).sum())
    rel = torch.cat(rel)
    return {"relative_nearest_distance_median": float(rel.median()), "replica_share": replicas / len(rel)}
