"""The visual report: figures (matplotlib, PNG) and report.md, from the novelty analysis and metrics.json."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .conditional import AIMS, GUIDANCES, aim_name  # noqa: E402
from .novelty import LABELS, NOISE_AMPLITUDES, noise_name  # noqa: E402
from .storage import write_bytes_atomic  # noqa: E402

STYLE = {
    "originals": ("originals (training snapshots)", "tab:blue"),
    "generated": ("generated", "tab:red"),
    "weight_average": (LABELS["weight_average"], "tab:green"),
    "gaussian": (LABELS["gaussian"], "tab:purple"),
    "heldout": (LABELS["heldout"], "tab:orange"),
    **{aim_name(a, w): (LABELS[aim_name(a, w)], color)
       for (a, w), color in zip([(a, w) for a in AIMS for w in GUIDANCES], ("tab:olive", "tab:cyan", "tab:brown", "tab:pink"))},
}
MID_NOISE = noise_name(1.0)


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _groups(per_model: dict, with_noise: bool = True):
    names = [n for n in STYLE if n in per_model]
    if with_noise and MID_NOISE in per_model:
        names.append(MID_NOISE)
    for n in names:
        label, color = STYLE.get(n, ("originals + noise (amplitude 1)", "tab:gray"))
        yield n, label, color


def accuracy_histogram(per_model: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    accs = np.concatenate([per_model[n]["test_acc"].numpy() for n, _, _ in _groups(per_model)])
    bins = np.linspace(accs.min(), accs.max(), 40)
    for n, label, color in _groups(per_model):
        ax.hist(per_model[n]["test_acc"].numpy(), bins=bins, histtype="step", lw=1.8, color=color, label=label, density=True)
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("density")
    ax.set_title("Test accuracy of each group")
    ax.legend(fontsize=8)
    _save(fig, path)


def novelty_plane(per_model: dict, novelty: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    for n, label, color in _groups(per_model, with_noise=False):
        if n == "originals":
            continue
        pm = per_model[n]
        ax.scatter(pm["max_similarity"].numpy(), pm["test_acc"].numpy(), s=8, alpha=0.35, color=color)
        g = novelty["groups"][n]
        ax.scatter([g["max_similarity_mean"]], [g["test_acc_mean"]], s=120, marker="*", color=color,
                   edgecolor="black", zorder=5, label=f"{label} (mean)")
    curve = sorted(novelty["noise_curve"], key=lambda p: p["max_similarity_mean"])
    ax.plot([p["max_similarity_mean"] for p in curve], [p["test_acc_mean"] for p in curve], "-o", color="black",
            lw=1.5, ms=4, label="originals + noise (mean per amplitude)")
    for p in curve:
        ax.annotate(f"{p['amplitude']:g}", (p["max_similarity_mean"], p["test_acc_mean"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
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


def pca_map(per_model: dict, path: Path) -> None:
    from sklearn.decomposition import PCA

    orig = per_model["originals"]["normalized"].numpy()
    basis = "the originals'"
    if len(orig) < 3:  # too few originals to define two components: use every group's models
        orig = np.concatenate([per_model[n]["normalized"].numpy() for n, _, _ in _groups(per_model)])
        basis = "all models'"
    pca = PCA(n_components=2).fit(orig)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for n, label, color in _groups(per_model):
        xy = pca.transform(per_model[n]["normalized"].numpy())
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.5, color=color, label=label)
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 of {basis} parameters ({100 * ev[0]:.0f}% of their variance)")
    ax.set_ylabel(f"PC 2 ({100 * ev[1]:.0f}%)")
    ax.set_title(f"Normalized parameters, projected on {basis} principal components")
    ax.legend(fontsize=8)
    _save(fig, path)


def distance_histogram(per_model: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
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


def calibration_plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    requested = [r["requested_val_acc"] for r in rows]
    lo, hi = min(requested), max(requested)
    pad = max(0.05, 0.1 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=1, ls=":", label="achieved = requested")
    for w, color in zip(sorted({r["guidance"] for r in rows}), ("tab:red", "tab:brown", "tab:pink", "tab:gray")):
        sub = [r for r in rows if r["guidance"] == w]
        x = [r["requested_val_acc"] for r in sub]
        ax.errorbar(x, [r["val_acc_mean"] for r in sub], yerr=[r["val_acc_std"] for r in sub], fmt="-o", ms=4,
                    color=color, capsize=2, label=f"validation, guidance {w:g}")
        ax.plot(x, [r["test_acc_mean"] for r in sub], "--s", ms=3, color=color, alpha=0.7, label=f"test, guidance {w:g}")
    ax.set_xlabel("requested validation accuracy (%)")
    ax.set_ylabel("achieved mean accuracy (%)")
    ax.set_title("Calibration: requested vs achieved (bars: one std. of the models)")
    ax.legend(fontsize=7)
    _save(fig, path)


FIGURES = {
    "accuracy.png": "Test accuracy",
    "novelty_plane.png": "Accuracy vs similarity to the training snapshots",
    "pca.png": "Parameters in the originals' principal-component plane",
    "nearest_distance.png": "Nearest-original distance",
}


def write_report(out_dir: str | Path, metrics: dict, novelty: dict, per_model: dict) -> Path:
    out = Path(out_dir)
    accuracy_histogram(per_model, out / "accuracy.png")
    novelty_plane(per_model, novelty, out / "novelty_plane.png")
    pca_map(per_model, out / "pca.png")
    distance_histogram(per_model, out / "nearest_distance.png")
    if novelty.get("calibration"):
        calibration_plot(novelty["calibration"], out / "calibration.png")
    path = out / "report.md"
    write_bytes_atomic(path, markdown(metrics, novelty).encode())
    return path


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def markdown(metrics: dict, novelty: dict) -> str:
    o, g, e = metrics["originals"], metrics["generated"], metrics["ensemble"]
    lines = [f"# nndiff report: {metrics['task']}", ""]
    lines += ["## Accuracy", "", "Test accuracy (%). *best* is the maximum on the test set (an oracle, shown to compare "
              "with the paper); *val-selected* is the test accuracy of the model with the best validation accuracy.", ""]
    rows = []
    for name, grp in (("originals", o), ("generated", g)):
        t = grp["test_acc"]
        sel = grp.get("selected_by_val") or {}
        rows.append([name, str(grp["count"]), f"{t['best']:.2f}", f"{t['mean']:.2f}", f"{t['median']:.2f}", f"{t['min']:.2f}",
                     f"{sel['test_acc']:.2f}" if sel else "-"])
    rows.append(["weight average of all originals", "1", *[f"{e['test_acc']:.2f}"] * 4, "-"])
    lines += _table(["group", "count", "best", "mean", "median", "min", "val-selected"], rows)
    lines += ["", "## Are the generated models new?", ""]
    lines += [f"- {s}" for s in novelty["verdict"]]
    lines += ["", f"Similarity is measured on {novelty['test_samples']} test samples. Mean pairwise IoU of wrong "
              f"predictions: among originals {novelty['pairwise_iou']['originals']:.3f}, among generated "
              f"{novelty['pairwise_iou']['generated']:.3f}, generated vs originals {novelty['pairwise_iou']['generated_vs_originals']:.3f}.", ""]
    rows = []
    order = list(STYLE) + [noise_name(a) for a in NOISE_AMPLITUDES]
    for name in order:
        if name not in novelty["groups"]:
            continue
        s = novelty["groups"][name]
        label = STYLE[name][0] if name in STYLE else f"originals + noise {name.split('_')[1]}"
        gap = s.get("gap_to_noise_curve")
        gap_s = "-" if gap is None else f"{gap:+.2f}" + ("" if s["inside_noise_curve"] else " (outside)")
        replicas = "-" if s["replica_share"] is None else f"{100 * s['replica_share']:.0f}%"
        rows.append([label, str(s["count"]), f"{s['test_acc_mean']:.2f}", f"{s['test_acc_median']:.2f}",
                     f"{s['max_similarity_mean']:.3f}", f"{s['nearest_distance_relative_mean']:.2f}", replicas, gap_s])
    lines += _table(["group", "count", "test acc mean", "median", "max-similarity mean", "nearest distance (rel.)",
                     "replicas", "gap to noise curve (points)"], rows)
    lines += ["", "Noise curve (amplitude in units of the originals' per-element spread; 0 is the originals):", ""]
    lines += _table(["amplitude", "max-similarity mean", "test acc mean"],
                    [[f"{p['amplitude']:g}", f"{p['max_similarity_mean']:.3f}", f"{p['test_acc_mean']:.2f}"] for p in novelty["noise_curve"]])
    if novelty.get("calibration"):
        lines += ["", "## Conditional generation: requested vs achieved", "",
                  "The generator is conditioned on validation accuracy. The 'aimed' sets above ask for the median "
                  f"({novelty['aimed_at_val_acc']['median']:.2f}%) and the best ({novelty['aimed_at_val_acc']['best']:.2f}%) "
                  "training snapshot's. Calibration: each row is a set of models asked for one validation accuracy "
                  "(test accuracy is reported, never used).", ""]
        lines += _table(["guidance", "requested val", "achieved val (mean ± std)", "error (points)", "achieved test"],
                        [[f"{r['guidance']:g}", f"{r['requested_val_acc']:.2f}", f"{r['val_acc_mean']:.2f} ± {r['val_acc_std']:.2f}",
                          f"{r['error_val']:+.2f}", f"{r['test_acc_mean']:.2f}"] for r in novelty["calibration"]])
    lines += ["", "## Figures", ""]
    figures = {**FIGURES, **({"calibration.png": "Calibration of conditional generation"} if novelty.get("calibration") else {})}
    for file, title in figures.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += ["## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in novelty["definitions"].items()]
    lines += ["", "The numbers are in `novelty.json` (this directory) and `../metrics.json`."]
    return "\n".join(lines) + "\n"
