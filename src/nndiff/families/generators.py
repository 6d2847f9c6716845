"""Generators from a task's descriptor to its head's parameters, trained on the training tasks' zoo.

- `RegressionGenerator`: an MLP from descriptor to (normalized) parameters with a plain MSE loss,
  the simplest learned map; it gives one model per task. Tuned further with the tasks' own loss
  (tuning.py), the same class is the run's `regression_tuned`.
- `DiffusionGenerator`: the parameter autoencoder and the latent diffusion model of a single-task
  run (training/loops.py), its denoiser conditioned on the descriptor with classifier-free guidance.

A descriptor is any float vector per task (a binary code, an example set's embedding); both
standardize it with statistics of their training descriptors. Both are registered generators
(generator/registry.py: one safetensors file each, with `save_generator` / `load_generator`), and
sample `n` heads per descriptor with `sample(descriptors, n, seed)`: [len(descriptors) * n, D], the n
of each task together (`one_per_task`: a regression's n are one head repeated).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.diffusion import make_scheduler, sample
from nndiff.generator.registry import codec_record, load_codec, register_generator, restore_module, under
from nndiff.params.normalizer import Normalizer
from nndiff.training.loops import encode_all, train_autoencoder, train_diffusion

GENERATORS = ("regression", "regression_tuned", "diffusion")  # the run's files, named for their generator


@register_generator("descriptor-regression")
class RegressionGenerator:
    one_per_task = True

    def __init__(self, inputs: Normalizer, normalizer: Normalizer, *, width: int = 1024, net: nn.Module | None = None):
        """`net`: the trained map (default: a new one from `width`)."""
        self.inputs, self.normalizer, self.width = inputs, normalizer, width
        self.net = net if net is not None else _regression_net(len(inputs.mean), width, len(normalizer.mean))

    @classmethod
    def fit(cls, params: torch.Tensor, descriptors: torch.Tensor, steps: int = 4000, seed: int = 0,
            *,
            lr: float = 1e-3, width: int = 1024):
        """Fit on rows params [n, D] with their tasks' descriptors [n, E] (minibatches of 256)."""
        torch.manual_seed(seed)
        descriptors = descriptors.float()
        inputs = Normalizer.fit(descriptors, None, "element")
        gen = cls(inputs, Normalizer.fit(params, None, "element"), width=width)
        target, inputs = gen.normalizer(params), inputs(descriptors)
        opt = torch.optim.AdamW(gen.net.parameters(), lr=lr)
        draw = torch.Generator().manual_seed(seed)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            idx = torch.randint(len(params), (min(256, len(params)),), generator=draw)
            loss = ((gen.net(inputs[idx]) - target[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        gen.net.eval()
        return gen

    @torch.no_grad()
    def sample(self, descriptors: torch.Tensor, n: int = 1, seed: int = 0) -> torch.Tensor:
        """One head per task (a regression is deterministic), repeated n times."""
        return self.normalizer.inverse(self.net(self.inputs(descriptors.float()))).repeat_interleave(n, 0)

    def arguments(self) -> dict:
        return {"descriptor_dim": len(self.inputs.mean), "dim": len(self.normalizer.mean), "width": self.width}

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        return state | self.normalizer.state_dict("params.") | self.inputs.state_dict("inputs.")

    @classmethod
    def from_saved(cls, args: dict, state: dict[str, torch.Tensor]) -> "RegressionGenerator":
        norm = Normalizer.from_state_dict(state, "params.", _count(args, "dim"), "its tensors")
        inputs = Normalizer.from_state_dict(state, "inputs.", _count(args, "descriptor_dim"), "its tensors")
        width = _count(args, "width")
        net = restore_module(lambda: _regression_net(len(inputs.mean), width, len(norm.mean)), under(state, "net."))
        return cls(inputs, norm, width=width, net=net)


@register_generator("descriptor-diffusion")
class DiffusionGenerator:
    one_per_task = False

    def __init__(self, config: TrainConfig, inputs, normalizer, latent_normalizer, *, autoencoder, denoiser):
        self.config, self.inputs, self.normalizer = config, inputs, normalizer
        self.latent_normalizer = latent_normalizer
        self.autoencoder, self.denoiser = autoencoder, denoiser

    @classmethod
    def fit(cls, params: torch.Tensor, descriptors: torch.Tensor, config: TrainConfig, progress: bool = False):
        gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        inputs = Normalizer.fit(descriptors.float(), None, "element")
        normalizer = Normalizer.fit(params, None, "element")
        ae, _ = train_autoencoder(params, config, gen, progress, normalizer=normalizer, device=torch.device("cpu"))
        z = encode_all(ae, params, normalizer, "cpu")
        latent = Normalizer.fit(z.flatten(1), None, "element")
        z = latent(z.flatten(1)).view(z.shape)
        denoiser, _ = train_diffusion(z, config, gen, progress, cond=inputs(descriptors.float()))
        return cls(config, inputs, normalizer, latent, autoencoder=ae.eval(), denoiser=denoiser.eval())

    @torch.no_grad()
    def sample(self, descriptors: torch.Tensor, n: int = 1, seed: int = 0, steps: int = 20, *, guidance: float = 1.0):
        cond = self.inputs(descriptors.float()).repeat_interleave(n, 0)
        shape = self.autoencoder.latent_shape
        scheduler = make_scheduler(self.config.diffusion, "ddim")
        z = sample(
            self.denoiser, shape, scheduler, steps,
            seeds=list(range(seed, seed + len(cond))), device="cpu", cond=cond, guidance=guidance
        )
        z = self.latent_normalizer.inverse(z.flatten(1)).view(len(cond), *shape)
        return self.normalizer.inverse(self.autoencoder.decode(z))

    def arguments(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "codec": codec_record(self.autoencoder),
            "descriptor_dim": self.denoiser.cond_dim,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            **{f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()},
            **{f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()},
            **self.normalizer.state_dict("params."),
            **self.latent_normalizer.state_dict("latent."),
            **self.inputs.state_dict("inputs."),
        }

    @classmethod
    def from_saved(cls, args: dict, state: dict[str, torch.Tensor]) -> "DiffusionGenerator":
        config = TrainConfig.from_dict(args["config"], "its config")
        norm = Normalizer.from_state_dict(state, "params.", len(state.get("params.mean", ())), "its tensors")
        ae = load_codec(args["codec"], under(state, "autoencoder."), "its codec", len(norm.mean))
        code_dim = _count(args, "descriptor_dim")
        den = restore_module(lambda: Denoiser(ae.latent_shape, config.denoiser, code_dim), under(state, "denoiser."))
        latent = Normalizer.from_state_dict(state, "latent.", math.prod(ae.latent_shape), "its tensors")
        inputs = Normalizer.from_state_dict(state, "inputs.", code_dim, "its tensors")
        return cls(config, inputs, norm, latent, autoencoder=ae, denoiser=den)


def _regression_net(descriptor_dim: int, width: int, dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(descriptor_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim)
    )


def _count(args: dict, key: str) -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a whole number of at least 1, not {value!r}")
    return value
