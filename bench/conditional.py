"""Can a generator beat the simple baselines? A study of approaches, on the default task and on a
whole-network task.

For each task and each of two zoos (200 snapshots from one collection run, and 10 runs x 20
snapshots): an unconditional and a conditional generator (conditioned on each snapshot's
validation accuracy). Every approach makes 100 models; all of them are placed on one novelty plane with
the baselines of the zoo they come from (noise curve, weight average of 16, per-dimension Gaussian,
held-out snapshots). Selection uses validation accuracy only; test accuracy is reported.

    python bench/conditional.py --out bench/conditional_runs      # about 25 minutes on 2 CPU cores

Writes OUT/conditional.json and OUT/conditional.md, and prints the table. Stages already on disk
(zoos, trained runs) are reused, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from nndiff.analysis.novelty import analyze
from nndiff.analysis.verdict import difference
from nndiff.evaluation.engine import evaluate_params
from nndiff.generator.conditional import aim_targets
from nndiff.generator.config import TrainConfig
from nndiff.generator.sampler import ParamGenerator
from nndiff.io.tensors import load_tensors
from nndiff.params.normalizer import Normalizer
from nndiff.pipeline.rundir import read_run_config
from nndiff.pipeline.stages import collect_zoo, train_run
from nndiff.zoo.config import CollectConfig
from nndiff.zoo.format import Zoo

N = 100  # models per approach
POOL = 500  # models drawn before validation filtering keeps the best N
BIG_POOL = 2000
TASKS = ("mnist1d-cnn", "mnist1d-mlp")


def ensure_zoo(task: str, out: Path, runs: int) -> Zoo:
    if not (out / "manifest.json").is_file():
        collect_zoo(task, out, CollectConfig(runs=runs), progress=False)
    return Zoo.load(out)


def ensure_run(zoo_dir: Path, run_dir: Path, condition: str) -> ParamGenerator:
    if not (run_dir / "config.yaml").is_file():
        config = TrainConfig()
        config.diffusion.condition = condition
        train_run(zoo_dir, run_dir, config, progress=False)
    _, config = read_run_config(run_dir)
    return ParamGenerator.load(run_dir, config)


def filtered(task, model, zoo, params: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` rows with the best validation accuracy (ties: lowest index)."""
    val = evaluate_params(task, model, zoo.layout, params, splits={"val": task.splits()["val"]}, progress=False)["val"].accuracy
    order = sorted(range(len(params)), key=lambda i: (-float(val[i]), i))
    return params[order[:keep]]


def finite(params: torch.Tensor) -> torch.Tensor:
    return params[torch.isfinite(params).all(1)]


def study_task(task_name: str, out: Path) -> list[dict]:
    rows = []
    for zoo_name, runs, suffix in (("1 run", 1, ""), ("10 runs", 10, "-10runs")):
        zoo_dir = out / task_name / f"zoo{suffix}"
        zoo = ensure_zoo(task_name, zoo_dir, runs=runs)
        uncond = ensure_run(zoo_dir, out / task_name / f"unconditional{suffix}", "none")
        cond = ensure_run(zoo_dir, out / task_name / f"conditional{suffix}", "val_acc")
        task = zoo.make_task()
        model = zoo.model(task).eval()
        rows += plane(task, model, zoo, out / task_name / f"unconditional{suffix}", approaches(task, model, zoo, uncond, cond),
                      task_name, zoo_name)
    return rows


