"""The paper's Table 1 on your copy of the datasets: one `nndiff run` per row, a table beside the
published numbers.

    python bench/paper_table.py --list                                   # every row, its command and data layout
    python bench/paper_table.py --data-root /data --out bench/results/paper --device cuda
    python bench/paper_table.py --data-root /data --imagenet /data/imagenet --rows imagenet-resnet18 \
        --base-dir /weights                                              # /weights/imagenet-resnet18.pth: a pretrained base

Rows are the paper's datasets x architectures. A row runs when its data is found under --data-root
(every dataset's own folder name, see `nndiff tasks`; ImageNet's train/ and val/ folders under
--imagenet); the others are listed as not found. ResNets train their base model with the paper's
recipe (`--recipe sgd`); the paper's ViT-Base and ConvNeXt rows start from pretrained weights, so give
those as DIR/<row>.safetensors or .pth with --base-dir (otherwise they train from scratch with AdamW
and are marked so). Options after `--` go to every `nndiff run` (e.g. `-- --epochs 200 -k 300`).

The table reports best, mean and median test accuracy of the originals and the generated models as
the paper does, and the test accuracy of the generated model chosen by validation accuracy (which
the paper does not report), with the 95% interval of generated minus originals.
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
DATASETS = ["mnist", "cifar10", "cifar100", "stl10", "flowers102", "pets", "food101", "imagenet"]
ARCHS = ["resnet18", "resnet50", "vit-tiny", "vit-base", "convnext-tiny", "convnext-base"]
# Published numbers as restated in shared/paper.md (original best -> p-diff best, p-diff mean); the
# dataset of the ViT-B and ConvNeXt-B numbers is read from the order they are listed in.
PAPER = {
    "cifar100-resnet18": (77.15, 77.55, 77.24),
    "cifar100-resnet50": (78.46, 78.61, None),
    "cifar100-vit-base": (91.45, 91.46, None),
    "imagenet-resnet18": (69.52, 70.40, None),
    "imagenet-convnext-base": (85.13, 85.30, None),
}


def rows(selected: list[str] | None) -> list[str]:
    every = [f"{d}-{a}" for d in DATASETS for a in ARCHS]
    unknown = sorted(set(selected or []) - set(every))
    if unknown:
        raise SystemExit(f"unknown rows {', '.join(unknown)}; rows are DATASET-ARCH with {', '.join(DATASETS)} x {', '.join(ARCHS)}")
    return [r for r in every if not selected or r in selected]


def layout(row: str) -> str:
    from nndiff.tasks import datasets

    dataset = row.split("-")[0]
    lines = [line.strip() for line in datasets.__doc__.splitlines()]
    name = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "flowers102": "Flowers-102",
            "pets": "Pets", "food101": "Food-101", "imagenet": "ImageNet"}[dataset]
    text = next(line[len(name) :].strip() for line in lines if line.startswith(name + " "))
    return text.split("  ")[0].replace("ROOT/", "")


def base_file(row: str, base_dir: Path | None) -> Path | None:
    if base_dir is None:
        return None
    return next((base_dir / f"{row}{ext}" for ext in (".safetensors", ".pth", ".pt") if (base_dir / f"{row}{ext}").is_file()), None)


def command(row: str, root: Path, out: Path, base: Path | None, device: str, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nndiff", "--quiet", "run", "--task", row, "--data-root", str(root), "--out", str(out / row),
           "--device", device]
    if base is not None:
        cmd += ["--base", str(base)]
    elif row.split("-", 1)[1].startswith("resnet"):
        cmd += ["--recipe", "sgd"]
    return cmd + extra


def find_data(row: str, root: Path) -> str | None:
    """None where the row's data is there; otherwise why not (the reader's own one-line message)."""
    from nndiff.errors import NndiffError
    from nndiff.tasks.datasets import DATASETS as READERS

    try:
        READERS[row.split("-")[0]][0](root)
    except NndiffError as e:
        return str(e)
    return None


def result(row: str, out: Path, seconds: float, base: Path | None) -> dict:
    m = json.loads((out / row / "metrics.json").read_text())
    return {
        "row": row, "seconds": seconds, "base": "pretrained" if base else ("sgd" if "resnet" in row else "adamw"),
        "originals": m["originals"]["test_acc"], "generated": m["generated"]["test_acc"],
        "selected": m["generated"]["selected_by_val"]["test_acc"],
        "difference": m["comparisons"]["generated_minus_originals"],
        "weight_average": m["weight_average"]["test_acc"],
    }


def markdown(results: list[dict], missing: dict[str, str]) -> str:
    f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d')}. Test accuracy (%). "
        "Paper: original best → p-diff best (p-diff mean) as restated in shared/paper.md. Ours: best / mean / median "
        "of the originals and the generated models; val-selected is the generated model with the best validation "
        "accuracy; the interval is the 95% bootstrap interval of generated minus originals (mean).",
        "",
        "| row | base | paper | originals best / mean / median | generated best / mean / median | val-selected | "
        "generated − originals [95% CI] | weight average | time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        o, g, d = r["originals"], r["generated"], r["difference"]
        lines.append(
            f"| {r['row']} | {r['base']} | {published(r['row'])} | {f(o['best'])} / {f(o['mean'])} / {f(o['median'])} | "
            f"{f(g['best'])} / {f(g['mean'])} / {f(g['median'])} | {f(r['selected'])} | "
            f"{d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] | {f(r['weight_average'])} | {r['seconds']:.0f} |"
        )
    for row, why in sorted(missing.items()):
        lines.append(f"| {row} | | {published(row)} | {why} | | | | | |")
    return "\n".join(lines) + "\n"


def published(row: str) -> str:
    paper = PAPER.get(row)
    if paper is None:
        return "—"
    return f"{paper[0]:.2f} → {paper[1]:.2f}" + ("" if paper[2] is None else f" ({paper[2]:.2f})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="the folder holding each dataset's own folder (cifar-100-python, ...)")
    p.add_argument("--imagenet", type=Path, help="ImageNet's folder, holding train/<wnid>/ and val/<wnid>/")
    p.add_argument("--rows", nargs="+", help="only these rows (default: all)")
    p.add_argument("--base-dir", type=Path, help="pretrained base models as DIR/<row>.safetensors or .pth")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "paper")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--list", action="store_true", help="print every row's command and data layout, run nothing")
    args = p.parse_args(argv)
    chosen = rows(args.rows)
    if args.list:
        for row in chosen:
            root = Path("IMAGENET") if row.startswith("imagenet") else Path("DATA")
            cmd = command(row, root, Path("OUT"), base_file(row, args.base_dir), args.device, extra)
            print(f"{row:24s} {' '.join(['nndiff', *cmd[4:]])}\n{'':24s} data: {root}/{layout(row)}")
        return 0
    if args.data_root is None and args.imagenet is None:
        p.error("give --data-root (and --imagenet for the ImageNet rows), or --list")
    results, missing = [], {}
    for row in chosen:
        root = args.imagenet if row.startswith("imagenet") else args.data_root
        why = "no --imagenet given" if root is None and row.startswith("imagenet") else (
            "no --data-root given" if root is None else find_data(row, root))
        if why:
            missing[row] = f"not run: {why.split(';')[0]}"
            continue
        base = base_file(row, args.base_dir)
        t0 = time.perf_counter()
        done = subprocess.run(command(row, root, args.out, base, args.device, extra), cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            missing[row] = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{row}: {missing[row]}", file=sys.stderr)
            continue
        results.append(result(row, args.out, time.perf_counter() - t0, base))
        print(f"{row}: done in {results[-1]['seconds']:.0f} s", file=sys.stderr)
    table = markdown(results, missing)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_table.md").write_text(table)
    (args.out / "paper_table.json").write_text(json.dumps({"results": results, "not_run": missing}, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
