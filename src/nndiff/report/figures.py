"""The report's figures (matplotlib's object API, PNG), from the novelty analysis and the training curves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, so the caller's backend stays as it was

from nndiff.analysis.baselines import LABELS, noise_name
from nndiff.generator.conditional import AIMS, GUIDANCES, aim_name
from nndiff.io.files import write_bytes_atomic
from nndiff.training.budget import UNEXPLAINED

STYLE = {
    "originals": ("originals (training snapshots)", "tab:blue"),
    "generated": ("generated", "tab:red"),
    "weight_average": (LABELS["weight_average"], "tab:green"),
    "gaussian": (LABELS["gaussian"], "tab:purple"),
    "heldout": (LABELS["heldout"], "tab:orange"),
    **{
        aim_name(a, w): (LABELS[aim_name(a, w)], color)
        for (a, w), color in zip(
            [(a, w) for a in AIMS for w in GUIDANCES], ("tab:olive", "tab:cyan", "tab:brown", "tab:pink")
        )
    },
}


MID_NOISE = noise_name(1.0)


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def _groups(per_model: dict, with_noise: bool = True):
    names = [n for n in STYLE if n in per_model]
    if with_noise and MID_NOISE in per_model:
        names.append(MID_NOISE)
    for n in names:
        label, color = STYLE.get(n, ("originals + noise (amplitude 1)", "tab:gray"))
        yield n, label, color


def accuracy_histogram(per_model: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    accs = np.concatenate([per_model[n]["test_acc"].numpy() for n, _, _ in _groups(per_model)])
    bins = np.linspace(accs.min(), accs.max(), 40)
    for n, label, color in _groups(per_model):
        ax.hist(
            per_model[n]["test_acc"].numpy(), bins=bins, histtype="step", lw=1.8, color=color, label=label, density=True
        )
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("density")
    ax.set_title("Test accuracy of each group")
    ax.legend(fontsize=8)
    _save(fig, path)


def novelty_plane(per_model: dict, novelty: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for n, label, color in _groups(per_model, with_noise=False):
        if n == "originals":
            continue
        pm = per_model[n]
        ax.scatter(pm["max_similarity"].numpy(), pm["test_acc"].numpy(), s=8, alpha=0.35, color=color)
        g = novelty["groups"][n]
        ax.scatter(
            [g["max_similarity_mean"]],
            [g["test_acc_mean"]],
            s=120,
            marker="*",
            color=color,
            edgecolor="black",
            zorder=5,
            label=f"{label} (mean)",
        )
    curve = sorted(novelty["noise_curve"], key=lambda p: p["max_similarity_mean"])
    ax.plot(
        [p["max_similarity_mean"] for p in curve],
        [p["test_acc_mean"] for p in curve],
        "-o",
        color="black",
        lw=1.5,
        ms=4,
        label="originals + noise (mean per amplitude)",
    )
    for p in curve:
        ax.annotate(
            f"{p['amplitude']:g}",
            (p["max_similarity_mean"], p["test_acc_mean"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    # Frame the means and the curve; a few poor single models would otherwise squash everything.
    scattered = np.concatenate([per_model[n]["test_acc"].numpy() for n, _, _ in _groups(per_model, with_noise=False)])
    lo = min(min(p["test_acc_mean"] for p in curve), float(np.percentile(scattered, 2)))
    hi = float(scattered.max())
    ax.set_ylim(lo - 0.1 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3)
    ax.set_xlabel("max similarity to training snapshots (IoU of wrong test predictions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs novelty: above the noise curve is better")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def pca_map(per_model: dict, plane: dict, path: Path) -> None:
    """Every group's models in the principal plane novelty.analyze projected them on (`plane`: its
    basis and the share of that basis's variance each component holds)."""
    basis = "the originals'" if plane["basis"] == "originals" else "all models'"
    ev = plane["explained_variance"]
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    for n, label, color in _groups(per_model):
        xy = per_model[n]["plane"].numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.5, color=color, label=label)
    ax.set_xlabel(f"PC 1 of {basis} parameters ({100 * ev[0]:.0f}% of their variance)")
    ax.set_ylabel(f"PC 2 ({100 * ev[1]:.0f}%)")
    ax.set_title(f"Normalized parameters, projected on {basis} principal components")
    ax.legend(fontsize=8)
    _save(fig, path)


