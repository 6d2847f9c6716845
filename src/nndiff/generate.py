"""Generation: latents from noise -> decoder -> un-normalize -> parameter vectors -> safetensors.

`ParamGenerator` is the trained generator (autoencoder, EMA denoiser, both normalizers). Each
generated model is written as its own safetensors file holding the selected parameters under
their model names, so a user needs no nndiff code to use one:

    model = make_model()
    model.load_state_dict(load_file("zoo/base.safetensors"))                    # everything else
    model.load_state_dict(load_file("generated/000000.safetensors"), strict=False)  # generated part
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .autoencoder import Autoencoder
from .config import TrainConfig
from .denoiser import Denoiser
from .diffusion import make_scheduler, sample
from .errors import NndiffError
from .params import Layout, Normalizer
from .storage import load_metadata, load_tensors, save_tensors

GENERATED = "generated"


@dataclass
class ParamGenerator:
    layout: Layout
    config: TrainConfig
    normalizer: Normalizer  # parameters
    latent_normalizer: Normalizer  # flattened latents, so diffusion sees zero mean, unit variance
    autoencoder: Autoencoder
    denoiser: Denoiser  # EMA weights

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str = "ddim", steps: int = 50) -> torch.Tensor:
        """[n, D] parameter vectors; vector i is drawn from seed + i (see diffusion.sample)."""
        if n < 1:
            raise NndiffError(f"-n must be at least 1 (got {n})")
        scheduler = make_scheduler(self.config.diffusion, sampler)
        shape = self.autoencoder.latent_shape
        z = sample(self.denoiser, shape, scheduler, steps, list(range(seed, seed + n)), self.device)
        z = self.latent_normalizer.inverse(z.flatten(1).cpu()).view(n, *shape)
        self.autoencoder.eval()
        x = self.autoencoder.decode(z.to(self.device)).cpu()
        return self.normalizer.inverse(x)

    def save(self, run_dir: str | Path) -> None:
        d = Path(run_dir)
        cfg = self.config.to_dict()
        save_tensors(d / "autoencoder.safetensors", self.autoencoder.state_dict(),
                     {"dim": self.layout.size, "config": cfg["autoencoder"]})
        save_tensors(d / "denoiser.safetensors", self.denoiser.state_dict(),
                     {"latent_shape": list(self.autoencoder.latent_shape), "config": cfg["denoiser"]})
        save_tensors(d / "normalizer.safetensors",
                     {**self.normalizer.state_dict("params."), **self.latent_normalizer.state_dict("latent.")},
                     {"layout": self.layout.to_json(), "normalization": self.config.normalization})

    @classmethod
    def load(cls, run_dir: str | Path, config: TrainConfig, device: torch.device | str = "cpu") -> "ParamGenerator":
        d = Path(run_dir)
        layout = Layout.from_json(load_metadata(d / "normalizer.safetensors")["layout"])
        norms = load_tensors(d / "normalizer.safetensors")
        ae = Autoencoder(layout.size, config.autoencoder)
        den = Denoiser(ae.latent_shape, config.denoiser)
        for module, name in ((ae, "autoencoder"), (den, "denoiser")):
            try:
                module.load_state_dict(load_tensors(d / f"{name}.safetensors"))
            except RuntimeError as e:
                raise NndiffError(f"{d / (name + '.safetensors')} does not match config.yaml ({str(e).splitlines()[0]}); retrain the run") from None
            module.to(device).eval()
        return cls(layout, config, Normalizer.from_state_dict(norms, "params."),
                   Normalizer.from_state_dict(norms, "latent."), ae, den)


def write_generated(run_dir: str | Path, vectors: torch.Tensor, layout: Layout, seed: int, sampler: str, steps: int) -> Path:
    """Write one safetensors file per generated model into run_dir/generated, replacing what was there.

    The files go to a temporary directory that is renamed into place, so an interrupted write
    leaves the previous set intact rather than a mix of old and new models.
    """
    d = Path(run_dir)
    tmp = d / f".{GENERATED}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, v in enumerate(vectors):
        meta = {"seed": seed + i, "sampler": sampler, "steps": steps}
        save_tensors(tmp / f"{i:06d}.safetensors", layout.unflatten(v.contiguous()), meta)
    final, old = d / GENERATED, d / f".{GENERATED}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_generated(run_dir: str | Path, layout: Layout) -> torch.Tensor:
    """The [N, D] matrix of the generated models in run_dir/generated, checked against the layout."""
    d = Path(run_dir) / GENERATED
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise NndiffError(f"no generated models in {d}; run `nndiff generate --run {run_dir}` first")
    rows = []
    for f in files:
        state = load_tensors(f)
        missing = [e.name for e in layout.entries if e.name not in state]
        if missing:
            raise NndiffError(f"{f} lacks parameter(s) {', '.join(missing[:3])} of the run's layout; regenerate it")
        for e in layout.entries:
            if tuple(state[e.name].shape) != e.shape:
                raise NndiffError(f"{f}: {e.name} has shape {list(state[e.name].shape)}, the layout says {list(e.shape)}")
        rows.append(layout.flatten(state))
    return torch.stack(rows)
