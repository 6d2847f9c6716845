"""report.md: the tables, verdict and figures of a run, from metrics.json and the novelty analysis."""

from __future__ import annotations

from pathlib import Path

from nndiff.analysis.distribution import flag_sentences
from nndiff.evaluation.table import comparison_lines
from nndiff.evaluation.uncertainty import compare
from nndiff.io.files import write_bytes_atomic
from nndiff.report.figures import (
    STYLE,
    accuracy_histogram,
    calibration_plot,
    distance_histogram,
    gap_plot,
    novelty_plane,
    pca_map,
    training_plot,
)
from nndiff.training.budget import summary_lines

FIGURES = {
    "accuracy.png": "Test accuracy",
    "novelty_plane.png": "Accuracy vs similarity to the training snapshots",
    "gaps.png": "Gap to the noise curve, with 95% intervals",
    "pca.png": "Parameters in the originals' principal-component plane",
    "nearest_distance.png": "Nearest-original distance",
}


def write_report(
    out_dir: str | Path, metrics: dict, novelty: dict, per_model: dict, *, training: dict | None = None
) -> Path:
    """`training`: the run's train_stats.json (its budgets and curves), if there is one."""
    out = Path(out_dir)
    training = training or {}
    if any(training.get(name, {}).get("curve") for name in ("autoencoder", "diffusion")):
        training_plot(training, out / "training.png")
    accuracy_histogram(per_model, out / "accuracy.png")
    novelty_plane(per_model, novelty, out / "novelty_plane.png")
    gap_plot(novelty, out / "gaps.png")
    pca_map(per_model, novelty["principal_plane"], out / "pca.png")
    distance_histogram(per_model, out / "nearest_distance.png")
    if novelty.get("calibration"):
        calibration_plot(novelty["calibration"], out / "calibration.png")
    path = out / "report.md"
    write_bytes_atomic(path, markdown(metrics, novelty, training).encode())
    return path


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _ci(value: float | None, ci: list[float] | None, fmt: str) -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def _label(name: str) -> str:
    return STYLE[name][0] if name in STYLE else f"originals + noise {name.split('_')[1]}"


