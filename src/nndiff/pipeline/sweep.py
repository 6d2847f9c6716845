"""The paper's ablations, one command each: number of snapshots K, noise augmentation, generated layers.

Every row is a complete run directory (zoo, generator, generated models, metrics.json, report/)
under OUT/<ablation>/<row>, trained from one shared base zoo in OUT/zoo, so a row can be inspected
or re-run like any other run. The table collects test accuracy (best / mean / median, and the
validation-selected model) and the novelty numbers of each row.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import SampleConfig
from nndiff.io.files import load_json, save_json, write_bytes_atomic
from nndiff.pipeline.generate import generate_run
from nndiff.pipeline.stages import collect_zoo, evaluate_run, report_run, train_run
from nndiff.report.markdown import markdown_table
from nndiff.tasks import get_task
from nndiff.zoo.collect import collect
from nndiff.zoo.config import CollectConfig
from nndiff.zoo.format import Zoo

ABLATIONS = ("k", "noise", "layers")


DEFAULT_K = (1, 10, 50, 200)


NOISE_ROWS = {  # (input noise, latent noise)
    "no noise": (0.0, 0.0),
    "input noise only": (0.001, 0.0),
    "latent noise only": (0.0, 0.1),
    "input + latent noise": (0.001, 0.1),
}


def norm_layer_names(model: nn.Module) -> list[str]:
    """Names of the normalization modules that have parameters, in model order."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, kinds) and any(True for _ in m.parameters(recurse=False))
    ]


def _subset(zoo: Zoo, k: int) -> Zoo:
    """k snapshots spread evenly over the zoo's trajectory (the held-out ones stay the same)."""
    if k > len(zoo):
        raise NndiffError(f"--values asks for K={k} but the zoo holds {len(zoo)} snapshots; collect more with -k")
    idx = torch.linspace(0, len(zoo) - 1, k).round().long().unique()
    sub = copy.copy(zoo)
    sub.params = zoo.params[idx]
    sub.snapshots = [zoo.snapshots[i] for i in idx.tolist()]
    sub.info = {
        **zoo.info,
        "mean_pairwise_iou_val": None,
        "subset": f"{len(idx)} of {len(zoo)} snapshots, evenly spaced",
    }
    return sub


def plan_rows(ablation: str, task_name: str, values: list[int] | None) -> list[tuple[str, dict]]:
    """(row name, what changes) for each row of an ablation."""
    if ablation == "k":
        return [(f"K={k}", {"k": k}) for k in (values or DEFAULT_K)]
    if ablation == "noise":
        return [(name, {"noise": v}) for name, v in NOISE_ROWS.items()]
    if ablation == "layers":
        norms = norm_layer_names(get_task(task_name).make_model())
        if not norms:
            raise NndiffError(f"task {task_name!r} has no normalization layers to ablate over")
        counts = values or [c for c in (1, 2, 3) if c <= len(norms)]
        if max(counts) > len(norms):
            raise NndiffError(
                f"--values asks for the last {max(counts)} normalization layers, but task {task_name!r} has "
                f"{len(norms)} ({', '.join(norms)})"
            )
        return [
            (f"last {c} norm layer{'s' if c > 1 else ''}", {"select": [f"{n}.*" for n in norms[-c:]]}) for c in counts
        ]
    raise NndiffError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")


