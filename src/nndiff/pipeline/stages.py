"""The stages on disk: each reads and writes a run directory, so the CLI and `nndiff run` share them.

A run directory holds
    config.yaml              the resolved training configuration (`--config` reads it back)
    trained_on.json          the zoo it was trained on (its path relative to the run, task, fingerprint)
    autoencoder.safetensors, denoiser.safetensors (EMA weights), normalizer.safetensors
    train_stats.json         losses and timings of training
    generated/               one safetensors file per generated model, plus info.json
    metrics.json             the evaluation (see evaluate.py)
    report/                  novelty.json, figures and report.md (see analysis/novelty.py, report/markdown.py)
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from nndiff.analysis.doctor import Check, autoencoder_check, generator_checks, to_json, zoo_checks
from nndiff.analysis.novelty import analyze
from nndiff.config.settings import seed as check_seed
from nndiff.errors import NndiffError
from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import compute_metrics
from nndiff.generator.conditional import aim_targets, aimed_sets, calibrate
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import GENERATED, SampleConfig, check_generate_args, read_generated, write_generated
from nndiff.generator.sampler import ParamGenerator, read_normalizers
from nndiff.io.files import load_json, save_json, save_yaml
from nndiff.io.tensors import load_state_dict
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import fingerprint, finite_rows, rows_where
from nndiff.pipeline.rundir import TRAINED_ON, _locked_run, read_run_config, trained_on
from nndiff.report.markdown import write_report
from nndiff.runtime.device import resolve_device
from nndiff.runtime.distributed import is_main, world_size
from nndiff.runtime.memory import release_freed_memory
from nndiff.runtime.stage import Stage
from nndiff.tasks import resolve_task_spec
from nndiff.training.fit import fit
from nndiff.zoo.collect import collect
from nndiff.zoo.config import ZOO_ROWS, CollectConfig, collection_settings, configured_task
from nndiff.zoo.format import FILES, Zoo


def collect_zoo(
    task: str,
    out: str | Path,
    config: CollectConfig,
    progress: bool = True,
    base: str | Path | None = None,
    fresh: bool = False,
) -> Zoo:
    """Collect a zoo into `out`, from the base model state_dict in `base` if given.

    Progress is checkpointed in out/.progress; a crashed or killed collection resumes from it when
    called again with the same settings (or starts over with fresh=True).
    """
    out = Path(out)
    with Stage.open(out, fresh) as stage:
        base_state = load_state_dict(base) if base else None
        if not fresh and (out / "manifest.json").is_file() and not stage.started:
            return _complete_zoo(out, task, config, base_state)
        zoo = collect(task, config, progress, base_state, stage)
        if is_main():
            stage.move_rows(ZOO_ROWS, out / FILES["params"])
            zoo.save(out, params_in_place=True)
        stage.finish()
    return zoo


def _complete_zoo(out: Path, task: str, config: CollectConfig, base_state) -> Zoo:
    """The zoo already in `out`, when it was collected with these settings: a finished stage is not redone."""
    zoo = Zoo.load(out)
    wanted = collection_settings(configured_task(task, config), config, base_state)
    if zoo.task != resolve_task_spec(task) or zoo.info.get("settings") != wanted:
        raise NndiffError(
            f"{out} holds a complete zoo collected with other settings (or for another task); "
            "pass --fresh to collect a new one in its place, or choose another --out"
        )
    return zoo


def train_run(
    zoo_dir: str | Path, run_dir: str | Path, config: TrainConfig, progress: bool = True, fresh: bool = False
) -> dict:
    """Train a generator on a zoo into `run_dir`, resuming from run_dir/.progress if it holds progress."""
    zoo_dir, run_dir = Path(zoo_dir), Path(run_dir)
    zoo = Zoo.load(zoo_dir)
    config.validate()
    zoo.model(zoo.make_task())  # fail now, not at evaluation, if the task is unknown or the zoo does not fit its model
    zoo_fp = fingerprint(zoo.params)
    # Under torchrun every rank trains (data-parallel); rank 0 alone holds the lock and writes.
    with Stage.open(run_dir, fresh) as stage:
        if not fresh and (run_dir / "config.yaml").is_file() and not stage.started:
            return _complete_training(run_dir, zoo_fp, config)
        generator, stats = fit(zoo, config, progress, stage)
        stats["processes"] = world_size()
        if is_main():
            generator.save(run_dir)
            save_json(run_dir / "train_stats.json", stats)
            # Recorded relative to the run directory when possible, so a run and its zoo can move together.
            zoo_ref = os.path.relpath(zoo_dir.resolve(), run_dir.resolve())
            save_json(run_dir / TRAINED_ON, {"zoo": zoo_ref, "task": zoo.task, "zoo_fingerprint": zoo_fp})
            save_yaml(run_dir / "config.yaml", config.to_dict())  # settings alone: `--config` reads it back
        stage.finish()
    return stats if is_main() else {}


def _complete_training(run_dir: Path, zoo_fp: str, config: TrainConfig) -> dict:
    """The generator already trained in `run_dir`, when it was trained on this zoo with these settings."""
    _, saved_config = read_run_config(run_dir)
    if trained_on(run_dir).get("zoo_fingerprint") != zoo_fp:
        what = "another zoo"
    elif {**saved_config.to_dict(), "device": None} != {**config.to_dict(), "device": None}:
        what = "other settings"
    else:
        stats = load_json(run_dir / "train_stats.json") if (run_dir / "train_stats.json").is_file() else {}
        return {**stats, "reused": True} if is_main() else {}
    raise NndiffError(
        f"{run_dir} holds a generator trained on {what}; pass --fresh to train a new one in its place, "
        "or choose another --out"
    )


@_locked_run
def generate_run(run_dir: str | Path, sample: SampleConfig | None = None, seed: int = 0, device: str = "auto") -> Path:
    """Sample models into run_dir/generated as `sample` says (aimed at validation accuracy
    `sample.target_acc` when the generator is conditional and a target is given)."""
    s = sample or SampleConfig()
    check_generate_args(s.n, seed, s.sampler, s.steps, s.target_acc, s.guidance)
    run_dir = Path(run_dir)
    _, config = read_run_config(run_dir)
    generator = ParamGenerator.load(run_dir, config, resolve_device(device))
    t0 = time.perf_counter()
    vectors = generator.sample(s.n, seed, s.sampler, s.steps, s.target_acc, s.guidance)
    seconds = time.perf_counter() - t0
    aim = {"target_acc": s.target_acc, "guidance": s.guidance} if s.target_acc is not None else {}
    out = write_generated(run_dir, vectors, generator.layout, seed, s.sampler, s.steps, aim)
    info = {"count": s.n, "seed": seed, "sampler": s.sampler, "steps": s.steps, **aim, "seconds": round(seconds, 3)}
    save_json(out / "info.json", {**info, "fingerprint": fingerprint(vectors)})
    # The evaluation and the report described the previous models: remove them rather than leave
    # numbers beside models they are not about.
    (run_dir / "metrics.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "report", ignore_errors=True)
    return out


@_locked_run
def evaluate_run(run_dir: str | Path, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate the generated models of a run; writes and returns metrics.json."""
    run_dir = Path(run_dir)
    zoo_dir, _ = read_run_config(run_dir)
    zoo = Zoo.load(zoo_dir)
    task = zoo.make_task()
    generated = read_generated(run_dir, zoo.layout)
    t0 = time.perf_counter()
    metrics = compute_metrics(task, zoo, generated, resolve_device(device), progress)
    evaluate_s = time.perf_counter() - t0
    train_stats = load_json(run_dir / "train_stats.json") if (run_dir / "train_stats.json").is_file() else {}
    gen_info = load_json(run_dir / GENERATED / "info.json") if (run_dir / GENERATED / "info.json").is_file() else {}
    timings = {
        "collect": zoo.info.get("seconds", float("nan")),
        **train_stats.get("timings_s", {}),
        "generate": gen_info.get("seconds", float("nan")),
        "evaluate": round(evaluate_s, 3),
    }
    timings["total"] = round(sum(timings.values()), 3)
    metrics["generated"]["fingerprint"] = fingerprint(generated)  # which set of models these numbers describe
    metrics["sampler"] = {
        k: gen_info.get(k) for k in ("sampler", "steps", "seed", "target_acc", "guidance") if k in gen_info
    }
    metrics["timings_s"] = timings
    if is_main():
        save_json(run_dir / "metrics.json", metrics)
    return metrics


