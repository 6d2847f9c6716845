"""A run directory: what holds it together, its lock, and the settings it was trained with.

Every file a training writes carries the training's id (safetensors metadata "stage", the "stage"
key of the JSON files), and generated/info.json the id of the generator it was sampled from: a
run whose files come from different trainings is refused with the fix, never used as a mix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import GENERATED
from nndiff.io.files import load_yaml
from nndiff.io.staging import recover_staged
from nndiff.io.tensors import load_metadata
from nndiff.params.rows import fingerprint
from nndiff.pipeline.records import GENERATED_INFO, TRAIN_STATS, TRAINED, read_record
from nndiff.runtime.distributed import is_main, main_lock
from nndiff.zoo.format import FILES, Zoo

TRAINED_ON = "trained_on.json"
FAMILY_RUN = "family.json"  # a family run's record (families/run.py); its presence marks the directory as one
GENERATOR_FILES = ("autoencoder.safetensors", "denoiser.safetensors", "normalizer.safetensors")


def is_family_run(directory: Path) -> bool:
    """Whether `directory` holds a family run (older ones are known by their family/manifest.json)."""
    return (directory / FAMILY_RUN).is_file() or (directory / "family" / "manifest.json").is_file()


def refuse_other_kind(directory: str | Path, kind: str) -> None:
    """A command for one kind of run directory ("task": a single task's; "family") refuses the other
    kind in one line, before it reads or changes anything there."""
    directory = Path(directory)
    if kind == "task" and is_family_run(directory):
        raise NndiffError(
            f"{directory} is a family run (`nndiff run --family`); this command works on a single task's run "
            f"or zoo: choose another directory (a family run's models: `nndiff generate --run {directory} --code ...`)"
        )
    if kind == "family" and any((directory / name).is_file() for name in ("config.yaml", TRAINED_ON, "manifest.json")):
        raise NndiffError(
            f"{directory} is a single task's run or zoo, not a family run (`nndiff run --family NAME --out DIR` "
            "makes one, in a directory of its own)"
        )


def refuse_another_task(zoo_dir: Path, spec: str) -> None:
    """An explicit --task that differs from the task the zoo records is refused, not ignored."""
    from nndiff.io.files import load_json
    from nndiff.tasks import resolve_task_spec

    path = Path(zoo_dir) / "manifest.json"
    recorded = load_json(path).get("task") if path.is_file() else None
    if isinstance(recorded, str) and recorded != resolve_task_spec(spec):
        raise NndiffError(
            f"{zoo_dir} records the task {recorded}; --task {spec} names another (--task names the evaluation of "
            "a zoo recorded without a task, or allows a recorded task's code): drop it, or give the recorded one"
        )


def _check_run_dir(run_dir: Path) -> None:
    refuse_other_kind(run_dir, "task")
    if not run_dir.is_dir():
        raise NndiffError(
            f"run directory {run_dir} does not exist; create it with `nndiff train --zoo ZOO --out {run_dir}`"
        )
    if not (run_dir / "config.yaml").is_file():
        raise NndiffError(
            f"{run_dir} is not a trained run (no config.yaml); train one with `nndiff train --zoo ZOO --out {run_dir}`"
        )


def trained_on(run_dir: Path) -> dict:
    """What a run was trained on: {"zoo": path relative to the run, "task", "zoo_fingerprint", "stage",
    "settings"} (runs trained before trained_on.json kept the first three in config.yaml)."""
    path = run_dir / TRAINED_ON
    if path.is_file():
        return read_record(path, TRAINED, "retrain the run with --fresh", required=True)
    data = load_yaml(run_dir / "config.yaml")
    if not isinstance(data, dict) or not isinstance(data.get("zoo"), str):
        raise NndiffError(
            f"{run_dir} does not say which zoo it was trained on (no 'zoo' in {path.name}); retrain the run"
        )
    return data


def settings_digest(config: TrainConfig) -> str:
    """What identifies a configuration's settings (the device it ran on aside)."""
    text = json.dumps({**config.to_dict(), "device": None}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_run_config(run_dir: str | Path) -> tuple[Path, TrainConfig]:
    """The zoo path and the training configuration recorded in a run directory, once the run's
    files are checked to come from one training."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    recorded = trained_on(run_dir)
    zoo = Path(recorded["zoo"])
    data = load_yaml(run_dir / "config.yaml")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("zoo", "task", "zoo_fingerprint")}  # older runs'
    config = TrainConfig.from_dict(data, str(run_dir / "config.yaml"))
    fix = f"retrain it with `nndiff train --zoo ZOO --out {run_dir} --fresh`"
    if "settings" in recorded and recorded["settings"] != settings_digest(config):
        raise NndiffError(f"{run_dir / 'config.yaml'} was changed after the generator was trained with it; {fix}")
    ids = {TRAINED_ON: recorded.get("stage")}
    for name in GENERATOR_FILES:
        if (run_dir / name).is_file():
            ids[name] = load_metadata(run_dir / name).get("stage")
    ids["train_stats.json"] = read_record(run_dir / "train_stats.json", TRAIN_STATS, fix).get("stage", ids[TRAINED_ON])
    if len(set(ids.values())) > 1:
        which = ", ".join(f"{name} {stage or 'unmarked'}" for name, stage in ids.items())
        raise NndiffError(f"{run_dir} holds files of different trainings ({which}); {fix}")
    return (zoo if zoo.is_absolute() else run_dir / zoo), config


def training_id(run_dir: Path) -> str | None:
    """The id of the training the run's generator comes from (None: a run trained before ids)."""
    return trained_on(run_dir).get("stage")


def generated_info(run_dir: Path) -> dict:
    """generated/info.json, checked ({} for a set written without one)."""
    fix = f"regenerate: `nndiff generate --run {run_dir}`"
    return read_record(run_dir / GENERATED / "info.json", GENERATED_INFO, fix)


def sampled_earlier(run_dir: Path, info: dict) -> bool:
    """Whether the generated set was sampled from another generator than the run holds now."""
    now = training_id(run_dir)
    return info.get("generator") is not None and now is not None and info["generator"] != now


def check_sampled_now(run_dir: Path, info: dict) -> None:
    if sampled_earlier(run_dir, info):
        raise NndiffError(
            f"{run_dir / GENERATED} was sampled from an earlier generator of this run (it was retrained since); "
            f"sample from the current one with `nndiff generate --run {run_dir}`"
        )


_FINGERPRINTS: dict[tuple, str] = {}  # a zoo's fingerprint by its params file's identity, computed once a process


def load_run_zoo(run_dir: Path, zoo_dir: Path) -> Zoo:
    """The run's zoo, refused unless it holds the snapshots the run was trained on."""
    zoo = Zoo.load(zoo_dir)
    expected = trained_on(run_dir).get("zoo_fingerprint")
    if expected is None:
        return zoo
    stat = (Path(zoo_dir) / FILES["params"]).resolve().stat()
    key = (str((Path(zoo_dir) / FILES["params"]).resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = fingerprint(zoo.params)
    if _FINGERPRINTS[key] != expected:
        raise NndiffError(
            f"{zoo_dir} no longer holds the snapshots {run_dir} was trained on (re-collected or changed since); "
            f"put that zoo back, or retrain with `nndiff train --zoo {zoo_dir} --out {run_dir} --fresh`"
        )
    return zoo


def open_run(run_dir: Path) -> None:
    """Finish or discard what an interrupted stage left in the run (saying which), then check it
    is a trained run. Called under the run's lock."""
    if run_dir.is_dir() and is_main():
        for sentence in recover_staged(run_dir):
            warnings.warn(sentence)
    _check_run_dir(run_dir)


def _locked_run(fn):
    """Run a stage that works on an existing run directory while holding that directory's lock."""

    @functools.wraps(fn)
    def wrapper(run_dir, *args, **kwargs):
        if not Path(run_dir).is_dir():
            _check_run_dir(Path(run_dir))  # says it does not exist (the lock would create it)
        refuse_other_kind(run_dir, "task")  # before the lock or the recovery of staged files touch it
        with main_lock(run_dir):
            open_run(Path(run_dir))
            return fn(run_dir, *args, **kwargs)

    return wrapper
