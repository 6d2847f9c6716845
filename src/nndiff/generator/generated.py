"""The set of generated models on disk: written whole and exchanged atomically, checked when read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nndiff.config.settings import check_fields, setting
from nndiff.errors import NndiffError
from nndiff.generator.diffusion import SAMPLERS
from nndiff.io.files import save_json, write_directory
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.params.layout import Layout

GENERATED = "generated"


@dataclass
class SampleConfig:
    """How `generate` samples: how many models, with which sampler, and (conditional runs) aimed where."""

    n: int = setting(100, "number of models to generate", low=1, integer=True, flag="-n")
    sampler: str = setting("ddim", "reverse-process sampler", choices=SAMPLERS, flag="--sampler")
    steps: int = setting(50, "sampling steps (ddpm uses up to 1000)", low=1, integer=True, flag="--steps")
    target_acc: float | None = setting(
        None,
        "conditional runs: the validation accuracy (percent) to aim the models at (default: unconditional)",
        low=0,
        high=100,
        optional=True,
        flag="--target-acc",
    )
    guidance: float = setting(
        1.0,
        "classifier-free guidance strength with --target-acc: 1 is the plain conditional model, larger pushes "
        "harder towards the target",
        low=0,
        flag="--guidance",
    )

    def validate(self) -> SampleConfig:
        check_fields(self)
        if self.target_acc is None and self.guidance != 1.0:
            raise NndiffError("--guidance needs --target-acc (guidance pushes towards a requested accuracy)")
        return self


def check_generate_args(
    n: int, seed: int, sampler: str, steps: int, *, target_acc: float | None = None, guidance: float = 1.0
) -> None:
    """The sampling options, checked before a generator is loaded (or, in `nndiff run`, trained)."""
    from nndiff.config.settings import seed as check_seed

    check_seed(seed)
    SampleConfig(n, sampler, steps, target_acc, guidance).validate()


def write_generated(
    run_dir: str | Path,
    vectors: torch.Tensor,
    layout: Layout,
    seed: int,
    *,
    sampler: str,
    steps: int,
    extra: dict | None = None,
    info: dict | None = None,
) -> Path:
    """Write one safetensors file per generated model into run_dir/generated, replacing what was there.

    The files go to a temporary directory that then takes the place of the old one in one atomic
    exchange, so there is never a moment without a complete generated/ (nor a mix of old and new).
    """

    def fill(tmp: Path) -> None:
        for i, v in enumerate(vectors):
            meta = {"seed": seed + i, "sampler": sampler, "steps": steps, **(extra or {})}
            save_tensors(tmp / f"{i:06d}.safetensors", layout.unflatten(v.contiguous()), meta)
        if info is not None:
            save_json(tmp / "info.json", info)

    return write_directory(Path(run_dir) / GENERATED, fill)


def read_generated(run_dir: str | Path, layout: Layout) -> torch.Tensor:
    """The [N, D] matrix of the generated models in run_dir/generated, checked against the layout."""
    d = Path(run_dir) / GENERATED
    if d.is_symlink():
        raise NndiffError(f"{d} is a link; generated/ must be a directory of the run itself (regenerate it)")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise NndiffError(f"no generated models in {d}; run `nndiff generate --run {run_dir}` first")
    rows, names, inside = torch.empty(len(files), layout.size), set(layout.names), d.resolve()
    for i, f in enumerate(files):
        if f.is_symlink() or f.resolve().parent != inside:
            raise NndiffError(f"{f} is a link; generated/ must hold the generated files themselves (regenerate it)")
        state = load_tensors(f)
        missing = [e.name for e in layout.entries if e.name not in state]
        if missing:
            raise NndiffError(f"{f} lacks parameter(s) {', '.join(missing[:3])} of the run's layout; regenerate it")
        extra = sorted(set(state) - names)
        if extra:
            raise NndiffError(
                f"{f} holds tensor(s) {', '.join(extra[:3])} that are not in the run's layout; regenerate it"
            )
        for e in layout.entries:
            t = state[e.name]
            if tuple(t.shape) != e.shape:
                raise NndiffError(f"{f}: {e.name} has shape {list(t.shape)}, the layout says {list(e.shape)}")
            if not t.is_floating_point():
                raise NndiffError(
                    f"{f}: {e.name} has dtype {str(t.dtype).removeprefix('torch.')}; parameters are floating point — "
                    "regenerate it"
                )
        rows[i] = layout.flatten(state)  # filled in place: the set is held once, not as a list and stacked
    return rows
