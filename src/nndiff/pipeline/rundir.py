"""A run directory: what holds it together, its lock, and the settings it was trained with."""

from __future__ import annotations

import functools
from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.io.files import load_json, load_yaml
from nndiff.runtime.distributed import main_lock

TRAINED_ON = "trained_on.json"


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise NndiffError(
            f"run directory {run_dir} does not exist; create it with `nndiff train --zoo ZOO --out {run_dir}`"
        )
    if not (run_dir / "config.yaml").is_file():
        raise NndiffError(
            f"{run_dir} is not a trained run (no config.yaml); train one with `nndiff train --zoo ZOO --out {run_dir}`"
        )


def trained_on(run_dir: Path) -> dict:
    """What a run was trained on: {"zoo": path relative to the run, "task", "zoo_fingerprint"}
    (runs trained before trained_on.json kept these keys in config.yaml)."""
    path = run_dir / TRAINED_ON
    data = load_json(path) if path.is_file() else load_yaml(run_dir / "config.yaml")
    if not isinstance(data, dict) or not isinstance(data.get("zoo"), str):
        raise NndiffError(
            f"{run_dir} does not say which zoo it was trained on (no 'zoo' in {path.name}); retrain the run"
        )
    return data


def read_run_config(run_dir: str | Path) -> tuple[Path, TrainConfig]:
    """The zoo path and the training configuration recorded in a run directory."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    zoo = Path(trained_on(run_dir)["zoo"])
    data = load_yaml(run_dir / "config.yaml")
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("zoo", "task", "zoo_fingerprint")}  # older runs'
    config = TrainConfig.from_dict(data, str(run_dir / "config.yaml"))
    return (zoo if zoo.is_absolute() else run_dir / zoo), config


def _locked_run(fn):
    """Run a stage that works on an existing run directory while holding that directory's lock."""

    @functools.wraps(fn)
    def wrapper(run_dir, *args, **kwargs):
        _check_run_dir(Path(run_dir))
        with main_lock(run_dir):
            return fn(run_dir, *args, **kwargs)

    return wrapper
