"""`nndiff generate --run R --code 0110100101` or `--examples FILE`: models for one task of a family
run, seen or not. The family is the one the run records, loaded under the same trust rule as tasks.

Under the run's lock, every file read is checked against what the run recorded: the family's
fingerprint (a family edited since the run is refused), the heads' key (the task split `seen` is
said from), and the digest of the generator, the trunk and the examples index (a file copied from
another run, or changed, is refused)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nndiff.config.settings import number, seed as check_seed
from nndiff.errors import NndiffError
from nndiff.families.examples import embed, load_examples
from nndiff.families.family import parse_code
from nndiff.families.generators import GENERATORS, DiffusionGenerator, RegressionGenerator
from nndiff.families.heads import features
from nndiff.families.registry import fingerprint, recorded_family
from nndiff.generator.registry import load_generator
from nndiff.io.files import file_digest, load_json, save_json, write_directory
from nndiff.io.staging import recover_staged
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.pipeline.rundir import FAMILY_RUN, refuse_other_kind
from nndiff.runtime.distributed import main_lock
from nndiff.tasks import get_task
from nndiff.zoo.format import load_base

MAX_MODELS = 10_000  # models one request writes (each a file)


def _open(run: Path):
    """The run's manifest, metrics and family, once they are checked to belong together."""
    refuse_other_kind(run, "family")  # says so when `run` is a single task's run
    for sentence in recover_staged(run) if run.is_dir() else ():
        warnings.warn(sentence)
    paths = [run / FAMILY_RUN, run / "family" / "manifest.json", run / "metrics.json"]
    if not all(p.is_file() for p in paths):
        raise NndiffError(f"{run} is not a finished family run; make one with `nndiff run --family NAME --out {run}`")
    record, manifest, metrics = (load_json(p) for p in paths)
    fix = f"rerun the family run with `nndiff run --family NAME --out {run} --fresh`"
    if not all(isinstance(d, dict) for d in (record, manifest, metrics)) or "files" not in metrics \
            or not _task_lists(manifest):
        raise NndiffError(f"{run} holds malformed or older family run records; {fix}")
    family = recorded_family(record.get("family"), f"run {run}")
    if fingerprint(family) != record.get("fingerprint"):
        raise NndiffError(f"the code or data of family {family.name} changed since {run} was made; {fix}")
    if manifest.get("key") is None or manifest.get("key") != metrics.get("heads_key"):
        raise NndiffError(f"{run / 'family'} holds the heads of another run than {run / 'metrics.json'}; {fix}")
    return manifest, metrics, family


def _task_lists(manifest: dict) -> bool:
    """Whether the manifest lists the tasks' codes and the training tasks among them."""
    codes, tasks = manifest.get("codes"), manifest.get("tasks")
    train = tasks.get("train") if isinstance(tasks, dict) else None
    return isinstance(codes, list) and isinstance(train, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(codes) for i in train)


def _checked(run: Path, metrics: dict, name: str) -> Path:
    """run/name, refused unless it is the file the run recorded."""
    path = run / name if name != "base.safetensors" else run / "family" / name
    if not path.is_file():
        raise NndiffError(f"{path} is missing; rerun the family run")
    if file_digest(path) != metrics["files"].get(name):
        raise NndiffError(f"{path} is not the file this run wrote (copied from another run, or changed); "
                          "rerun the family run")
    return path


def _generator(run: Path, metrics: dict, key: str):
    name = metrics.get(key) if key == "examples_generator" else metrics.get(key, {}).get("generator")
    if name not in (*GENERATORS, "regression_examples"):
        raise NndiffError(f"{run / 'metrics.json'} does not say which generator to use; rerun the family run")
    kinds = (RegressionGenerator.tag, DiffusionGenerator.tag)
    return name, load_generator(_checked(run, metrics, f"{name}.safetensors"), kinds)


def _count(n: int, seed: int, generator) -> int:
    """How many models to write: n, checked; one for a generator that gives one model per task."""
    number(n, "-n", low=1, high=MAX_MODELS, integer=True)
    check_seed(seed)
    return 1 if generator.one_per_task else n


def generate_for_code(run: str | Path, text: str, n: int, seed: int = 0) -> tuple[Path, str, int]:
    """Write n heads (one for a regression: it gives one) for the task `text` into RUN/generated with
    the generator the validation tasks chose; says whether the task was among the training tasks."""
    run = Path(run)
    if not run.is_dir():
        raise NndiffError(f"{run} is not a finished family run; make one with `nndiff run --family NAME --out {run}`")
    with main_lock(run):
        manifest, metrics, family = _open(run)
        code = parse_code(text, family)
        name, generator = _generator(run, metrics, "chosen_on_validation_tasks")
        count = _count(n, seed, generator)
        heads = generator.sample(code[None].float(), count, seed)
        codes = manifest["codes"]
        seen = "seen: a training task" if text in [codes[i] for i in manifest["tasks"]["train"]] else "unseen"
        info = {"code": text, "generator": name, "seed": seed, "seen": seen}
        return _write(run, family, heads, info), seen, count


def generate_for_examples(run: str | Path, path: str | Path, n: int, seed: int = 0) -> tuple[Path, str, int]:
    """Write n heads (one for a regression) for the task a few labelled examples show (a safetensors
    file of x and y)."""
    run = Path(run)
    if not run.is_dir():
        raise NndiffError(f"{run} is not a finished family run; make one with `nndiff run --family NAME --out {run}`")
    with main_lock(run):
        return _for_examples(run, path, n, seed)


def _for_examples(run: Path, path: str | Path, n: int, seed: int) -> tuple[Path, str, int]:
    _, metrics, family = _open(run)
    task = get_task(family.base_task)
    model = load_base(task, load_tensors(_checked(run, metrics, "base.safetensors")))
    x, y = load_examples(path, tuple(task.splits()["val"].x.shape[1:]), family.classes)
    descriptor = embed(features(model, family.head, x), y, family.classes)[None]
    name, generator = _generator(run, metrics, "examples_generator")
    count = _count(n, seed, generator)
    index = load_tensors(_checked(run, metrics, "examples.safetensors"))
    distance = torch.cdist(generator.inputs(descriptor), generator.inputs(index["task_means"])).min()
    near = distance <= index["radius"][0]
    seen = "seen: as near a training task as its own example sets typically are" if near else "unseen"
    heads = generator.sample(descriptor, count, seed)
    counts = torch.bincount(y, minlength=family.classes).tolist()
    info = {"examples": str(path), "examples_per_class": counts, "generator": name, "seed": seed, "seen": seen}
    return _write(run, family, heads, info), seen, count


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
