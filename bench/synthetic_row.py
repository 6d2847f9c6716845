"""One paper row at full size on synthetic data of the real shape, timing each stage (for a GPU).

    python bench/synthetic_row.py --device cuda --out /tmp/row                  # CIFAR-100 shape, ResNet-18
    python bench/synthetic_row.py --device cuda --streamed 20000 --out /tmp/row224   # ImageNet-style JPEGs, 224 px

Default: 50,000 training and 10,000 test images of 32x32 in CIFAR-100's python format (100 classes,
each image noise plus a class-dependent pattern so the model has something to learn), then
`nndiff run --task cifar100-resnet18 --recipe sgd` with the default collection and training.
Options after `--` go to `nndiff run` (e.g. `-- --epochs 10`). `--streamed N`: N JPEG images of 256x256 in ImageNet's folder layout (100 classes), read through the
streamed DataLoader path at 224 px. Writes OUT/row.json and prints the seconds of each stage.
Accuracies on synthetic data mean nothing beyond "it learned"; the times are the point.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 100


def _pattern(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Noise plus, per class, one bright cell of a 10x10 grid in a class-dependent colour channel."""
    x = rng.integers(0, 90, (len(labels), 3, size, size), dtype=np.uint8)
    cell = size // 10
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 10)
        x[i, c % 3, r * cell : (r + 1) * cell, col * cell : (col + 1) * cell] = 240
    return x


def write_cifar100(root: Path, train: int, test: int) -> None:
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", train), ("test", test)):
        labels = rng.integers(0, CLASSES, n)
        data = _pattern(labels, 32, rng).reshape(n, -1)
        with open(d / name, "wb") as f:
            pickle.dump({"fine_labels": labels.tolist(), "data": data}, f, protocol=4)


def _write_jpegs(args) -> None:
    from PIL import Image

    folder, start, labels = args
    rng = np.random.default_rng(start)
    for k, img in enumerate(_pattern(labels, 256, rng)):
        path = folder / f"n{labels[k]:08d}" / f"{start + k}.JPEG"
        Image.fromarray(img.transpose(1, 2, 0)).save(path, quality=90)


def write_imagenet_like(root: Path, train: int, val: int) -> None:
    rng = np.random.default_rng(0)
    jobs = []
    for split, n in (("train", train), ("val", val)):
        for c in range(CLASSES):
            (root / split / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        labels = rng.permutation(np.arange(n) % CLASSES)  # every class has images
        jobs += [(root / split, s, labels[s : s + 500]) for s in range(0, n, 500)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_jpegs, jobs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda", "auto"])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "synthetic_row")
    p.add_argument("--streamed", type=int, default=0, metavar="N", help="N ImageNet-style JPEGs at 224 px instead")
    p.add_argument("--train", type=int, default=50_000, help="training images of the CIFAR-100-shaped set")
    p.add_argument("--test", type=int, default=10_000, help="its test images")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]  # `-- OPTIONS` or the options alone: they go to nndiff run
    data = args.out / "data"
    t0 = time.perf_counter()
    if args.streamed:
        write_imagenet_like(data, args.streamed, args.streamed // 10)
        task = ["--task", "imagenet-resnet18"]
    else:
        write_cifar100(data, args.train, args.test)
        task = ["--task", "cifar100-resnet18"]
    made = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "nndiff", "--quiet", "run", *task, "--data-root", str(data), "--recipe", "sgd",
           "--device", args.device, "--out", str(args.out / "run"), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"nndiff run failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    metrics = json.loads((args.out / "run" / "metrics.json").read_text())
    manifest = json.loads((args.out / "run" / "zoo" / "manifest.json").read_text())
    row = {
        "command": " ".join(cmd[2:]),
        "data_seconds": round(made, 1),
        "wall_seconds": round(wall, 1),
        "stages_s": metrics["timings_s"],
        "base_test_acc": manifest["base"]["test_acc"],
        "originals_mean": metrics["originals"]["test_acc"]["mean"],
        "generated_mean": metrics["generated"]["test_acc"]["mean"],
    }
    (args.out / "row.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
