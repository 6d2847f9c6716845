"""Does `nndiff run` with no settings work on a model nobody tuned it for?

Runs `nndiff run --task T` with every collection and training setting at its default (the learning
rate found by `--lr auto`, budgets chosen by validation) on each task given — built-in names or
`file.py:make_task` specs; by default the built-in tasks, `examples/tabular_mlp.py` and the user
models in `bench/user_models/` — and writes one table row per task: the learning rate the probe chose,
the zoo's diversity, the steps each training loop chose, generated vs originals (test accuracy,
with the 95% interval of the difference), replicas, the health check and the wall time.

    python bench/defaults.py --out bench/results/defaults             # all of them (about 30 minutes on 2 cores)
    python bench/defaults.py --out /tmp/d --tasks digits-cnn bench/user_models/digits_gru.py:make_task
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = ["mnist1d-cnn", "digits-cnn", "mnist1d-mlp", "mnist1d-convnet"]
USER = ["examples/tabular_mlp.py"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bench" / "user_models").glob("*.py"))


def run(task: str, out: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nndiff", "--quiet", "run", "--task", task, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return {"task": task, "error": (done.stderr.strip().splitlines() or ["?"])[-1], "seconds": seconds}
    load = lambda name: json.loads((out / name).read_text())  # noqa: E731
    manifest, metrics, novelty, stats = load("zoo/manifest.json"), load("metrics.json"), load("report/novelty.json"), load("train_stats.json")
    timings = metrics["timings_s"]
    # What the same run would have cost with the fixed budgets it replaced (1,000 autoencoder and
    # 2,000 diffusion steps, the task's collect_lr without a probe), at this run's seconds per step.
    fixed = timings["total"] - manifest.get("lr_probe", {}).get("seconds", 0)
    for loop, steps in (("autoencoder", 1000), ("diffusion", 2000)):
        spent = timings[f"train_{loop}"]
        fixed += spent * (steps / max(1, stats[loop]["steps"] - stats[loop].get("resumed_at_step", 0)) - 1)
    spread = next((c["measured"].split()[2] for c in novelty["health"] if c["check"] == "zoo diversity"), "?")
    return {
        "task": task, "seconds": seconds, "lr": manifest["collect"]["lr"], "probe_s": manifest.get("lr_probe", {}).get("seconds"), "iou": manifest["mean_pairwise_iou_val"], "spread": spread,
        "ae_steps": stats["autoencoder"]["steps"], "diffusion_steps": stats["diffusion"]["steps"],
        "originals": metrics["originals"]["test_acc"]["mean"], "generated": metrics["generated"]["test_acc"]["mean"],
        "difference": metrics["comparisons"]["generated_minus_originals"],
        "replicas": novelty["groups"]["generated"]["replica_share"],
        "health": {c["check"]: c["status"] for c in novelty["health"]},
        "pipeline_s": timings["total"], "fixed_budgets_estimate_s": fixed,
    }


def markdown(rows: list[dict]) -> str:
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}. Pipeline time: the "
             "stages' seconds; vs fixed budgets: against the same run at 1,000 autoencoder and 2,000 diffusion steps "
             "without the lr probe, at the run's own seconds per step.", "",
             "| task | lr (auto) | probe s | zoo IoU (val) / spread | AE / diffusion steps | originals mean | generated mean | "
             "generated - originals [95% CI] | replicas | health (warn/fail) | pipeline time | vs fixed budgets (est.) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | failed: {r['error']} | | | | | | | | | {r['seconds']:.0f} s | |")
            continue
        d = r["difference"]
        bad = ", ".join(f"{k}: {v}" for k, v in r["health"].items() if v in ("warn", "fail")) or "all pass"
        lines.append(f"| {r['task']} | {r['lr']:.3g} | {r['probe_s'] or 0:.0f} | {r['iou']:.3f} / {r['spread']} | "
                     f"{r['ae_steps']} / {r['diffusion_steps']} | {r['originals']:.2f} | {r['generated']:.2f} | "
                     f"{d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] | {100 * r['replicas']:.0f}% | {bad} | "
                     f"{r['pipeline_s']:.0f} s | {100 * (r['pipeline_s'] / r['fixed_budgets_estimate_s'] - 1):+.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", help="built-in names or file.py[:make_task] (default: built-ins and user models)")
    args = parser.parse_args()
    tasks = args.tasks or BUILT_IN + USER
    rows = []
    for task in tasks:
        spec = task if task.endswith(":make_task") or not task.endswith(".py") else f"{task}:make_task"
        name = Path(spec.split(":")[0]).stem
        rows.append(run(spec, args.out / name))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "defaults.json").write_text(json.dumps(rows, indent=1))
        (args.out / "defaults.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
