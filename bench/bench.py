"""Benchmark of the default task: stage times, samplers, batched evaluation, generation vs SGD.

    python bench/bench.py --out bench/results          # about 3 minutes on 2 CPU cores

Prints Markdown tables and writes OUT/results.json and OUT/results.md. Times are wall-clock on
this machine: ratios are what carry over, absolute numbers are noisy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import mean_offdiagonal, pairwise_iou
from nndiff.evaluation.uncertainty import Bootstrap, compare, estimate, format_ci, interval, mean_accuracy
from nndiff.generator.config import TrainConfig
from nndiff.generator.sampler import ParamGenerator
from nndiff.pipeline.run import run_all
from nndiff.pipeline.rundir import read_run_config
from nndiff.runtime.device import resolve_device
from nndiff.zoo.config import CollectConfig
from nndiff.zoo.format import Zoo
from nndiff.zoo.trajectory import Trajectory, snapshots

SAMPLERS = [("ddpm", 1000), ("ddpm", 100), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100), ("dpm", 10), ("dpm", 20), ("dpm", 50)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn, repeat: int = 1):
    """(result, best wall time over `repeat` runs), waiting for queued GPU work before each reading."""
    best, out = float("inf"), None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return out, best


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def machine(device: torch.device) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    return f"{cpu}, {torch.cuda.get_device_name(device)}" if device.type == "cuda" else cpu


def bench_samplers(gen: ParamGenerator, task, zoo, model, test, n: int) -> list[dict]:
    rows, reps = [], []
    labels = test.y.cpu()
    boot = Bootstrap(len(labels))  # paired over test samples: every sampler's models meet the same resampled sets
    for sampler, steps in SAMPLERS:
        gen.sample(2, seed=10_000, sampler=sampler, steps=steps)  # warm-up
        params, seconds = timed(lambda: gen.sample(n, seed=0, sampler=sampler, steps=steps), repeat=2)
        ev = evaluate_params(task, model, zoo.layout, params, splits={"test": test}, progress=False)["test"]
        point, r = mean_accuracy(boot, ev.predictions == labels)
        reps.append(r)
        rows.append({"sampler": sampler, "steps": steps, "seconds": seconds, "test_acc_mean": point,
                     "test_acc_median": float(ev.accuracy.median())})
    for r, samples in zip(rows, reps):
        r["mean_vs_ddpm1000"] = estimate(r["test_acc_mean"] - rows[0]["test_acc_mean"], samples - reps[0])
    return rows


def bench_evaluation(task, zoo, model, params, splits) -> dict:
    fast, t_fast = timed(lambda: evaluate_params(task, model, zoo.layout, params, splits=splits, progress=False, batched=True), repeat=3)
    slow, t_slow = timed(lambda: evaluate_params(task, model, zoo.layout, params, splits=splits, progress=False, batched=False), repeat=2)
    same = all(torch.equal(fast[k].predictions, slow[k].predictions) for k in splits)
    return {"models": len(params), "samples": sum(len(s) for s in splits.values()), "batched_s": t_fast, "loop_s": t_slow,
            "speedup": t_slow / t_fast, "identical_predictions": same}


def hold_qualifying(make_batch, score, threshold: float, count: int, limit_factor: int = 10) -> tuple[torch.Tensor, int]:
    """(the first `count` rows, in the order made, whose score is at least `threshold`; how many rows
    were made). Gives up with fewer once `limit_factor * count` rows were made without enough."""
    held, got, made = [], 0, 0
    while got < count and made < limit_factor * count:
        rows = make_batch()
        held.append(rows[score(rows) >= threshold])
        got, made = got + len(held[-1]), made + len(rows)
    return torch.cat(held)[:count], made


def bench_vs_sgd(gen: ParamGenerator, task, zoo, model, splits: dict, target_count: int = 100) -> dict:
    """Wall time to hold `target_count` models at or above the originals' median validation accuracy.

    Every method is charged for making its models and for evaluating them on the validation split
    to know which qualify; the test accuracy and the diversity of the models each one holds are
    measured afterwards and not charged. SGD continues the collection protocol from the base model
    with a fresh seed: one model per snapshot after the burn-in (neighbours are near-copies), or
    one independent run per model.
    """
    threshold = float(torch.tensor([s["val_acc"] for s in zoo.snapshots]).median())
    cfg = zoo.info["collect"]
    device = next(model.parameters()).device

    def val_acc(params: torch.Tensor) -> torch.Tensor:
        return evaluate_params(task, model, zoo.layout, params, splits={"val": splits["val"]}, progress=False)["val"].accuracy

    def hold(make_batch) -> tuple[torch.Tensor, int]:
        return hold_qualifying(make_batch, val_acc, threshold, target_count)

    def by_generation(sampler: str, steps: int):
        seeds = itertools.count(1000, 100)
        return hold(lambda: gen.sample(100, seed=next(seeds), sampler=sampler, steps=steps))

    def by_sgd_trajectory():
        run = Trajectory(task, model, zoo.layout, 777, lr=cfg["lr"], momentum=cfg["momentum"], device=device)
        trajectory = snapshots(run, 10**9, cfg["burn_in"], cfg.get("every", 1))
        return hold(lambda: torch.stack(list(itertools.islice(trajectory, 100))))

    def by_sgd_runs():
        seeds = itertools.count(5000)
        def one_run() -> torch.Tensor:
            run = Trajectory(task, model, zoo.layout, next(seeds), lr=cfg["lr"], momentum=cfg["momentum"], device=device)
            return next(snapshots(run, 1, cfg["burn_in"], cfg.get("every", 1)))

        return hold(lambda: torch.stack([one_run() for _ in range(25)]))

    methods = {"generation_ddim50": lambda: by_generation("ddim", 50), "generation_ddim10": lambda: by_generation("ddim", 10),
               "sgd_one_trajectory": by_sgd_trajectory, "sgd_independent_runs": by_sgd_runs}
    out = {"threshold_val_acc": threshold, "target_count": target_count}
    test = splits["test"]
    labels = test.y.cpu()
    boot = Bootstrap(len(labels))  # one resampled test set per replicate for every method: paired
    reps = {}
    for name, fn in methods.items():
        (held, made), seconds = timed(fn)
        ev = evaluate_params(task, model, zoo.layout, held, splits={"test": test}, progress=False)["test"]
        point, reps[name] = mean_accuracy(boot, ev.predictions == labels)
        out[name] = {"seconds": seconds, "models_made": made, "models_held": len(held), "test_acc_mean": point,
                     "test_acc_mean_ci95": interval(reps[name]),
                     "mean_pairwise_iou": mean_offdiagonal(pairwise_iou(ev.predictions, labels))}
        if name != "generation_ddim50":
            out[name]["test_acc_minus_generation_ddim50"] = estimate(point - out["generation_ddim50"]["test_acc_mean"],
                                                                     reps[name] - reps["generation_ddim50"])
    out["speedups"] = {f"{g} vs {m}": out[m]["seconds"] / out[g]["seconds"]
                       for g in methods if g.startswith("generation") for m in methods if m.startswith("sgd")}
    return out


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Date: {r['date']}.", "", "### Stages of `nndiff run` (default task)", "",
             "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["stages_s"].items()]
    gpu = f" Peak GPU memory allocated: {r['peak_gpu_mib']:.0f} MiB." if "peak_gpu_mib" in r else ""
    lines += ["", f"Peak resident memory of the process: {r['peak_rss_mib']:.0f} MiB.{gpu}", "",
              "### Sampling 100 models", "", "| sampler | steps | seconds | test acc mean | median | mean vs DDPM-1000 [95% CI] |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {s['sampler']} | {s['steps']} | {s['seconds']:.3f} | {s['test_acc_mean']:.3f} | {s['test_acc_median']:.2f} | "
              f"{format_ci(s['mean_vs_ddpm1000'], '+.3f')} |" for s in r["samplers"]]
    e = r["evaluation"]
    lines += ["", "### Evaluating generated models", "",
              f"{e['models']} models on {e['samples']} samples (validation + test): batched {e['batched_s']:.2f} s, "
              f"per-model loop {e['loop_s']:.2f} s, **{e['speedup']:.1f}x**; identical predictions: {e['identical_predictions']}."]
    v = r["vs_sgd"]
    lines += ["", "### Generation vs SGD", "",
              f"Wall time to hold {v['target_count']} models at or above the originals' median validation accuracy "
              f"({v['threshold_val_acc']:.2f}%), validation evaluation included, generator training excluded; the held "
              "models' test accuracy and mean pairwise similarity (IoU of wrong test predictions) measured afterwards:", "",
              "| method | seconds | models made | held: test acc mean [95% CI] | vs generation DDIM-50 | held: pairwise IoU |",
              "| --- | --- | --- | --- | --- | --- |"]
    for k in ("generation_ddim50", "generation_ddim10", "sgd_one_trajectory", "sgd_independent_runs"):
        m = v[k]
        short = "" if m["models_held"] == v["target_count"] else f" (gave up: {m['models_held']} held)"
        diff = m.get("test_acc_minus_generation_ddim50")
        lo, hi = m["test_acc_mean_ci95"]
        lines.append(f"| {k} | {m['seconds']:.2f} | {m['models_made']}{short} | {m['test_acc_mean']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{'-' if diff is None else compare(diff, 'higher', 'lower')} | {m['mean_pairwise_iou']:.3f} |")
    lines += ["", "Generation's speed-up (SGD seconds / generation seconds): "
              + "; ".join(f"{k.replace('_', ' ')} {x:.1f}x" for k, x in v["speedups"].items()) + "."]
    lines += ["", f"Training the generator once costs {r['stages_s']['train_autoencoder'] + r['stages_s']['train_diffusion']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--run", type=Path, help="reuse this run directory instead of running the pipeline")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto, a GPU when there is one)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    result = {"machine": machine(device), "device": str(device), "date": time.strftime("%Y-%m-%d")}
    run_dir = args.run or args.out / "run"
    if args.run is None:
        metrics = run_all("mnist1d-cnn", run_dir, CollectConfig(device=str(device)), TrainConfig(device=str(device)), progress=False,
                          log=lambda *_: None)
    else:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    result["stages_s"] = metrics["timings_s"]
    zoo_dir, config = read_run_config(run_dir)
    zoo = Zoo.load(zoo_dir)
    task = zoo.make_task()
    model = zoo.model(task).to(device).eval()
    splits = {k: task.splits()[k].to(device) for k in ("val", "test")}
    gen = ParamGenerator.load(run_dir, config, device)
    result["samplers"] = bench_samplers(gen, task, zoo, model, splits["test"], 100)
    result["evaluation"] = bench_evaluation(task, zoo, model, gen.sample(100, seed=0), splits)
    result["vs_sgd"] = bench_vs_sgd(gen, task, zoo, model, splits)
    result["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
