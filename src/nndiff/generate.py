"""Generation: latents from noise -> decoder -> un-normalize -> parameter vectors -> safetensors.

`ParamGenerator` is the trained generator (autoencoder, EMA denoiser, both normalizers). Each
generated model is written as its own safetensors file holding the selected parameters under
their model names, so a user needs no nndiff code to use one:

    model = make_model()
    model.load_state_dict(load_file("zoo/base.safetensors"))                    # everything else
    model.load_state_dict(load_file("generated/000000.safetensors"), strict=False)  # generated part

Longer than 250 lines because the generator and the on-disk set of generated models (atomic
exchange, recovery, checks on reading) belong together.
"""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .autoencoder import Autoencoder
from .config import TrainConfig
from .denoiser import Denoiser
from .checks import check_fields, setting
from .diffusion import SAMPLERS, make_scheduler, sample
from .errors import NndiffError
from .params import Layout, Normalizer, row_blocks
from .principal import PrincipalCodec
from .storage import load_metadata, load_tensors, save_tensors

GENERATED = "generated"


@dataclass
class ParamGenerator:
    layout: Layout
    config: TrainConfig
    normalizer: Normalizer  # parameters
    latent_normalizer: Normalizer  # flattened latents, so diffusion sees zero mean, unit variance
    autoencoder: Autoencoder | PrincipalCodec
    denoiser: Denoiser  # EMA weights
    condition_normalizer: Normalizer | None = (
        None  # conditional generators: standardizes the requested validation accuracy
    )
    condition_range: tuple[float, float] = (0.0, 100.0)  # the snapshots' validation accuracies, min and max

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int = 0,
        sampler: str = "ddim",
        steps: int = 50,
        target_acc: float | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """[n, D] parameter vectors; vector i is drawn from seed + i (see diffusion.sample).

        A conditional generator aims them at validation accuracy `target_acc` (percent), with
        classifier-free guidance of strength `guidance`; without a target it samples unconditionally.
        """
        check_generate_args(n, seed, sampler, steps, target_acc, guidance)
        cond = None
        if target_acc is not None:
            if self.condition_normalizer is None:
                raise NndiffError(
                    "this run's generator is unconditional, so --target-acc has nothing to steer; "
                    "train one with --condition val_acc"
                )
            lo, hi = self.condition_range
            if not lo - 1e-4 <= target_acc <= hi + 1e-4:
                warnings.warn(
                    f"--target-acc {target_acc:g} lies outside the validation accuracies of the training snapshots "
                    f"({lo:.2f}..{hi:.2f}); the generator extrapolates and will likely fall short of it",
                    stacklevel=2,
                )
            cond = self.condition_normalizer(torch.full((n, 1), float(target_acc)))
        scheduler = make_scheduler(self.config.diffusion, sampler)
        shape = self.autoencoder.latent_shape
        z = sample(self.denoiser, shape, scheduler, steps, list(range(seed, seed + n)), self.device, cond, guidance)
        z = self.latent_normalizer.inverse(z.flatten(1).cpu()).view(n, *shape)
        self.autoencoder.eval()
        x = self.autoencoder.decode(z.to(self.device)).cpu()
        return self.normalizer.inverse(x)

    def save(self, run_dir: str | Path) -> None:
        d = Path(run_dir)
        cfg = self.config.to_dict()
        save_tensors(
            d / "autoencoder.safetensors",
            self.autoencoder.state_dict(),
            {
                "dim": self.layout.size,
                "config": cfg["autoencoder"],
                "layer_sizes": self.autoencoder.sizes,
                **(
                    {"components_shape": list(self.autoencoder.components.shape)}
                    if isinstance(self.autoencoder, PrincipalCodec)
                    else {}
                ),
            },
        )
        save_tensors(
            d / "denoiser.safetensors",
            self.denoiser.state_dict(),
            {"latent_shape": list(self.autoencoder.latent_shape), "config": cfg["denoiser"]},
        )
        conditions = {}
        if self.condition_normalizer is not None:
            conditions = {
                **self.condition_normalizer.state_dict("condition."),
                "condition.range": torch.tensor(self.condition_range, dtype=torch.float64),
            }
        save_tensors(
            d / "normalizer.safetensors",
            {**self.normalizer.state_dict("params."), **self.latent_normalizer.state_dict("latent."), **conditions},
            {"layout": self.layout.to_json(), "normalization": self.config.normalization},
        )

    @classmethod
    def load(cls, run_dir: str | Path, config: TrainConfig, device: torch.device | str = "cpu") -> "ParamGenerator":
        d = Path(run_dir)
        layout, norms = read_normalizers(d)
        ae = _autoencoder(d / "autoencoder.safetensors", layout, config)
        conditional = config.diffusion.condition != "none"
        if conditional and not {"condition.mean", "condition.range"} <= set(norms):
            raise NndiffError(
                f"{d / 'normalizer.safetensors'} lacks the condition's statistics that config.yaml asks for; retrain "
                "the run"
            )
        den = Denoiser(ae.latent_shape, config.denoiser, 1 if conditional else 0)
        for module, name in ((ae, "autoencoder"), (den, "denoiser")):
            try:
                module.load_state_dict(load_tensors(d / f"{name}.safetensors"))
            except RuntimeError as e:
                raise NndiffError(
                    f"{d / (name + '.safetensors')} does not match config.yaml ({str(e).splitlines()[0]}); retrain "
                    "the run"
                ) from None
            module.to(device).eval()
        source = str(d / "normalizer.safetensors")
        latent = Normalizer.from_state_dict(norms, "latent.", math.prod(ae.latent_shape), source)
        generator = cls(
            layout, config, Normalizer.from_state_dict(norms, "params.", layout.size, source), latent, ae, den
        )
        if conditional:
            generator.condition_normalizer = Normalizer.from_state_dict(norms, "condition.", 1, source)
            lo_hi = norms["condition.range"]
            if lo_hi.shape != (2,) or not lo_hi.is_floating_point() or not torch.isfinite(lo_hi).all():
                raise NndiffError(f"{source}: condition.range must be two finite numbers; retrain the run")
            generator.condition_range = tuple(lo_hi.tolist())
        return generator


