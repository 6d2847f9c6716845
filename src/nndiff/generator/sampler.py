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
from nndiff.generator.registry import codec_record, load_codec, register_generator, restore_module, under
from nndiff.io.tensors import load_metadata, load_tensors, map_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer


@register_generator("latent-diffusion")
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
            self.denoiser, shape, scheduler, steps,
            seeds=list(range(seed, seed + n)), device=self.device, cond=cond, guidance=guidance
        )
        z = self.latent_normalizer.inverse(z.flatten(1).cpu()).view(n, *shape)
        self.autoencoder.eval()
        x = self.autoencoder.decode(z.to(self.device)).cpu()
        return self.normalizer.inverse(x)

    def save(self, run_dir: str | Path, stage: str | None = None) -> None:
        """The generator as a run directory's three files; `stage`: the id of the training, recorded
        in each. (`registry.save_generator` keeps it as one file instead.)"""
        d = Path(run_dir)
        mark = {"stage": stage} if stage else {}
        save_tensors(d / "autoencoder.safetensors", self.autoencoder.state_dict(),
                     {"codec": codec_record(self.autoencoder), **mark})
        save_tensors(
            d / "denoiser.safetensors",
            self.denoiser.state_dict(),
            {"latent_shape": list(self.autoencoder.latent_shape), "config": self.config.to_dict()["denoiser"], **mark},
        )
        save_tensors(d / "normalizer.safetensors", self._statistics(),
                     {"layout": self.layout.to_json(), "normalization": self.config.normalization, **mark})

    def _statistics(self) -> dict[str, torch.Tensor]:
        conditions = {}
        if self.condition_normalizer is not None:
            conditions = {
                **self.condition_normalizer.state_dict("condition."),
                "condition.range": torch.tensor(self.condition_range, dtype=torch.float64),
            }
        return {**self.normalizer.state_dict("params."), **self.latent_normalizer.state_dict("latent."), **conditions}

    def arguments(self) -> dict:
        codec = codec_record(self.autoencoder)
        return {"layout": self.layout.to_json(), "config": self.config.to_dict(), "codec": codec}

    def tensors(self) -> dict[str, torch.Tensor]:
        parts = {"codec.": self.autoencoder.state_dict(), "denoiser.": self.denoiser.state_dict()}
        return {**{p + k: v for p, state in parts.items() for k, v in state.items()}, **self._statistics()}

    @classmethod
    def from_saved(cls, args: dict, tensors: dict[str, torch.Tensor]) -> "ParamGenerator":
        layout, config = Layout.from_json(args["layout"]), TrainConfig.from_dict(args["config"], "its config")
        codec = load_codec(args["codec"], under(tensors, "codec."), "its codec", layout.size)
        return cls._assemble(layout, config, codec, denoiser=under(tensors, "denoiser."), statistics=tensors,
                             where=("its denoiser", "its statistics"))

    @classmethod
    def load(cls, run_dir: str | Path, config: TrainConfig, device: torch.device | str = "cpu") -> "ParamGenerator":
        d = Path(run_dir)
        layout, norms = read_normalizers(d)
        ae = _codec(d / "autoencoder.safetensors", layout, config)
        where = (str(d / "denoiser.safetensors"), str(d / "normalizer.safetensors"))
        generator = cls._assemble(layout, config, ae, denoiser=load_tensors(where[0]), statistics=norms, where=where)
        generator.autoencoder, generator.denoiser = ae.to(device), generator.denoiser.to(device)
        return generator

    @classmethod
    def _assemble(cls, layout: Layout, config: TrainConfig, ae, *, denoiser: dict, statistics: dict,
                  where: tuple[str, str]) -> "ParamGenerator":
        """The generator around codec `ae`, with its denoiser's weights and the statistics (`where`:
        what to call each in an error)."""
        conditional = config.diffusion.condition != "none"
        if conditional and not {"condition.mean", "condition.range"} <= set(statistics):
            raise NndiffError(f"{where[1]} lacks the condition's statistics that config.yaml asks for; retrain the run")
        try:
            den = restore_module(lambda: Denoiser(ae.latent_shape, config.denoiser, 1 if conditional else 0), denoiser)
        except ValueError as e:
            detail = str(e).splitlines()[0]
            raise NndiffError(f"{where[0]} does not match config.yaml ({detail}); retrain the run") from None
        latent = Normalizer.from_state_dict(statistics, "latent.", math.prod(ae.latent_shape), where[1])
        params = Normalizer.from_state_dict(statistics, "params.", layout.size, where[1])
        generator = cls(layout, config, params, latent, ae, den)
        if conditional:
            generator.condition_normalizer = Normalizer.from_state_dict(statistics, "condition.", 1, where[1])
            lo_hi = statistics["condition.range"]
            if lo_hi.shape != (2,) or not lo_hi.is_floating_point() or not torch.isfinite(lo_hi).all():
                raise NndiffError(f"{where[1]}: condition.range must be two finite numbers; retrain the run")
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