def markdown(metrics: dict, novelty: dict, training: dict | None = None) -> str:
    o, g, e = metrics["originals"], metrics["generated"], metrics["weight_average"]
    means = (metrics.get("comparisons") or {}).get("test_acc_mean", {})
    lines = [f"# nndiff report: {metrics['task']}", ""]
    if metrics.get("task_fingerprint"):
        lines += [f"Every accuracy below was measured with the task `{metrics['task']}` "
                  f"(fingerprint {metrics['task_fingerprint']}).", ""]
    if novelty.get("health"):
        lines += [
            "## Health check",
            "",
            "On validation data and in parameter space (as `nndiff doctor` prints it).",
            "",
        ]
        lines += markdown_table(
            ["", "check", "measured", "fix"],
            [
                [c["status"].upper(), c["check"], c["measured"], c["fix"] if c["status"] in ("warn", "fail") else ""]
                for c in novelty["health"]
            ],
        )
        lines += [""]
    budgets = [f"- {line}" for line in summary_lines(training or {})]
    if budgets:
        lines += ["## Training budgets", ""] + budgets + [""]
    lines += [
        "## Accuracy",
        "",
        "Test accuracy (%). *best* is the maximum on the test set (an oracle, shown to compare "
        "with the paper); *val-selected* is the test accuracy of the model with the best validation accuracy. "
        "Brackets: 95% intervals (paired bootstrap over test samples and models).",
        "",
    ]
    rows = []
    for name, grp in (("originals", o), ("generated", g)):
        t = grp["test_acc"]
        sel = grp.get("selected_by_val") or {}
        mean = means.get(name)
        rows.append(
            [
                name,
                str(grp["count"]),
                f"{t['best']:.2f}",
                _ci(t["mean"], mean and mean["ci95"], ".2f"),
                f"{t['median']:.2f}",
                f"{t['min']:.2f}",
                f"{sel['test_acc']:.2f}" if sel else "-",
            ]
        )
    wa = means.get("weight_average")
    rows.append(
        [
            "weight average of all originals",
            "1",
            f"{e['test_acc']:.2f}",
            _ci(e["test_acc"], wa and wa["ci95"], ".2f"),
            f"{e['test_acc']:.2f}",
            f"{e['test_acc']:.2f}",
            "-",
        ]
    )
    lines += markdown_table(["group", "count", "best", "mean [95% CI]", "median", "min", "val-selected"], rows)
    if g.get("nonfinite"):
        lines += [
            "",
            f"{g['nonfinite']} of {g['count']} generated models contain NaN/Inf: not evaluated, counted as failures "
            "(accuracy 0) in this table, and left out of the analysis below, which needs finite parameters.",
        ]
    lines += [""] + [f"- {s}" for s in comparison_lines(metrics)]
    lines += ["", "## Are the generated models new?", ""]
    lines += [f"- {s}" for s in novelty["verdict"]]
    lines += [
        "",
        f"Similarity is measured on {novelty['test_samples']} test samples. Mean pairwise IoU of wrong "
        f"predictions: among originals {novelty['pairwise_iou']['originals']:.3f}, among generated "
        f"{novelty['pairwise_iou']['generated']:.3f}, generated vs originals "
        f"{novelty['pairwise_iou']['generated_vs_originals']:.3f}. "
        f"Brackets: 95% intervals ({novelty['bootstrap']['replicates']} bootstrap replicates).",
        "",
    ]
    rows = []
    noise = sorted((n for n in novelty["groups"] if n.startswith("noise_")), key=lambda n: float(n.split("_")[1]))
    for name in [n for n in STYLE if n in novelty["groups"]] + noise:
        s = novelty["groups"][name]
        gap = s.get("gap_to_noise_curve")
        gap_s = _ci(gap, s.get("gap_to_noise_curve_ci95"), "+.2f") + (
            "" if gap is None or s["inside_noise_curve"] else " (outside)"
        )
        replicas = "-" if s["replica_share"] is None else f"{100 * s['replica_share']:.0f}%"
        rows.append(
            [
                _label(name),
                str(s["count"]),
                _ci(s["test_acc_mean"], s.get("test_acc_mean_ci95"), ".2f"),
                f"{s['test_acc_median']:.2f}",
                _ci(s["max_similarity_mean"], s.get("max_similarity_mean_ci95"), ".3f"),
                f"{s['nearest_distance_relative_mean']:.2f}",
                replicas,
                gap_s,
            ]
        )
    lines += markdown_table(
        [
            "group",
            "count",
            "test acc mean",
            "median",
            "max-similarity mean",
            "nearest distance (rel.)",
            "replicas",
            "gap to noise curve (points)",
        ],
        rows,
    )
    if novelty.get("comparisons"):
        lines += [
            "",
            "Differences at matched similarity (gap to the noise curve of the first group minus the second's):",
            "",
        ]
        lines += markdown_table(
            ["groups", "gap difference (points) [95% CI]", "in words"],
            [
                [
                    f"{_label(c['a'])} vs {_label(c['b'])}",
                    _ci(
                        c["gap_to_noise_curve_difference"]["estimate"],
                        c["gap_to_noise_curve_difference"]["ci95"],
                        "+.2f",
                    ),
                    compare(c["gap_to_noise_curve_difference"]),
                ]
                for c in novelty["comparisons"]
            ],
        )
    lines += ["", "Noise curve (amplitude in units of the originals' per-element spread; 0 is the originals):", ""]
    lines += markdown_table(
        ["amplitude", "max-similarity mean", "test acc mean"],
        [
            [f"{p['amplitude']:g}", f"{p['max_similarity_mean']:.3f}", f"{p['test_acc_mean']:.2f}"]
            for p in novelty["noise_curve"]
        ],
    )
    dist = novelty.get("distribution")
    if dist:
        lines += [
            "",
            "## Did the generator learn the distribution?",
            "",
            "In normalized parameter space: the spread of the generated models relative to the training snapshots', "
            f"and k-nearest-neighbour precision / recall (k = {dist['neighbours']}) against the training and the "
            "held-out snapshots.",
            "",
        ]
        sp = dist["spread_ratio"]
        rows = [["training snapshots", f"{dist['training']['precision']:.2f}", f"{dist['training']['recall']:.2f}"]]
        if dist["heldout"]:
            rows.append(
                ["held-out snapshots", f"{dist['heldout']['precision']:.2f}", f"{dist['heldout']['recall']:.2f}"]
            )
        lines += markdown_table(["against", "precision", "recall"], rows)
        lines += [
            "",
            f"Spread ratio (generated std / originals' std per dimension): median {sp['median']:.2f}, "
            f"quartiles {sp['q25']:.2f} to {sp['q75']:.2f}.",
            "",
        ]
        flags = flag_sentences(dist, novelty["groups"]["generated"]["replica_share"])
        lines += [f"**Flag: {f}.**" for f in flags] if flags else ["No collapse or copy flag."]
    if novelty.get("calibration"):
        lines += [
            "",
            "## Conditional generation: requested vs achieved",
            "",
            "The generator is conditioned on validation accuracy. The 'aimed' sets above ask for the median "
            f"({novelty['aimed_at_val_acc']['median']:.2f}%) and the best ({novelty['aimed_at_val_acc']['best']:.2f}%) "
            "training snapshot's. Calibration: each row is a set of models asked for one validation accuracy "
            "(test accuracy is reported, never used).",
            "",
        ]
        lines += markdown_table(
            ["guidance", "requested val", "achieved val (mean ± std)", "error (points)", "achieved test"],
            [
                [
                    f"{r['guidance']:g}",
                    f"{r['requested_val_acc']:.2f}",
                    f"{r['val_acc_mean']:.2f} ± {r['val_acc_std']:.2f}" if r["count"] else "every model NaN/Inf",
                    f"{r['error_val']:+.2f}" if r["count"] else "-",
                    f"{r['test_acc_mean']:.2f}" if r["count"] else "-",
                ]
                for r in novelty["calibration"]
            ],
        )
    lines += ["", "## Figures", ""]
    figures = {
        **FIGURES,
        **({"calibration.png": "Calibration of conditional generation"} if novelty.get("calibration") else {}),
        **(
            {"training.png": "Training: loss and validation checks by step"}
            if any((training or {}).get(name, {}).get("curve") for name in ("autoencoder", "diffusion"))
            else {}
        ),
    }
    for file, title in figures.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += ["## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in novelty["definitions"].items()]
    lines += ["", "The numbers are in `novelty.json` (this directory) and `../metrics.json`."]
    return "\n".join(lines) + "\n"
