"""`nndiff generate --run R --code 0110100101`: models for one task of a family run, seen or not."""

from __future__ import annotations

from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.families.family import get_family, parse_code
from nndiff.families.generators import load_generator
from nndiff.io.files import load_json, save_json, write_directory
from nndiff.io.tensors import save_tensors


def generate_for_code(run: str | Path, text: str, n: int, seed: int = 0) -> tuple[Path, str]:
    """Write n heads for the task `text` into RUN/generated (head.weight, head.bias per file) with
    the generator the validation tasks chose; says whether the task was among the training tasks."""
    run = Path(run)
    manifest_path, metrics_path = run / "family" / "manifest.json", run / "metrics.json"
    if not manifest_path.is_file() or not metrics_path.is_file():
        raise NndiffError(f"{run} is not a finished family run; make one with `nndiff run --family NAME --out {run}`")
    manifest, metrics = load_json(manifest_path), load_json(metrics_path)
    family = get_family(manifest.get("family", ""))
    code = parse_code(text, family)
    chosen = metrics.get("chosen_on_validation_tasks", {}).get("generator")
    if chosen not in ("regression", "diffusion"):
        raise NndiffError(f"{metrics_path} does not say which generator was chosen; rerun the family run")
    generator = load_generator(run / f"{chosen}.safetensors")
    heads = generator.sample(code[None], n, seed)
    codes = manifest.get("codes", [])
    seen = "seen: a training task" if text in [codes[i] for i in manifest["tasks"]["train"]] else "unseen"
    classes = family.classes

    def fill(d: Path) -> None:
        for i, h in enumerate(heads):
            w, b = h[: -classes].reshape(classes, -1), h[-classes:]
            save_tensors(d / f"{i:06d}.safetensors", {f"{family.head}.weight": w, f"{family.head}.bias": b},
                         {"code": text, "generator": chosen, "seed": seed + i})
        save_json(d / "info.json", {"code": text, "count": n, "seed": seed, "generator": chosen, "seen": seen})

    return write_directory(run / "generated", fill), seen
