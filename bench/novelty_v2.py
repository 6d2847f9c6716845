"""Generalize like a new training run? Each approach x task x zoo as a complete `nndiff run`, its
generated models set against the baselines of its own zoo, every number with its 95% interval
(the novelty report's paired bootstrap over test samples).

    python bench/novelty_v2.py                                   # every approach on both tasks
    python bench/novelty_v2.py --tasks mnist1d-mlp --approaches runs1 runs100

An approach is a set of `nndiff run` options (APPROACHES): those of collection, then those of
training. Runs go to OUT/TASK/APPROACH and a run already finished there is reused, so an interrupted
study picks up where it stopped; approaches with the same collection options share one zoo (the
first one collected is linked into the others' directories, and `nndiff run` reuses it, having
checked that its settings are the same). Writes OUT/novelty_v2.json and prints the table
(bench/novelty_v2.md holds the measured one).

The moonshot, per row: the generated models' mean max-similarity to the training snapshots no higher
than the held-out snapshots' (the interval of the difference reaches zero or below), their mean test
accuracy at least the held-out snapshots' and the originals', at most 10% replicas, and gaps above
the noise curve, the weight average and the Gaussian whose intervals exclude zero.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from nndiff.cli.main import main as nndiff

TASKS = ("mnist1d-mlp", "mnist1d-convnet")  # steep noise curves: whole networks
PCA = ["--ae-kind", "pca"]
# Per approach: (collection options, training options).
APPROACHES = {
    # Many runs, few snapshots each: the same 200 snapshots from 1, 10 or 100 collection runs (seeds).
    "runs1": ([], []),
    "runs10": (["--runs", "10"], []),
    "runs100": (["--runs", "100"], []),
    # A functional loss for the autoencoder (output_loss.py): weight 10 puts a mean reconstruction's
    # logit error (about 0.11 on mnist1d-mlp) on the scale of its parameter error (0.83).
    "output10": ([], ["--ae-output-weight", "10"]),
    "runs10-output10": (["--runs", "10"], ["--ae-output-weight", "10"]),
    # the same with the autoencoder's budget fixed, since the automatic one stopped it early
    "output10-ae1000": ([], ["--ae-output-weight", "10", "--ae-steps", "1000"]),
    # Another generator family: diffusion directly on the zoo's principal-component coordinates (principal.py)
    "pca": ([], PCA),
    "runs10-pca": (["--runs", "10"], PCA),
    "runs100-pca": (["--runs", "100"], PCA),
    # Symmetry-aware zoos: 10 base models from independent initializations (20 snapshots from each),
    # left as trained or permuted towards the first by weight matching (align.py); the held-out run
    # starts from an 11th.
    "bases10-unaligned": (["--bases", "10", "--runs", "10", "--align", "none"], []),
    "bases10": (["--bases", "10", "--runs", "10"], []),
    "bases10-pca": (["--bases", "10", "--runs", "10"], PCA),
    # 100 independent base models, 2 snapshots each
    "bases100": (["--bases", "100", "--runs", "100"], []),
    "bases100-pca": (["--bases", "100", "--runs", "100"], PCA),
}


def _share_zoo(task: str, approach: str, out: Path) -> None:
    """Link a finished zoo collected with the same options by another approach into this approach's run."""
    zoo = out / task / approach / "zoo"
    if (zoo / "manifest.json").is_file():
        return
    for other, (collect, _) in APPROACHES.items():
        source = out / task / other / "zoo"
        if other != approach and collect == APPROACHES[approach][0] and (source / "manifest.json").is_file():
            shutil.rmtree(zoo, ignore_errors=True)
            shutil.copytree(source, zoo, copy_function=_link, ignore=shutil.ignore_patterns(".progress"))
            return


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)