@_locked_run
def report_run(run_dir: str | Path, device: str = "auto", seed: int = 0, progress: bool = True) -> Path:
    """The novelty analysis and visual report of a run: writes run_dir/report/{novelty.json, *.png, report.md}."""
    check_seed(seed)
    run_dir = Path(run_dir)
    zoo_dir, config = read_run_config(run_dir)
    zoo = Zoo.load(zoo_dir)
    task = zoo.make_task()
    normalizer = Normalizer.from_state_dict(
        read_normalizers(run_dir)[1], "params.", zoo.layout.size, str(run_dir / "normalizer.safetensors")
    )
    generated = read_generated(run_dir, zoo.layout)
    metrics = load_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else None
    if not isinstance(metrics, dict) or metrics.get("generated", {}).get("fingerprint") != fingerprint(generated):
        # missing, or about another set of models than generated/ holds now: evaluate these
        metrics = evaluate_run(run_dir, device, progress)
    everything, finite = generated, finite_rows(generated)
    nonfinite, generated = int((~finite).sum()), rows_where(generated, finite)
    if not len(generated):
        raise NndiffError(
            f"all {nonfinite} generated models contain NaN or Inf: there is nothing to analyze "
            f"(see `nndiff doctor --run {run_dir}`, then retrain with --fresh or generate again)"
        )
    model = zoo.model(task).to(resolve_device(device))
    extra, calibration = {}, None
    if config.diffusion.condition != "none":  # what the condition buys: aimed sets and calibration
        generator = ParamGenerator.load(run_dir, config, resolve_device(device))
        extra = aimed_sets(generator, zoo, len(generated), seed)
        calibration = calibrate(generator, task, model, zoo, seed=seed)
    novelty, per_model = analyze(task, model, zoo, normalizer, generated, seed=seed, extra=extra, nonfinite=nonfinite)
    novelty["fingerprint"] = metrics["generated"]["fingerprint"]
    release_freed_memory()  # the analysis's buffers, before the health checks make their own
    novelty["health"] = to_json(doctor_run(run_dir, device, zoo, everything))
    if calibration is not None:
        novelty["calibration"], novelty["aimed_at_val_acc"] = calibration, aim_targets(zoo)
    save_json(run_dir / "report" / "novelty.json", novelty)
    training = load_json(run_dir / "train_stats.json") if (run_dir / "train_stats.json").is_file() else {}
    return write_report(run_dir / "report", metrics, novelty, per_model, training if isinstance(training, dict) else {})


