"""`nndiff run`: every stage into one directory, reusing what is already done."""

from __future__ import annotations

import time
from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import SampleConfig
from nndiff.io.files import save_json
from nndiff.pipeline.generate import generate_run, reusable_set
from nndiff.pipeline.rundir import refuse_other_kind
from nndiff.pipeline.stages import collect_zoo, evaluate_run, report_run, train_run
from nndiff.runtime.distributed import barrier, is_main
from nndiff.runtime.memory import release_freed_memory
from nndiff.training.budget import summary_lines as budget_lines
from nndiff.zoo.config import CollectConfig
from nndiff.zoo.lr_probe import probe_lines


def run_all(
    task: str,
    out: str | Path,
    collect_config: CollectConfig,
    train_config: TrainConfig,
    *,
    sample: SampleConfig | None = None,
    progress: bool = True,
    log=print,
    base: str | Path | None = None,
    report: bool = True,
    fresh: bool = False,
) -> dict:
    """Collect -> train -> generate -> evaluate (-> report) into `out` (the zoo goes to out/zoo);
    sampling and the report's baselines use the training seed."""
    out, sample, seed = Path(out), sample or SampleConfig(), train_config.seed
    refuse_other_kind(out, "task")
    # every option is checked before anything is collected or trained
    collect_config.validate(), train_config.validate(), sample.validate()
    if sample.target_acc is not None and train_config.diffusion.condition == "none":
        raise NndiffError("--target-acc needs a conditional generator: add --condition val_acc")
    t0 = time.perf_counter()
    log(f"[1/4] collecting {collect_config.k} snapshots of {task} into {out / 'zoo'}")
    zoo = collect_zoo(task, out / "zoo", collect_config, progress, base=base, fresh=fresh)
    log(
        f"      base model test accuracy {zoo.info['base']['test_acc']:.2f}%, {zoo.layout.size} parameters selected "
        f"({', '.join(zoo.layout.names)})"
    )
    for line in probe_lines(zoo.info.get("lr_probe")):
        log(line)
    del zoo  # the later stages read the zoo from disk, memory-mapped: its collected copy is let go
    release_freed_memory()
    log("[2/4] training the autoencoder and the latent diffusion model")
    for line in budget_lines(train_run(out / "zoo", out, train_config, progress, fresh=fresh)):
        log(f"      {line}")
    release_freed_memory()
    if is_main():  # under torchrun: sampling is cheap, rank 0 does it alone
        if reusable_set(out, sample, seed):
            log(f"[3/4] {out / 'generated'} holds the {sample.n} models this generator samples with these settings")
        else:
            log(f"[3/4] generating {sample.n} models ({sample.sampler}, {sample.steps} steps, seed {seed})")
            keep = not report  # --no-report: the report/ there stays (generate says what it describes)
            generate_run(out, sample, seed, train_config.device, keep_report=keep, log=lambda s: log(f"      {s}"))
    barrier()
    release_freed_memory()
    log("[4/4] evaluating" + (" and writing the novelty report" if report else ""))
    metrics = evaluate_run(out, train_config.device, progress)  # sharded over the ranks
    if is_main():
        if report:
            t1 = time.perf_counter()
            report_run(out, train_config.device, seed, progress)
            metrics["timings_s"]["report"] = round(time.perf_counter() - t1, 3)
        metrics["timings_s"].pop("total")
        metrics["timings_s"]["total"] = round(time.perf_counter() - t0, 3)  # wall time, including file I/O
        save_json(out / "metrics.json", metrics)
    barrier()
    return metrics