def run(task: str, approach: str, out: Path) -> dict:
    directory = out / task / approach
    if not (directory / "report" / "novelty.json").is_file():
        _share_zoo(task, approach, out)
        start = time.perf_counter()
        collect, train = APPROACHES[approach]
        args = ["--quiet", "run", "--task", task, "--out", str(directory), *collect, *train]
        if nndiff(args) != 0:
            raise SystemExit(f"nndiff {' '.join(args)} failed")
        print(f"{task} {approach}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    novelty = json.loads((directory / "report" / "novelty.json").read_text())
    metrics = json.loads((directory / "metrics.json").read_text())
    return row(task, approach, novelty, metrics)


def _comparison(novelty: dict, b: str) -> dict:
    return next(c for c in novelty["comparisons"] if c["a"] == "generated" and c["b"] == b)


def _interval(value: dict) -> dict:
    return {"estimate": value["estimate"], "ci95": value["ci95"]}


def row(task: str, approach: str, novelty: dict, metrics: dict) -> dict:
    groups = novelty["groups"]
    gen, held, orig = groups["generated"], groups["heldout"], groups["originals"]
    vs = {b: _comparison(novelty, b) for b in ("weight_average", "gaussian", "heldout")}
    out = {
        "task": task,
        "approach": approach,
        "generated": {
            "test_acc_mean": gen["test_acc_mean"],
            "test_acc_mean_ci95": gen["test_acc_mean_ci95"],
            "max_similarity_mean": gen["max_similarity_mean"],
            "max_similarity_mean_ci95": gen["max_similarity_mean_ci95"],
            "replica_share": gen["replica_share"],
            "gap_to_noise_curve": gen["gap_to_noise_curve"],
            "gap_to_noise_curve_ci95": gen["gap_to_noise_curve_ci95"],
        },
        "heldout": {k: held[k] for k in ("test_acc_mean", "max_similarity_mean", "gap_to_noise_curve")},
        "originals_test_acc_mean": orig["test_acc_mean"],
        "minus_originals": _interval(metrics["comparisons"]["generated_minus_originals"]),
        "minus_weight_average": _interval(vs["weight_average"]["test_acc_mean_difference"]),
        "minus_gaussian": _interval(vs["gaussian"]["test_acc_mean_difference"]),
        "minus_heldout": _interval(vs["heldout"]["test_acc_mean_difference"]),
        "similarity_minus_heldout": _interval(vs["heldout"]["max_similarity_mean_difference"]),
    }
    out["moonshot"] = moonshot(out)
    return out


def moonshot(r: dict) -> dict:
    """Each condition of the moonshot, and whether all hold."""
    low = lambda d: d["ci95"][0]  # noqa: E731
    conditions = {
        "similarity no higher than held-out": low(r["similarity_minus_heldout"]) <= 0,
        "accuracy at least held-out's": r["minus_heldout"]["estimate"] >= 0,
        "accuracy at least originals'": r["generated"]["test_acc_mean"] >= r["originals_test_acc_mean"],
        "at most 10% replicas": (r["generated"]["replica_share"] or 0) <= 0.10,
        "above the noise curve": r["generated"]["gap_to_noise_curve_ci95"][0] > 0,
        "above the weight average": low(r["minus_weight_average"]) > 0,
        "above the Gaussian": low(r["minus_gaussian"]) > 0,
    }
    return {"reached": all(conditions.values()), **conditions}


def _fmt(d: dict, digits: int = 2) -> str:
    lo, hi = d["ci95"]
    return f"{d['estimate']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def table(rows: list[dict]) -> str:
    head = (
        "| task | approach | generated acc | max-sim (held-out) | replicas | gap to noise curve (held-out) "
        "| - originals | - weight avg | - Gaussian | - held-out | max-sim - held-out | moonshot |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        g, h = r["generated"], r["heldout"]
        lo, hi = g["test_acc_mean_ci95"]
        slo, shi = g["max_similarity_mean_ci95"]
        nlo, nhi = g["gap_to_noise_curve_ci95"]
        failed = [k for k, v in r["moonshot"].items() if k != "reached" and not v]
        lines.append(
            f"| {r['task']} | {r['approach']} | {g['test_acc_mean']:.2f} [{lo:.2f}, {hi:.2f}] "
            f"| {g['max_similarity_mean']:.3f} [{slo:.3f}, {shi:.3f}] ({h['max_similarity_mean']:.3f}) "
            f"| {100 * (g['replica_share'] or 0):.0f}% "
            f"| {g['gap_to_noise_curve']:+.2f} [{nlo:+.2f}, {nhi:+.2f}] ({h['gap_to_noise_curve']:+.2f}) "
            f"| {_fmt(r['minus_originals'])} | {_fmt(r['minus_weight_average'])} | {_fmt(r['minus_gaussian'])} "
            f"| {_fmt(r['minus_heldout'])} | {_fmt(r['similarity_minus_heldout'], 3)} "
            f"| {'reached' if not failed else 'not: ' + '; '.join(failed)} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--approaches", nargs="+", default=list(APPROACHES), choices=list(APPROACHES))
    p.add_argument("--out", default="bench/results/novelty_v2", help="where the runs and novelty_v2.json go")
    args = p.parse_args()
    out = Path(args.out)
    rows = [run(task, approach, out) for task in args.tasks for approach in args.approaches]
    path = out / "novelty_v2.json"
    # rows measured before with other tasks or approaches stay; a re-measured one replaces its old row
    done = {(r["task"], r["approach"]) for r in rows}
    earlier = json.loads(path.read_text()) if path.is_file() else []
    rows += [r for r in earlier if (r["task"], r["approach"]) not in done]
    order = list(TASKS) + sorted({r["task"] for r in rows} - set(TASKS))
    rows.sort(key=lambda r: (order.index(r["task"]), list(APPROACHES).index(r["approach"])))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
