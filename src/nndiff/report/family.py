"""A family run's report: each method on the held-out tasks, with intervals, and a figure of
every method's accuracy on every held-out task."""

from __future__ import annotations

import math
from pathlib import Path

from nndiff.io.files import write_bytes_atomic, write_directory

LABELS = {
    "trained": "trained for the task (yardstick: the task's own SGD snapshots)",
    "regression": "regression hypernetwork (MLP, descriptor -> head, MSE)",
    "regression_tuned": "the regression tuned with the tasks' loss (cross-entropy on training tasks)",
    "diffusion": "latent diffusion conditioned on the descriptor",
    "retrieval_nearest": "retrieval: the nearest training task by descriptor",
    "retrieval_best_on_val": "retrieval: the training task best on the new task's validation data",
    "zoo_mean": "the mean of the whole zoo",
    "regression_examples": "regression from labelled examples (the trunk's class means) -> head",
    "sgd_on_examples": "SGD on the labelled examples alone (100 steps)",
    "regression_examples_per_base_class": "regression from labelled examples of every base class -> head",
    "sgd_on_examples_per_base_class": "SGD on labelled examples of every base class alone (100 steps)",
}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.startswith("sgd_same_time_as_"):
        return f"SGD for the time the {name.removeprefix('sgd_same_time_as_')} generator takes per task"
    if name.startswith("sgd_"):
        return f"SGD from the common start, {name.removeprefix('sgd_')} step(s)"
    return LABELS.get(name, name)


def methods(metrics: dict) -> list[str]:
    return [k for k, v in metrics.items() if isinstance(v, dict) and "per_task" in v]


def family_markdown(metrics: dict) -> str:
    chosen = metrics["chosen_on_validation_tasks"]["generator"]
    ref = f"minus_{chosen}"
    lines = [
        f"# nndiff family report: {metrics['family']}",
        "",
        f"Tasks: {metrics['tasks']['train']} to train the generators, {metrics['tasks']['val']} to choose between "
        f"them, {metrics['tasks']['heldout']} held out (never shown to a generator). Test accuracy (%) on the "
        "held-out tasks, averaged over each method's models and over tasks; brackets: 95% intervals "
        "(paired bootstrap over held-out tasks and test samples).",
        "",
        f"The validation tasks chose the **{chosen}** generator ("
        + ", ".join(f"{k} {v:.2f}%" for k, v in metrics["chosen_on_validation_tasks"]["val_acc_mean"].items())
        + " validation accuracy; "
        + "; ".join(f"{k.replace('_', ' ')} {d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
                    for k, d in metrics["chosen_on_validation_tasks"].items() if k.endswith(f"_minus_{chosen}"))
        + ").",
        "",
        f"Descriptors: {'each task' + chr(39) + 's code' if metrics['asked_by'] == 'code' else 'labelled examples'}; "
        f"the examples-conditioned generator ({metrics['examples_generator']}) and the examples baselines see "
        f"{metrics['shots']} examples per class from each task's training split"
        + (f" (and {metrics['shots']} of every base class, each labelled by the task)."
           if "regression_examples_per_base_class" in metrics else "."),
        "",
        f"| method | models per task | test accuracy | minus {chosen} |",
        "|---|---|---|---|",
    ]
    for name in sorted(methods(metrics), key=lambda k: -metrics[k]["test_acc_mean"]):
        m, d = metrics[name], metrics[name][ref]
        diff = "-" if name == chosen else f"{d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
        lines.append(f"| {label(name)} | {metrics['models_per_task'][name]} | {m['test_acc_mean']:.2f} "
                     f"[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] | {diff} |")
    if "diffusion_minus_regression" in metrics:
        d = metrics["diffusion_minus_regression"]
        lines += ["", f"Latent diffusion minus the plain (MSE) regression: {d['estimate']:+.2f} "
                  f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] points."]
    lines += ["", "## What one generation is worth", ""]
    for gen, steps in metrics["sgd_steps_worth"].items():
        worth = "more than 1,000" if math.isinf(steps) else f"about {steps:,.0f}"
        s = metrics["sampling_s"][gen]
        lines.append(f"- {gen}: as accurate as {worth} SGD steps from the common start; {s['per_task'] * 1000:.1f} ms "
                     f"per task, 100 models for one task in {s['100_models_one_task']:.3f} s (in that time per task, "
                     f"SGD takes {s['sgd_steps_in_that_time']} steps).")
    nov = metrics["novelty"]
    lines += [
        "",
        "## Novelty",
        "",
        f"The {chosen} generator's heads lie a median {nov['relative_nearest_distance_median']:.2f} of the "
        "spacing between a held-out task's own trained heads from the nearest of them (normalized parameter "
        f"space); {100 * nov['replica_share']:.0f}% are nearer than a tenth of it (replicas).",
        "",
        "![accuracy on every held-out task](unseen.png)",
        "",
    ]
    return "\n".join(lines)


def figure(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    shown = [k for k in methods(metrics) if not k.startswith("sgd_") or k in ("sgd_10", "sgd_100")]
    for name in sorted(shown, key=lambda k: -metrics[k]["test_acc_mean"]):
        ax.plot(sorted(metrics[name]["per_task"]), label=label(name), linewidth=1.2)
    ax.set_xlabel("held-out tasks, each method's sorted by its accuracy")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, min(min(metrics[k]["per_task"]) for k in shown) - 2), 100.5)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    write_bytes_atomic(path, buf.getvalue())


def write_family_report(out: Path, metrics: dict) -> Path:
    def fill(d: Path) -> None:
        figure(metrics, d / "unseen.png")
        write_bytes_atomic(d / "report.md", family_markdown(metrics).encode())

    return write_directory(out, fill) / "report.md"


def family_summary_lines(metrics: dict) -> list[str]:
    """What `nndiff run --family` prints: each method's mean test accuracy on the held-out tasks."""
    chosen = metrics["chosen_on_validation_tasks"]["generator"]
    width = max(len(label(k)) for k in methods(metrics))
    lines = [f"held-out tasks: {metrics['tasks']['heldout']}; test accuracy (%), 95% interval; chosen: {chosen}"]
    for name in sorted(methods(metrics), key=lambda k: -metrics[k]["test_acc_mean"]):
        m = metrics[name]
        lo, hi = m["ci95"]
        lines.append(f"  {label(name).ljust(width)}  {m['test_acc_mean']:6.2f}  [{lo:.2f}, {hi:.2f}]")
    return lines
