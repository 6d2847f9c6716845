"""The printed table of a run's metrics and the sentences comparing its groups."""

from __future__ import annotations

from nndiff.evaluation.uncertainty import compare


def format_table(metrics: dict) -> str:
    """A plain-text table of test accuracies (percent)."""
    rows = [("group", "count", "best", "mean", "median", "min", "val-selected")]
    o, g = metrics["originals"], metrics["generated"]
    sel_o = f"{o['selected_by_val']['test_acc']:.2f}"
    sel_g = f"{g['selected_by_val']['test_acc']:.2f}" if g["selected_by_val"] else "-"
    for name, group, sel in (("originals", o, sel_o), ("generated", g, sel_g)):
        t = group["test_acc"]
        rows.append(
            (
                name,
                str(group["count"]),
                f"{t['best']:.2f}",
                f"{t['mean']:.2f}",
                f"{t['median']:.2f}",
                f"{t['min']:.2f}",
                sel,
            )
        )
    e = metrics["weight_average"]["test_acc"]
    rows.append(("weight average", "1", f"{e:.2f}", f"{e:.2f}", f"{e:.2f}", f"{e:.2f}", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("test accuracy (%). 'best' is the maximum on test (an oracle, for comparison with the paper);")
    lines.append("'val-selected' is the test accuracy of the model with the best validation accuracy.")
    if g.get("nonfinite"):
        lines.append(
            f"{g['nonfinite']} of {g['count']} generated model(s) contained NaN/Inf: not evaluated, counted as "
            "failures (accuracy 0 in every column)."
        )
    lines.append(
        f"{100 * g['oracle_within_1pt_of_best_original']:.0f}% of generated models are within 1 point of the best "
        "original (an oracle: the best original on test)."
    )
    lines += comparison_lines(metrics)
    return "\n".join(lines)


def comparison_lines(metrics: dict) -> list[str]:
    """The comparisons of metrics.json in words, each with its uncertainty."""
    c = metrics.get("comparisons")
    if not c:
        return []
    return [
        f"Mean test accuracy, generated vs originals: {compare(c['generated_minus_originals'], 'higher', 'lower')}.",
        "Mean test accuracy, generated vs the weight average: "
        f"{compare(c['generated_minus_weight_average'], 'higher', 'lower')}.",
        "Val-selected generated vs val-selected original: "
        f"{compare(c['selected_generated_minus_selected_original'], 'higher', 'lower')}.",
    ]
