"""The stages on disk: each reads and writes a run directory, so the CLI and `nndiff run` share them.

A run directory holds
    config.yaml              the resolved training configuration (`--config` reads it back)
    trained_on.json          the zoo it was trained on (its path relative to the run, task, fingerprint),
                             the training's id (which every file of the generator carries) and its settings
    autoencoder.safetensors, denoiser.safetensors (EMA weights), normalizer.safetensors
    train_stats.json         losses and timings of training
    generated/               one safetensors file per generated model, plus info.json (pipeline/generate.py)
    metrics.json             the evaluation (evaluation/metrics.py)
    report/                  novelty.json, figures and report.md (see analysis/novelty.py, report/markdown.py)
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from pathlib import Path

import torch

from nndiff.analysis.doctor import to_json
from nndiff.analysis.novelty import analyze
from nndiff.config.settings import seed as check_seed
from nndiff.errors import NndiffError
from nndiff.evaluation.metrics import compute_metrics
from nndiff.generator.conditional import aim_targets, aimed_sets, calibrate
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import GENERATED, read_generated
from nndiff.generator.sampler import ParamGenerator, read_normalizers
from nndiff.io.files import save_json, save_yaml, write_directory
from nndiff.io.staging import Staging, recover_staged
from nndiff.io.tensors import load_state_dict
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import fingerprint, finite_rows, rows_where
from nndiff.pipeline.health import doctor_run
from nndiff.pipeline.records import METRICS, TRAIN_STATS, read_record
from nndiff.pipeline.rundir import (
    TRAINED_ON,
    _locked_run,
    check_sampled_now,
    generated_info,
    load_run_zoo,
    read_run_config,
    refuse_other_kind,
    settings_digest,
    trained_on,
)
from nndiff.report.markdown import write_report
from nndiff.runtime.device import resolve_device
from nndiff.runtime.distributed import is_main, world_size
from nndiff.runtime.memory import release_freed_memory
from nndiff.runtime.stage import Stage
from nndiff.tasks import named_task, resolve_task_spec, task_fingerprint
from nndiff.training.fit import fit
from nndiff.zoo.collect import collect
from nndiff.zoo.config import ZOO_ROWS, CollectConfig, collection_settings, configured_task
from nndiff.zoo.format import FILES, Zoo


def collect_zoo(
    task: str,
    out: str | Path,
    config: CollectConfig,
    progress: bool = True,
    *,
    base: str | Path | None = None,
    fresh: bool = False,
) -> Zoo:
    """Collect a zoo into `out`, from the base model state_dict in `base` if given.

    Progress is checkpointed in out/.progress; a crashed or killed collection resumes from it when
    called again with the same settings (or starts over with fresh=True).
    """
    out = Path(out)
    refuse_other_kind(out, "task")
    with Stage.open(out, fresh) as stage:
        base_state = load_state_dict(base) if base else None
        if not fresh and (out / "manifest.json").is_file() and not stage.started:
            return _complete_zoo(out, task, config, base_state)
        zoo = collect(task, config, progress, base_state, stage=stage)
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
    zoo_dir: str | Path, run_dir: str | Path, config: TrainConfig, progress: bool = True, *, fresh: bool = False
) -> dict:
    """Train a generator on a zoo into `run_dir`, resuming from run_dir/.progress if it holds progress."""
    zoo_dir, run_dir = Path(zoo_dir), Path(run_dir)
    zoo = Zoo.load(zoo_dir)
    config.validate()
    task = zoo.task_if_known()  # a zoo recorded without a task trains on its parameters alone
    if task is not None:
        zoo.model(task)  # fail now, not at evaluation, if the task is unknown or the zoo does not fit its model
    zoo_fp = fingerprint(zoo.params)
    refuse_other_kind(run_dir, "task")
    # Under torchrun every rank trains (data-parallel); rank 0 alone holds the lock and writes.
    with Stage.open(run_dir, fresh) as stage:
        if is_main():
            for sentence in recover_staged(run_dir):
                warnings.warn(sentence)
        if not fresh and (run_dir / "config.yaml").is_file() and not stage.started:
            return _complete_training(run_dir, zoo_fp, config)
        generator, stats = fit(zoo, config, progress, stage)
        stats["processes"] = world_size()
        if is_main():
            _write_generator(run_dir, zoo_dir, zoo.task, zoo_fp, generator=generator, config=config, stats=stats)
        stage.finish()
    return stats if is_main() else {}


def _write_generator(run_dir: Path, zoo_dir: Path, task: str, zoo_fp: str, *, generator, config, stats: dict) -> None:
    """The trained generator's files, replacing the run's as a whole (io/staging.py), each marked
    with this training's id."""
    stats["stage"] = stage_id = secrets.token_hex(8)
    # Recorded relative to the run directory when possible, so a run and its zoo can move together.
    zoo_ref = os.path.relpath(zoo_dir.resolve(), run_dir.resolve())
    trained = {"zoo": zoo_ref, "task": task, "zoo_fingerprint": zoo_fp, "stage": stage_id,
               "settings": settings_digest(config)}
    with Staging(run_dir, "train") as staging:
        generator.save(staging.dir, stage_id)
        save_json(staging.dir / "train_stats.json", stats)
        save_json(staging.dir / TRAINED_ON, trained)
        save_yaml(staging.dir / "config.yaml", config.to_dict())  # settings alone: `--config` reads it back
        staging.commit()
    if (run_dir / GENERATED).is_dir():
        warnings.warn(
            f"{run_dir / GENERATED} holds models of the previous generator (as do metrics.json and report/, "
            f"if there); sample from the new one with `nndiff generate --run {run_dir}`"
        )


