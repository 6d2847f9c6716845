"""Generation: latents from noise -> decoder -> un-normalize -> parameter vectors -> safetensors.

`ParamGenerator` is the trained generator (autoencoder, EMA denoiser, both normalizers). Each
generated model is written as its own safetensors file holding the selected parameters under
their model names, so a user needs no nndiff code to use one:

    model = make_model()
    model.load_state_dict(load_file("zoo/base.safetensors"))                    # everything else
    model.load_state_dict(load_file("generated/000000.safetensors"), strict=False)  # generated part
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.generator.autoencoder import Autoencoder
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.diffusion import make_scheduler, sample
from nndiff.generator.generated import check_generate_args
from nndiff.generator.principal import PrincipalCodec
from nndiff.generator.registry import codec_record, load_codec, restore_module
from nndiff.io.tensors import load_metadata, load_tensors, map_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer


@dataclass
class ParamGenerator:
    layout: Layout
    config: TrainConfig
    normalizer: Normalizer  # parameters
    latent_normalizer: Normalizer  # flattened latents, so diffusion sees zero mean, unit variance
    autoencoder: Autoencoder | PrincipalCodec  # any registered codec (registry.py)
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
        *,
        target_acc: float | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """[n, D] parameter vectors; vector i is drawn from seed + i (see diffusion.sample).

        A conditional generator aims them at validation accuracy `target_acc` (percent), with
        classifier-free guidance of strength `guidance`; without a target it samples unconditionally.
        """
        check_generate_args(n, seed, sampler, steps, target_acc=target_acc, guidance=guidance)
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
        z = sample(
            self.denoiser,
            shape,
            scheduler,
            steps,
            seeds=list(range(seed, seed + n)),
            device=self.device,
            cond=cond,
            guidance=guidance,
        )
        z = self.latent_normalizer.inverse(z.flatten(1).cpu()).view(n, *shape)
        self.autoencoder.eval()
        x = self.autoencoder.decode(z.to(self.device)).cpu()
        return self.normalizer.inverse(x)

    def save(self, run_dir: str | Path, stage: str | None = None) -> None:
        """The generator's three files; `stage`: the id of the training, recorded in each."""
        d = Path(run_dir)
        cfg = self.config.to_dict()
        mark = {"stage": stage} if stage else {}
        save_tensors(
            d / "autoencoder.safetensors",
            self.autoencoder.state_dict(),
            {"codec": codec_record(self.autoencoder), **mark},
        )
        save_tensors(
            d / "denoiser.safetensors",
            self.denoiser.state_dict(),
            {"latent_shape": list(self.autoencoder.latent_shape), "config": cfg["denoiser"], **mark},
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
            {"layout": self.layout.to_json(), "normalization": self.config.normalization, **mark},
        )

    @classmethod
    def load(cls, run_dir: str | Path, config: TrainConfig, device: torch.device | str = "cpu") -> "ParamGenerator":
        d = Path(run_dir)
        layout, norms = read_normalizers(d)
        ae = _codec(d / "autoencoder.safetensors", layout, config)
        conditional = config.diffusion.condition != "none"
        if conditional and not {"condition.mean", "condition.range"} <= set(norms):
            raise NndiffError(
                f"{d / 'normalizer.safetensors'} lacks the condition's statistics that config.yaml asks for; retrain "
                "the run"
            )
        path = d / "denoiser.safetensors"
        try:
            den = restore_module(
                lambda: Denoiser(ae.latent_shape, config.denoiser, 1 if conditional else 0), load_tensors(path)
            )
        except ValueError as e:
            detail = str(e).splitlines()[0]
            raise NndiffError(f"{path} does not match config.yaml ({detail}); retrain the run") from None
        ae, den = ae.to(device), den.to(device)
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


def _codec(path: Path, layout: Layout, config: TrainConfig):
    """The run's codec as its file records it (its tensors mapped, not copied: principal components
    are as large as the zoo's rows); config.yaml's `autoencoder.kind`, unless auto, names the same kind."""
    codec = load_codec(load_metadata(path).get("codec"), map_tensors(path), str(path), layout.size)
    if config.autoencoder.kind not in ("auto", codec.tag):
        raise NndiffError(
            f"{path} holds a {codec.tag} codec where config.yaml asks for {config.autoencoder.kind}; retrain the run"
        )
    return codec


def read_normalizers(run_dir: Path) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The run's layout (normalizer.safetensors' metadata) and its normalizer tensors."""
    path = run_dir / "normalizer.safetensors"
    meta = load_metadata(path)
    if "layout" not in meta:
        raise NndiffError(f"{path} lacks its layout metadata; retrain the run")
    return Layout.from_json(meta["layout"]), load_tensors(path)