def _autoencoder(path: Path, layout: Layout, config: TrainConfig) -> Autoencoder | PrincipalCodec:
    """The run's autoencoder as config.yaml describes it (its weights are loaded after): a PCA codec
    keeps as many directions as its saved components have rows."""
    if config.autoencoder.kind == "pca":
        shape = load_metadata(path).get("components_shape")
        if not (isinstance(shape, list) and len(shape) == 2 and shape[1] == layout.size and shape[0] >= 1):
            raise NndiffError(f"{path} does not hold the principal components config.yaml asks for; retrain the run")
        return PrincipalCodec(layout.size, shape[0])
    return Autoencoder(layout.size, config.autoencoder, _layer_sizes(path, layout))


def _layer_sizes(path: Path, layout: Layout) -> list[int] | None:
    """The layer sizes the autoencoder's tokens follow, as saved (None: a run saved before tokens
    followed layers, whose tokens cut across them: it is rebuilt that way)."""
    sizes = load_metadata(path).get("layer_sizes")
    if sizes is None:
        return None
    if not (isinstance(sizes, list) and all(isinstance(n, int) and n > 0 for n in sizes) and sum(sizes) == layout.size):
        raise NndiffError(
            f"{path}: its layer_sizes do not describe the run's {layout.size} parameters; retrain the run"
        )
    return sizes


def read_normalizers(run_dir: Path) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The run's layout (normalizer.safetensors' metadata) and its normalizer tensors."""
    path = run_dir / "normalizer.safetensors"
    meta = load_metadata(path)
    if "layout" not in meta:
        raise NndiffError(f"{path} lacks its layout metadata; retrain the run")
    return Layout.from_json(meta["layout"]), load_tensors(path)


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

    def validate(self) -> "SampleConfig":
        check_fields(self)
        if self.target_acc is None and self.guidance != 1.0:
            raise NndiffError("--guidance needs --target-acc (guidance pushes towards a requested accuracy)")
        return self


def check_generate_args(
    n: int, seed: int, sampler: str, steps: int, target_acc: float | None = None, guidance: float = 1.0
) -> None:
    """The sampling options, checked before a generator is loaded (or, in `nndiff run`, trained)."""
    from .checks import seed as check_seed

    check_seed(seed)
    SampleConfig(n, sampler, steps, target_acc, guidance).validate()


def write_generated(
    run_dir: str | Path,
    vectors: torch.Tensor,
    layout: Layout,
    seed: int,
    sampler: str,
    steps: int,
    extra: dict | None = None,
) -> Path:
    """Write one safetensors file per generated model into run_dir/generated, replacing what was there.

    The files go to a temporary directory that then takes the place of the old one in one atomic
    exchange, so there is never a moment without a complete generated/ (nor a mix of old and new).
    """
    d = Path(run_dir)
    tmp, final = d / f".{GENERATED}.tmp", d / GENERATED
    _recover(final)
    shutil.rmtree(tmp, ignore_errors=True)
    for i, v in enumerate(vectors):
        meta = {"seed": seed + i, "sampler": sampler, "steps": steps, **(extra or {})}
        save_tensors(tmp / f"{i:06d}.safetensors", layout.unflatten(v.contiguous()), meta)
    if final.exists():
        exchange(tmp, final)  # tmp now holds the old set
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def _recover(final: Path) -> None:
    """Undo what a crash inside exchange()'s two-rename fallback can leave: generated/ moved aside
    to generated.old. The old set goes back in place; a stale copy beside a complete set goes."""
    old = _old(final)
    if old.exists() and not final.exists():
        old.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). Elsewhere, two renames: a
    reader may then briefly find `b` missing, never half-written."""
    import ctypes
    import os

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
            raise OSError(errno, os.strerror(errno), str(b))
    old = _old(b)
    shutil.rmtree(old, ignore_errors=True)
    b.rename(old)
    a.rename(b)
    old.rename(a)


def fingerprint(vectors: torch.Tensor) -> str:
    """SHA-256 of a set of parameter vectors: metrics.json and the report record which set they describe."""
    import hashlib

    digest = hashlib.sha256()
    rows = vectors.detach().reshape(-1, 1) if vectors.ndim < 2 else vectors.detach().flatten(1)
    for block in row_blocks(len(rows), rows.shape[1]):  # the same bytes as hashing all at once, without a copy
        digest.update(rows[block].float().contiguous().cpu().numpy())
    return digest.hexdigest()


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