def _complete_training(run_dir: Path, zoo_fp: str, config: TrainConfig) -> dict:
    """The generator already trained in `run_dir`, when it was trained on this zoo with these settings."""
    _, saved_config = read_run_config(run_dir)
    if trained_on(run_dir).get("zoo_fingerprint") != zoo_fp:
        what = "another zoo"
    elif {**saved_config.to_dict(), "device": None} != {**config.to_dict(), "device": None}:
        what = "other settings"
    else:
        stats = read_record(run_dir / "train_stats.json", TRAIN_STATS, "retrain the run with --fresh")
        return {**stats, "reused": True} if is_main() else {}
    raise NndiffError(
        f"{run_dir} holds a generator trained on {what}; pass --fresh to train a new one in its place, "
        "or choose another --out"
    )


@_locked_run
def evaluate_run(run_dir: str | Path, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate the generated models of a run; writes and returns metrics.json."""
    run_dir = Path(run_dir)
    zoo_dir, _ = read_run_config(run_dir)
    zoo = load_run_zoo(run_dir, zoo_dir)
    gen_info = generated_info(run_dir)
    check_sampled_now(run_dir, gen_info)
    task = zoo.make_task()
    zoo = zoo.with_accuracies(task)
    generated = read_generated(run_dir, zoo.layout)
    t0 = time.perf_counter()
    metrics = compute_metrics(task, zoo, generated, resolve_device(device), progress=progress)
    evaluate_s = time.perf_counter() - t0
    train_stats = read_record(run_dir / "train_stats.json", TRAIN_STATS, "retrain the run with --fresh")
    timings = {
        "collect": zoo.info.get("seconds", float("nan")),
        **train_stats.get("timings_s", {}),
        "generate": gen_info.get("seconds", float("nan")),
        "evaluate": round(evaluate_s, 3),
    }
    timings["total"] = round(sum(t for t in timings.values() if isinstance(t, (int, float))), 3)
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
    """The novelty analysis and visual report of a run: writes run_dir/report/{novelty.json, *.png, report.md},
    replacing the previous report/ as a whole."""
    check_seed(seed)
    run_dir = Path(run_dir)
    zoo_dir, config = read_run_config(run_dir)
    zoo = load_run_zoo(run_dir, zoo_dir)
    check_sampled_now(run_dir, generated_info(run_dir))
    task = zoo.make_task()
    zoo = zoo.with_accuracies(task)
    normalizer = Normalizer.from_state_dict(
        read_normalizers(run_dir)[1], "params.", zoo.layout.size, str(run_dir / "normalizer.safetensors")
    )
    generated = read_generated(run_dir, zoo.layout)
    metrics = _current_metrics(run_dir, generated, zoo)
    if metrics is None:  # missing, or about another set of models than generated/ holds now: evaluate these
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
    novelty, per_model = analyze(
        task, model, zoo, normalizer, generated=generated, seed=seed, extra=extra, nonfinite=nonfinite
    )
    novelty["fingerprint"] = metrics["generated"]["fingerprint"]
    # The health checks read the generated set again after the codec's check, not beside the codec
    # (at 1M parameters each is hundreds of MB); the analysis's buffers are let go first.
    del everything, generated
    release_freed_memory()
    novelty["health"] = to_json(doctor_run(run_dir, device, zoo))
    if calibration is not None:
        novelty["calibration"], novelty["aimed_at_val_acc"] = calibration, aim_targets(zoo)
    training = read_record(run_dir / "train_stats.json", TRAIN_STATS, "retrain the run with --fresh")

    def fill(staging: Path) -> None:  # the previous report/ stays whole until the new one is
        save_json(staging / "novelty.json", novelty)
        write_report(staging, metrics, novelty, per_model, training=training)

    return write_directory(run_dir / "report", fill) / "report.md"


def _current_metrics(run_dir: Path, generated: torch.Tensor, zoo: Zoo) -> dict | None:
    """metrics.json when it describes the generated set as it is now, measured with the task used now
    (None: evaluate again)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = read_record(path, METRICS, "")
    except NndiffError as e:
        warnings.warn(f"{str(e).rstrip('; ')}: evaluating again")
        return None
    spec = zoo.task if zoo.task is not None else named_task()
    if (metrics.get("task"), metrics.get("task_fingerprint")) != (spec, task_fingerprint(spec) if spec else None):
        return None  # measured with another task (or with its code as it was before an edit)
    return metrics if metrics["generated"]["fingerprint"] == fingerprint(generated) else None