def doctor_run(
    path: str | Path, device: str = "auto", zoo: Zoo | None = None, generated: torch.Tensor | None = None
) -> list[Check]:
    """The health checks of a run directory, or of a zoo directory alone (its two zoo checks).
    `zoo`, `generated`: the run's zoo and generated set as read_generated gives it, when the caller
    has them already (not read a second time: at a million parameters each is hundreds of MB)."""
    path = Path(path)
    dev = resolve_device(device)
    is_zoo = (path / "manifest.json").is_file()
    zoo_dir, config = (path, None) if is_zoo else read_run_config(path)
    zoo = zoo if zoo is not None else Zoo.load(zoo_dir)
    task = zoo.make_task()
    model = zoo.model(task).to(dev)
    val = task.splits()["val"].to(dev)
    snapshots = evaluate_params(task, model, zoo.layout, zoo.params, {"val": val}, progress=False)["val"].predictions
    checks = zoo_checks(zoo, task, model, val, snapshots)
    if is_zoo:
        return checks
    generator = ParamGenerator.load(path, config, dev)
    stats = load_json(path / "train_stats.json") if (path / "train_stats.json").is_file() else {}

    def trained(loop: str) -> int:  # the steps a loop ran (an automatic budget's choice), for the fixes' advice
        cfg = getattr(config, loop)
        fallback = cfg.max_steps if cfg.steps == "auto" else cfg.steps
        steps = stats.get(loop, {}).get("steps", fallback) if isinstance(stats, dict) else fallback
        return steps if isinstance(steps, int) and steps > 0 else fallback

    checks.append(autoencoder_check(zoo, task, model, generator, val, snapshots, trained("autoencoder")))
    if generated is None and (path / GENERATED).is_dir():
        generated = read_generated(path, zoo.layout)
    if generated is not None:
        checks += generator_checks(
            zoo, task, model, generated, generator.normalizer, val, snapshots, trained("diffusion")
        )
    else:
        checks.append(Check("generator", "skip", "no generated models yet", f"nndiff generate --run {path}"))
    return checks