def run_sweep(
    task: str,
    ablation: str,
    out: str | Path,
    collect_config: CollectConfig,
    *,
    train_config: TrainConfig,
    values: list[int] | None = None,
    sample: SampleConfig | None = None,
    progress: bool = True,
    log=print,
    base: str | Path | None = None,
    fresh: bool = False,
) -> list[dict]:
    """One full run per row of the ablation, all from one shared zoo (collected from `base`, a
    state_dict file, when given), sampled as `sample` says with the training seed. A finished
    shared zoo and finished rows are reused when their settings match; `fresh` collects and trains
    them anew."""
    from nndiff.config.settings import number

    out = Path(out)
    collect_config.validate(), train_config.validate()
    for v in values or []:
        number(v, "--values", low=1, integer=True)
    sample, seed = (sample or SampleConfig()).validate(), train_config.seed
    rows = plan_rows(ablation, task, values)
    if ablation == "k":
        collect_config = replace(collect_config, k=max(max(r[1]["k"] for r in rows), collect_config.k))
    base_dir = out / "zoo"
    log(f"collecting the shared zoo into {base_dir}" + (f" from the base model {base}" if base else ""))
    base_zoo = collect_zoo(task, base_dir, collect_config, progress, base=base, fresh=fresh)  # reused when finished
    results = []
    for i, (name, change) in enumerate(rows, 1):
        row_dir = out / ablation / name.replace(" ", "_").replace("=", "").replace("+", "and")
        log(f"[{i}/{len(rows)}] {name} -> {row_dir}")
        config = copy.deepcopy(train_config)
        if "k" in change:
            _subset(base_zoo, change["k"]).save(row_dir / "zoo")
        elif "select" in change:
            zoo = collect(task, replace(collect_config, select=change["select"]), progress, base_zoo.base_state)
            zoo.save(row_dir / "zoo")
        else:
            base_zoo.save(row_dir / "zoo")
            config.autoencoder.input_noise, config.autoencoder.latent_noise = change["noise"]
        train_run(row_dir / "zoo", row_dir, config, progress, fresh=fresh)
        generate_run(row_dir, sample, seed, config.device)
        metrics = evaluate_run(row_dir, config.device, progress)
        report_run(row_dir, config.device, seed, progress)
        novelty = load_json(row_dir / "report" / "novelty.json")
        results.append(summarize_row(name, row_dir, metrics, novelty))
    save_json(out / f"sweep_{ablation}.json", results)
    write_bytes_atomic(out / f"sweep_{ablation}.md", sweep_table(ablation, results).encode())
    return results


def summarize_row(name: str, row_dir: Path, metrics: dict, novelty: dict) -> dict:
    gen, orig = metrics["generated"], metrics["originals"]
    g = novelty["groups"]["generated"]
    return {
        "row": name,
        "dir": str(row_dir),
        "originals": {"count": orig["count"], "mean": orig["test_acc"]["mean"], "best": orig["test_acc"]["best"]},
        "generated": {
            "best": gen["test_acc"]["best"],
            "mean": gen["test_acc"]["mean"],
            "median": gen["test_acc"]["median"],
            "val_selected": gen["selected_by_val"]["test_acc"] if gen["selected_by_val"] else None,
        },
        "generated_minus_originals": (metrics.get("comparisons") or {}).get("generated_minus_originals"),
        "novelty": {
            "max_similarity_mean": g["max_similarity_mean"],
            "replica_share": g["replica_share"],
            "gap_to_noise_curve": g["gap_to_noise_curve"],
            "gap_to_noise_curve_ci95": g.get("gap_to_noise_curve_ci95"),
            "inside_noise_curve": g["inside_noise_curve"],
            "nearest_distance_relative_mean": g["nearest_distance_relative_mean"],
            "flags": novelty.get("distribution", {}).get("flags"),
        },
    }


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def sweep_table(ablation: str, results: list[dict]) -> str:
    header = [
        "row",
        "originals (K)",
        "orig. mean",
        "gen. best (oracle)",
        "gen. mean",
        "gen. − orig. mean [95% CI]",
        "gen. median",
        "gen. val-selected",
        "max-similarity",
        "replicas",
        "gap to noise curve [95% CI]",
        "flags",
    ]
    lines = [
        f"# Ablation: {ablation}",
        "",
        "Test accuracy (%); novelty numbers as in report.md; brackets are 95% intervals "
        "(paired bootstrap over test samples and models). One run directory per row.",
        "",
    ]
    rows = []
    for r in results:
        o, g, nv = r["originals"], r["generated"], r["novelty"]
        diff = r.get("generated_minus_originals")
        gap_ci = nv.get("gap_to_noise_curve_ci95")
        cells = [
            r["row"],
            str(o["count"]),
            _f(o["mean"], ".2f"),
            _f(g["best"], ".2f"),
            _f(g["mean"], ".2f"),
            "-" if diff is None else f"{diff['estimate']:+.2f} [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]",
            _f(g["median"], ".2f"),
            _f(g["val_selected"], ".2f"),
            _f(nv["max_similarity_mean"], ".3f"),
            "-" if nv["replica_share"] is None else f"{100 * nv['replica_share']:.0f}%",
            _f(nv["gap_to_noise_curve"], "+.2f")
            + ("" if gap_ci is None else f" [{gap_ci[0]:+.2f}, {gap_ci[1]:+.2f}]")
            + ("" if nv["inside_noise_curve"] else " (outside)"),
            ", ".join(nv.get("flags") or []) or "-",
        ]
        rows.append(cells)
    return "\n".join(lines + markdown_table(header, rows)) + "\n"
