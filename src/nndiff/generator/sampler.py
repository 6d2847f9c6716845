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
from nndiff.io.tensors import load_metadata, load_tensors, map_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer


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

    def save(self, run_dir: str | Path, stage: str | None = None) -> None:
        """The generator's three files; `stage`: the id of the training, recorded in each."""
        d = Path(run_dir)
        cfg = self.config.to_dict()
        mark = {"stage": stage} if stage else {}
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
                **mark,
            },
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
                if isinstance(module, PrincipalCodec):  # its components (as large as the zoo's rows) read as
                    module.load_state_dict(map_tensors(d / f"{name}.safetensors"), assign=True)  # mapped, not copied
                else:
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
    (asked for, or chosen under kind auto: its file says so) keeps as many directions as its saved
    components have rows."""
    shape = load_metadata(path).get("components_shape")
    if config.autoencoder.kind == "pca" or (config.autoencoder.kind == "auto" and shape is not None):
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