def distance_histogram(per_model: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    vals = [per_model[n]["nearest_distance_relative"].numpy() for n, _, _ in _groups(per_model)]
    vals = [v[np.isfinite(v)] for v in vals]
    finite = [v for v in vals if len(v)]
    if not finite:  # a single original has no nearest-neighbour spacing to measure against
        ax.text(0.5, 0.5, "undefined: the zoo has a single snapshot", ha="center", va="center", transform=ax.transAxes)
    bins = np.linspace(0, max(float(v.max()) for v in finite) * 1.02 + 1e-9, 40) if finite else 10
    for (n, label, color), v in zip(_groups(per_model), vals):
        if len(v):
            ax.hist(v, bins=bins, histtype="step", lw=1.8, color=color, label=label, density=True)
    ax.axvline(0.1, color="black", ls=":", lw=1)
    ax.set_xlabel("distance to the nearest training snapshot / the snapshots' own nearest-neighbour spacing")
    ax.set_ylabel("density")
    ax.set_title("Nearest-original distance (left of the dotted line: replicas)")
    if finite:
        ax.legend(fontsize=8)
    _save(fig, path)


def gap_plot(novelty: dict, path: Path) -> None:
    """Each group's gap to the noise curve with its 95% interval: which ones are clear of zero."""
    names = [n for n in STYLE if "gap_to_noise_curve" in novelty["groups"].get(n, {})]
    fig = Figure(figsize=(7, 0.5 * len(names) + 1.5))
    ax = fig.subplots()
    for i, n in enumerate(names):
        g = novelty["groups"][n]
        lo, hi = g.get("gap_to_noise_curve_ci95") or (g["gap_to_noise_curve"],) * 2
        ax.errorbar(
            [g["gap_to_noise_curve"]],
            [i],
            xerr=[[g["gap_to_noise_curve"] - lo], [hi - g["gap_to_noise_curve"]]],
            fmt="o",
            color=STYLE[n][1],
            capsize=4,
            ms=7,
        )
    ax.axvline(0, color="black", lw=1, ls=":")
    ax.set_yticks(range(len(names)), [STYLE[n][0] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("gap to the noise curve (points of test accuracy); bars: 95% interval")
    ax.set_title("Above the noise curve? Only where the interval clears zero")
    _save(fig, path)


def calibration_plot(rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    requested = [r["requested_val_acc"] for r in rows]
    lo, hi = min(requested), max(requested)
    pad = max(0.05, 0.1 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=1, ls=":", label="achieved = requested")
    for w, color in zip(sorted({r["guidance"] for r in rows}), ("tab:red", "tab:brown", "tab:pink", "tab:gray")):
        sub = [r for r in rows if r["guidance"] == w and r["count"]]  # a request met only by NaN models: no point
        x = [r["requested_val_acc"] for r in sub]
        ax.errorbar(
            x,
            [r["val_acc_mean"] for r in sub],
            yerr=[r["val_acc_std"] for r in sub],
            fmt="-o",
            ms=4,
            color=color,
            capsize=2,
            label=f"validation, guidance {w:g}",
        )
        ax.plot(
            x, [r["test_acc_mean"] for r in sub], "--s", ms=3, color=color, alpha=0.7, label=f"test, guidance {w:g}"
        )
    ax.set_xlabel("requested validation accuracy (%)")
    ax.set_ylabel("achieved mean accuracy (%)")
    ax.set_title("Calibration: requested vs achieved (bars: one std. of the models)")
    ax.legend(fontsize=7)
    _save(fig, path)


def training_plot(training: dict, path: Path) -> None:
    """One column per training loop: its loss, then (under an automatic budget) the validation checks
    its budget was chosen by, against the step; the dashed line is where it stopped."""
    loops = [(name, training[name]) for name in ("autoencoder", "diffusion") if training.get(name, {}).get("curve")]
    checked = any("val_acc" in stats["curve"][0] for _, stats in loops)
    rows = 3 if checked else 1
    fig = Figure(figsize=(5.5 * len(loops), 2.6 * rows))
    axes = fig.subplots(rows, len(loops), squeeze=False, sharex="col")
    for col, (name, stats) in enumerate(loops):
        curve = stats["curve"]
        steps = [p["step"] for p in curve]
        how = "chosen by validation" if stats.get("budget") == "validation" else "fixed"
        axes[0][col].set_title(f"{name}: {stats['steps']} steps ({how})", fontsize=9)
        axes[0][col].plot(steps, [p["loss"] for p in curve], "-o", ms=3, color="tab:gray")
        axes[0][col].set_yscale("log")
        axes[0][col].set_ylabel("training loss")
        if checked and "val_acc" in curve[0]:
            acc, ref = [p["val_acc"] for p in curve], curve[-1].get("snapshots_val_acc")
            what = "held-back reconstructions" if name == "autoencoder" else "generated batch"
            ax = axes[1][col]
            ax.plot(steps, acc, "-s", ms=3, color="tab:red", label=what)
            if ref is not None:
                ax.axhline(
                    ref,
                    color="tab:blue",
                    ls=":",
                    lw=1.2,
                    label="their snapshots" if name == "autoencoder" else "snapshots",
                )
                low, high = min(acc + [ref]), max(acc + [ref])
                pad = max(0.5, 0.1 * (high - low))  # a few hundredths of a point must not look like a cliff
                ax.set_ylim(low - pad, high + pad)
            ax.set_ylabel("val. accuracy (%)")
            ax.legend(fontsize=7)
            ax = axes[2][col]
            if name == "autoencoder":
                ax.plot(steps, [100 * p["unexplained"] for p in curve], "-s", ms=3, color="tab:purple")
                ax.axhline(100 * UNEXPLAINED, color="black", ls=":", lw=1)
                ax.set_ylabel("variation missed (%)")
            else:
                ax.plot(steps, [p["spread"] for p in curve], "-s", ms=3, color="tab:purple")
                ax.axhline(1.0, color="black", ls=":", lw=1)
                ax.set_yscale("log")
                ax.set_ylabel("spread / snapshots'")
        elif checked:
            axes[1][col].axis("off")
            axes[2][col].axis("off")
        for row in range(rows):
            axes[row][col].axvline(stats["steps"], color="black", lw=1, ls="--")
        axes[rows - 1][col].set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)
