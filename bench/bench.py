"""Benchmark of the default task: stage times, samplers, batched evaluation, generation vs SGD.

    python bench/bench.py --out bench/results          # about 4 minutes on 2 CPU cores

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

from nndiff.config import TrainConfig
from nndiff.evaluate import evaluate_params
from nndiff.generate import ParamGenerator
from nndiff.pipeline import read_run_config, run_all
from nndiff.zoo import CollectConfig, Zoo, snapshot_trajectory

SAMPLERS = [("ddpm", 1000), ("ddpm", 100), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100), ("dpm", 10), ("dpm", 20), ("dpm", 50)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn, repeat: int = 1):
    """(result, best wall time over `repeat` runs)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def bench_samplers(gen: ParamGenerator, task, zoo, model, test, n: int) -> list[dict]:
    rows = []
    for sampler, steps in SAMPLERS:
        gen.sample(2, seed=10_000, sampler=sampler, steps=steps)  # warm-up
        params, seconds = timed(lambda: gen.sample(n, seed=0, sampler=sampler, steps=steps), repeat=2)
        acc = evaluate_params(task, model, zoo.layout, params, {"test": test}, progress=False)["test"].accuracy
        rows.append({"sampler": sampler, "steps": steps, "seconds": seconds, "test_acc_mean": float(acc.mean()),
                     "test_acc_median": float(acc.median())})
    ref = rows[0]["test_acc_mean"]
    for r in rows:
        r["mean_vs_ddpm1000"] = r["test_acc_mean"] - ref
    return rows


def bench_evaluation(task, zoo, model, params, splits) -> dict:
    fast, t_fast = timed(lambda: evaluate_params(task, model, zoo.layout, params, splits, progress=False, batched=True), repeat=3)
    slow, t_slow = timed(lambda: evaluate_params(task, model, zoo.layout, params, splits, progress=False, batched=False), repeat=2)
    same = all(torch.equal(fast[k].predictions, slow[k].predictions) for k in splits)
    return {"models": len(params), "samples": sum(len(s) for s in splits.values()), "batched_s": t_fast, "loop_s": t_slow,
            "speedup": t_slow / t_fast, "identical_predictions": same}


def bench_vs_sgd(gen: ParamGenerator, task, zoo, model, test, target_count: int = 100) -> dict:
    """Wall time to hold `target_count` models at or above the originals' median test accuracy.

    Every method is charged for making its models and for evaluating them to know which qualify.
    SGD continues the collection protocol from the base model with a fresh seed: one model per step
    after the burn-in (consecutive steps are near-copies), or one independent run per model.
    """
    threshold = float(torch.tensor([s["test_acc"] for s in zoo.snapshots]).median())
    cfg = zoo.info["collect"]
    device = next(model.parameters()).device

    def count_ok(params):
        acc = evaluate_params(task, model, zoo.layout, params, {"test": test}, progress=False)["test"].accuracy
        return int((acc >= threshold).sum())

    def by_generation():
        got, seed, made = 0, 1000, 0
        while got < target_count:
            params = gen.sample(100, seed=seed, sampler="ddim", steps=50)
            got += count_ok(params)
            seed, made = seed + 100, made + 100
        return made

    def by_sgd_trajectory():
        got, made = 0, 0
        trajectory = snapshot_trajectory(task, model, zoo.layout, 10**9, 777, cfg["lr"], cfg["momentum"], cfg["burn_in"], device,
                                         cfg.get("every", 1))
        while got < target_count:
            got += count_ok(torch.stack(list(itertools.islice(trajectory, 100))))
            made += 100
        return made

    def by_sgd_runs():
        got, made, seed = 0, 0, 5000
        while got < target_count:
            snaps = [next(snapshot_trajectory(task, model, zoo.layout, 1, seed + i, cfg["lr"], cfg["momentum"], cfg["burn_in"], device,
                                              cfg.get("every", 1)))
                     for i in range(25)]
            got += count_ok(torch.stack(snaps))
            made, seed = made + 25, seed + 25
        return made

    out = {"threshold_test_acc": threshold, "target_count": target_count}
    for name, fn in (("generation_ddim50", by_generation), ("sgd_one_trajectory", by_sgd_trajectory), ("sgd_independent_runs", by_sgd_runs)):
        made, seconds = timed(fn)
        out[name] = {"seconds": seconds, "models_made": made}
    out["speedup_vs_trajectory"] = out["sgd_one_trajectory"]["seconds"] / out["generation_ddim50"]["seconds"]
    out["speedup_vs_independent_runs"] = out["sgd_independent_runs"]["seconds"] / out["generation_ddim50"]["seconds"]
    return out


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}. Date: {r['date']}.", "", "### Stages of `nndiff run` (default task)", "",
             "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["stages_s"].items()]
    lines += ["", f"Peak resident memory of the process: {r['peak_rss_mib']:.0f} MiB.", "",
              "### Sampling 100 models", "", "| sampler | steps | seconds | test acc mean | median | mean vs DDPM-1000 |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {s['sampler']} | {s['steps']} | {s['seconds']:.3f} | {s['test_acc_mean']:.3f} | {s['test_acc_median']:.2f} | "
              f"{s['mean_vs_ddpm1000']:+.3f} |" for s in r["samplers"]]
    e = r["evaluation"]
    lines += ["", "### Evaluating generated models", "",
              f"{e['models']} models on {e['samples']} samples (validation + test): batched {e['batched_s']:.2f} s, "
              f"per-model loop {e['loop_s']:.2f} s, **{e['speedup']:.1f}x**; identical predictions: {e['identical_predictions']}."]
    v = r["vs_sgd"]
    lines += ["", "### Generation vs SGD", "",
              f"Wall time to hold {v['target_count']} models at or above the originals' median test accuracy "
              f"({v['threshold_test_acc']:.2f}%), evaluation included, generator training excluded:", "",
              "| method | seconds | models made |", "| --- | --- | --- |"]
    for k in ("generation_ddim50", "sgd_one_trajectory", "sgd_independent_runs"):
        lines.append(f"| {k} | {v[k]['seconds']:.2f} | {v[k]['models_made']} |")
    lines += ["", f"Generation is {v['speedup_vs_trajectory']:.1f}x faster than continuing one SGD trajectory "
              f"(whose consecutive models are near-copies) and {v['speedup_vs_independent_runs']:.1f}x faster than "
              f"independent SGD runs. Training the generator once costs "
              f"{r['stages_s']['train_autoencoder'] + r['stages_s']['train_diffusion']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--run", type=Path, help="reuse this run directory instead of running the pipeline")
    args = parser.parse_args()
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    run_dir = args.run or args.out / "run"
    if args.run is None:
        metrics = run_all("mnist1d-cnn", run_dir, CollectConfig(), TrainConfig(), progress=False, log=lambda *_: None)
    else:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    result["stages_s"] = metrics["timings_s"]
    zoo_dir, config = read_run_config(run_dir)
    zoo = Zoo.load(zoo_dir)
    task = zoo.make_task()
    model = zoo.model(task).eval()
    splits = {k: task.splits()[k] for k in ("val", "test")}
    gen = ParamGenerator.load(run_dir, config)
    result["samplers"] = bench_samplers(gen, task, zoo, model, splits["test"], 100)
    result["evaluation"] = bench_evaluation(task, zoo, model, gen.sample(100, seed=0), splits)
    result["vs_sgd"] = bench_vs_sgd(gen, task, zoo, model, splits["test"])
    result["peak_rss_mib"] = peak_rss_mib()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
