"""`nndiff generate --run R --code 0110100101` or `--examples FILE`: models for one task of a family
run, seen or not. The family is the one the run records, loaded under the same trust rule as tasks."""

from __future__ import annotations

from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.families.examples import embed, load_examples
from nndiff.families.family import parse_code
from nndiff.families.generators import GENERATORS, load_generator
from nndiff.families.heads import features
from nndiff.families.registry import recorded_family
from nndiff.io.files import load_json, save_json, write_directory
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.tasks import get_task
from nndiff.zoo.format import load_base


def _open(run: Path):
    manifest_path, metrics_path = run / "family" / "manifest.json", run / "metrics.json"
    if not manifest_path.is_file() or not metrics_path.is_file():
        raise NndiffError(f"{run} is not a finished family run; make one with `nndiff run --family NAME --out {run}`")
    manifest, metrics = load_json(manifest_path), load_json(metrics_path)
    return manifest, metrics, recorded_family(manifest.get("family"), f"run {run}")


def _generator(run: Path, metrics: dict, key: str):
    name = metrics.get(key) if key == "examples_generator" else metrics.get(key, {}).get("generator")
    if name not in (*GENERATORS, "regression_examples"):
        raise NndiffError(f"{run / 'metrics.json'} does not say which generator to use; rerun the family run")
    return name, load_generator(run / f"{name}.safetensors")


def generate_for_code(run: str | Path, text: str, n: int, seed: int = 0) -> tuple[Path, str]:
    """Write n heads for the task `text` into RUN/generated with the generator the validation tasks
    chose; says whether the task was among the training tasks."""
    run = Path(run)
    manifest, metrics, family = _open(run)
    code = parse_code(text, family)
    name, generator = _generator(run, metrics, "chosen_on_validation_tasks")
    heads = generator.sample(code[None].float(), n, seed)
    codes = manifest.get("codes", [])
    seen = "seen: a training task" if text in [codes[i] for i in manifest["tasks"]["train"]] else "unseen"
    return _write(run, family, heads, {"code": text, "generator": name, "seed": seed, "seen": seen}), seen


def generate_for_examples(run: str | Path, path: str | Path, n: int, seed: int = 0) -> tuple[Path, str]:
    """Write n heads for the task a few labelled examples show (a safetensors file of x and y)."""
    run = Path(run)
    _, metrics, family = _open(run)
    base = run / "family" / "base.safetensors"
    if not base.is_file():
        raise NndiffError(f"{run} has no family/base.safetensors (the trunk); rerun the family run")
    task = get_task(family.base_task)
    model = load_base(task, load_tensors(base))
    x, y = load_examples(path, tuple(task.splits()["val"].x.shape[1:]), family.classes)
    descriptor = embed(features(model, family.head, x), y, family.classes)[None]
    name, generator = _generator(run, metrics, "examples_generator")
    index = load_tensors(run / "family" / "examples.safetensors")
    distance = torch.cdist(generator.inputs(descriptor), generator.inputs(index["task_means"])).min()
    near = distance <= index["radius"][0]
    seen = "seen: as near a training task as its own example sets typically are" if near else "unseen"
    heads = generator.sample(descriptor, n, seed)
    counts = torch.bincount(y, minlength=family.classes).tolist()
    info = {"examples": str(path), "examples_per_class": counts, "generator": name, "seed": seed, "seen": seen}
    return _write(run, family, heads, info), seen


def _write(run: Path, family, heads: torch.Tensor, info: dict) -> Path:
    classes = family.classes
    if not torch.isfinite(heads).all():
        raise NndiffError("the generator gave non-finite parameters; nothing was written")

    def fill(d: Path) -> None:
        for i, h in enumerate(heads):
            w, b = h[:-classes].reshape(classes, -1), h[-classes:]
            meta = {k: v for k, v in info.items() if k in ("code", "generator")} | {"seed": info["seed"] + i}
            save_tensors(d / f"{i:06d}.safetensors", {f"{family.head}.weight": w, f"{family.head}.bias": b}, meta)
        save_json(d / "info.json", {**info, "count": len(heads)})

    return write_directory(run / "generated", fill)