def approaches(task, model, zoo: Zoo, uncond: ParamGenerator, cond: ParamGenerator) -> dict[str, torch.Tensor]:
    """100 models per approach; the conditional ones ask for the best snapshot's validation accuracy
    (or, extrapolating, half the snapshots' range beyond it)."""
    target = aim_targets(zoo)["best"]
    lo, hi = cond.condition_range
    beyond = hi + 0.5 * (hi - lo)
    best_of = lambda pool, w=1.0: filtered(task, model, zoo, finite(cond.sample(pool, seed=0, target_acc=target, guidance=w)), N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the extrapolating request warns, as it should
        return {
            "unconditional": finite(uncond.sample(N, seed=0)),
            f"unconditional, best {N} of {POOL} by val": filtered(task, model, zoo, finite(uncond.sample(POOL, seed=0)), N),
            "conditional, aimed at best val, guidance 1": finite(cond.sample(N, seed=0, target_acc=target)),
            "conditional, aimed at best val, guidance 3": finite(cond.sample(N, seed=0, target_acc=target, guidance=3.0)),
            f"conditional, aimed beyond best val ({beyond:.2f}), guidance 3":
                finite(cond.sample(N, seed=0, target_acc=beyond, guidance=3.0)),
            f"conditional (guidance 1), best {N} of {POOL} by val": best_of(POOL),
            f"conditional (guidance 1), best {N} of {BIG_POOL} by val": best_of(BIG_POOL),
        }


def plane(task, model, zoo: Zoo, run_dir: Path, approaches: dict[str, torch.Tensor], task_name: str, zoo_name: str) -> list[dict]:
    """Every approach on the novelty plane of `zoo`, with that zoo's baselines."""
    normalizer = Normalizer.from_state_dict(load_tensors(run_dir / "normalizer.safetensors"), "params.")
    names = {f"approach_{i}": name for i, name in enumerate(approaches)}
    sets = {key: approaches[name] for key, name in names.items()}
    first = next(iter(sets))
    novelty, _ = analyze(task, model, zoo, normalizer, generated=sets[first], n_baseline=N, seed=0,
                         extra={k: v for k, v in sets.items() if k != first})
    groups = dict(novelty["groups"])
    groups[first] = groups.pop("generated")
    g = novelty["groups"]
    best_original = g["originals"]["test_acc_best"]
    rows = []
    for key, name in names.items():
        s = groups[key]
        # "beats" only when the 95% interval of the gap difference lies above zero
        diffs = {b: difference(novelty, key if key != first else "generated", b) for b in ("weight_average", "gaussian", "heldout")}
        beats = {b: d["ci95"][0] > 0 for b, d in diffs.items()}
        rows.append({
            "task": task_name, "zoo": zoo_name, "approach": name, "count": s["count"],
            "test_acc_mean": s["test_acc_mean"], "max_similarity_mean": s["max_similarity_mean"],
            "gap_to_noise_curve": s["gap_to_noise_curve"], "gap_to_noise_curve_ci95": s.get("gap_to_noise_curve_ci95"),
            "inside_noise_curve": s["inside_noise_curve"], "gap_differences": diffs,
            "replica_share": s["replica_share"], "originals_best_test": best_original,
            "originals_mean_test": g["originals"]["test_acc_mean"],
            "baseline_gaps": {b: g[b]["gap_to_noise_curve"] for b in ("weight_average", "gaussian", "heldout")},
            "beats": beats,
            "moonshot": (s["gap_to_noise_curve"] > 0 and beats["weight_average"] and beats["gaussian"]
                         and s["replica_share"] <= 0.10 and s["test_acc_mean"] >= best_original),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| task | zoo | approach | test acc mean | originals mean / best | max-sim | gap to noise curve [95% CI] | "
             "gap WA16 / Gaussian / held-out | replicas | beats WA / Gaussian (95% CI of the difference above 0) | moonshot |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        b = r["baseline_gaps"]
        ci = r.get("gap_to_noise_curve_ci95")
        gap = f"{r['gap_to_noise_curve']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") + ("" if r["inside_noise_curve"] else " (outside)")
        lines.append(f"| {r['task']} | {r['zoo']} | {r['approach']} | {r['test_acc_mean']:.2f} | "
                     f"{r['originals_mean_test']:.2f} / {r['originals_best_test']:.2f} | {r['max_similarity_mean']:.3f} | {gap} | "
                     f"{b['weight_average']:+.2f} / {b['gaussian']:+.2f} / {b['heldout']:+.2f} | "
                     f"{100 * r['replica_share']:.0f}% | {'yes' if r['beats']['weight_average'] else 'no'} / "
                     f"{'yes' if r['beats']['gaussian'] else 'no'} | {'yes' if r['moonshot'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/conditional_runs"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    t0 = time.time()
    rows = [r for task in args.tasks for r in study_task(task, args.out)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conditional.json").write_text(json.dumps({"rows": rows, "seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
    md = markdown(rows)
    (args.out / "conditional.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
