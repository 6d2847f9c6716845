"""`nndiff doctor`: the health checks of a run directory, or of a zoo directory alone."""

from __future__ import annotations

from pathlib import Path

import torch

from nndiff.analysis.doctor import Check, autoencoder_check, generator_checks, zoo_checks
from nndiff.evaluation.engine import evaluate_params
from nndiff.generator.generated import GENERATED, read_generated
from nndiff.generator.sampler import ParamGenerator
from nndiff.pipeline.records import TRAIN_STATS, read_record
from nndiff.pipeline.rundir import _locked_run, generated_info, load_run_zoo, read_run_config, sampled_earlier
from nndiff.runtime.device import resolve_device
from nndiff.runtime.memory import release_freed_memory
from nndiff.zoo.format import Zoo


def doctor_run(path: str | Path, device: str = "auto", zoo: Zoo | None = None) -> list[Check]:
    """The health checks of a run directory, or of a zoo directory alone (its two zoo checks).
    `zoo`: the run's zoo, when the caller has it already (memory-mapped: not mapped a second time).
    The generated set is read after the codec's check has let the codec go: at a million parameters
    each is hundreds of MB."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        zoo = Zoo.load(path)
        task = zoo.make_task()
        zoo = zoo.with_accuracies(task)
        return _zoo_part(zoo, task, resolve_device(device))[0]
    return _doctor_run(path, device, zoo)


def _zoo_part(zoo: Zoo, task, dev) -> tuple[list[Check], torch.nn.Module, object, torch.Tensor]:
    model = zoo.model(task).to(dev)
    val = task.splits()["val"].to(dev)
    snapshots = evaluate_params(task, model, zoo.layout, zoo.params, splits={"val": val}, progress=False)[
        "val"
    ].predictions
    return zoo_checks(zoo, task, model, val, snapshots=snapshots), model, val, snapshots


@_locked_run
def _doctor_run(path: Path, device: str, zoo: Zoo | None) -> list[Check]:
    path, dev = Path(path), resolve_device(device)
    zoo_dir, config = read_run_config(path)
    zoo = zoo if zoo is not None else load_run_zoo(path, zoo_dir)
    task = zoo.make_task()
    zoo = zoo.with_accuracies(task)
    checks, model, val, snapshots = _zoo_part(zoo, task, dev)
    release_freed_memory()  # before the codec is read (principal components: as large as the zoo's rows)
    generator = ParamGenerator.load(path, config, dev)
    stats = read_record(path / "train_stats.json", TRAIN_STATS, "retrain the run with --fresh")

    def trained(loop: str) -> int:  # the steps a loop ran (an automatic budget's choice), for the fixes' advice
        cfg = getattr(config, loop)
        fallback = cfg.max_steps if cfg.steps == "auto" else cfg.steps
        steps = stats.get(loop, {}).get("steps", fallback)
        return steps if isinstance(steps, int) and steps > 0 else fallback

    checks.append(
        autoencoder_check(zoo, task, model, generator, val=val, snapshots=snapshots, steps=trained("autoencoder"))
    )
    normalizer = generator.normalizer
    del generator  # its codec (principal components: as large as the zoo's rows) is not needed from here
    release_freed_memory()
    fix = f"nndiff generate --run {path}"
    generated = None
    if (path / GENERATED).is_dir():
        if sampled_earlier(path, generated_info(path)):
            checks.append(Check("generator", "skip", "generated/ was sampled from an earlier generator", fix))
            return checks
        generated = read_generated(path, zoo.layout)
    if generated is not None:
        checks += generator_checks(
            zoo,
            task,
            model,
            generated,
            normalizer=normalizer,
            val=val,
            snapshots=snapshots,
            diffusion_steps=trained("diffusion"),
        )
    else:
        checks.append(Check("generator", "skip", "no generated models yet", fix))
    return checks
