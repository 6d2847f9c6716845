"""Generators from a task's descriptor to its head's parameters, trained on the training tasks' zoo.

- `RegressionGenerator`: an MLP from descriptor to (normalized) parameters with a plain MSE loss,
  the simplest learned map; it gives one model per task. Tuned further with the tasks' own loss
  (tuning.py), the same class is the run's `regression_tuned`.
- `DiffusionGenerator`: the parameter autoencoder and the latent diffusion model of a single-task
  run (training/loops.py), its denoiser conditioned on the descriptor with classifier-free guidance.

A descriptor is any float vector per task (a binary code, an example set's embedding); both
standardize it with statistics of their training descriptors. Both save to and load from safetensors
(`save(path)`, `load(path)`), and sample `n` heads per descriptor with `sample(descriptors, n, seed)`:
[len(descriptors) * n, D], the n of each task together.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.generator.autoencoder import Autoencoder
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.diffusion import make_scheduler, sample
from nndiff.io.tensors import load_metadata, load_tensors, save_tensors
from nndiff.params.normalizer import Normalizer
from nndiff.training.loops import encode_all, train_autoencoder, train_diffusion

GENERATORS = ("regression", "regression_tuned", "diffusion")  # the run's files, named for their generator


class RegressionGenerator:
    kind = "regression"

    def __init__(self, inputs: Normalizer, dim: int, normalizer: Normalizer, width: int = 1024):
        self.inputs, self.normalizer, self.width = inputs, normalizer, width
        self.net = nn.Sequential(
            nn.Linear(len(inputs.mean), width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim)
        )

    @classmethod
    def fit(cls, params: torch.Tensor, descriptors: torch.Tensor, steps: int = 4000, seed: int = 0,
            lr: float = 1e-3, width: int = 1024):
        """Fit on rows params [n, D] with their tasks' descriptors [n, E] (minibatches of 256)."""
        torch.manual_seed(seed)
        descriptors = descriptors.float()
        inputs = Normalizer.fit(descriptors, None, "element")
        gen = cls(inputs, params.shape[1], Normalizer.fit(params, None, "element"), width)
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

    def save(self, path: Path) -> None:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        state.update(self.normalizer.state_dict("params.") | self.inputs.state_dict("inputs."))
        save_tensors(path, state, {"kind": self.kind, "width": self.width})

    @classmethod
    def load(cls, path: Path) -> "RegressionGenerator":
        state = load_tensors(path)
        first, last = state.get("net.0.weight"), state.get("net.4.weight")
        if first is None or last is None:
            raise NndiffError(f"{path} is not a regression generator; retrain the run")
        norm = Normalizer.from_state_dict(state, "params.", last.shape[0], str(path))
        inputs = Normalizer.from_state_dict(state, "inputs.", first.shape[1], str(path))
        gen = cls(inputs, last.shape[0], norm, first.shape[0])
        gen.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        gen.net.eval()
        return gen


class DiffusionGenerator:
    kind = "diffusion"

    def __init__(self, config: TrainConfig, inputs, normalizer, latent_normalizer, autoencoder, denoiser):
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
        return cls(config, inputs, normalizer, latent, ae.eval(), denoiser.eval())

    @torch.no_grad()
    def sample(self, descriptors: torch.Tensor, n: int = 1, seed: int = 0, steps: int = 20, guidance: float = 1.0):
        cond = self.inputs(descriptors.float()).repeat_interleave(n, 0)
        shape = self.autoencoder.latent_shape
        scheduler = make_scheduler(self.config.diffusion, "ddim")
        z = sample(self.denoiser, shape, scheduler, steps, list(range(seed, seed + len(cond))), "cpu", cond, guidance)
        z = self.latent_normalizer.inverse(z.flatten(1)).view(len(cond), *shape)
        return self.normalizer.inverse(self.autoencoder.decode(z))

    def save(self, path: Path) -> None:
        state = {
            **{f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()},
            **{f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()},
            **self.normalizer.state_dict("params."),
            **self.latent_normalizer.state_dict("latent."),
            **self.inputs.state_dict("inputs."),
        }
        meta = {"kind": self.kind, "config": self.config.to_dict(), "layer_sizes": self.autoencoder.sizes,
                "code_dim": self.denoiser.cond_dim}
        save_tensors(path, state, meta)

    @classmethod
    def load(cls, path: Path) -> "DiffusionGenerator":
        meta, state = load_metadata(path), load_tensors(path)
        try:
            config = TrainConfig.from_dict(meta["config"], str(path))
            dim = sum(meta["layer_sizes"])
            ae = Autoencoder(dim, config.autoencoder, meta["layer_sizes"])
            ae.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("autoencoder.")})
            den = Denoiser(ae.latent_shape, config.denoiser, int(meta["code_dim"]))
            den.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("denoiser.")})
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            what = type(e).__name__
            raise NndiffError(f"{path} is not a family run's diffusion generator ({what}); retrain") from None
        norm = Normalizer.from_state_dict(state, "params.", dim, str(path))
        latent = Normalizer.from_state_dict(state, "latent.", math.prod(ae.latent_shape), str(path))
        inputs = Normalizer.from_state_dict(state, "inputs.", int(meta["code_dim"]), str(path))
        return cls(config, inputs, norm, latent, ae.eval(), den.eval())


def load_generator(path: Path):
    kind = load_metadata(path).get("kind")
    if kind == "regression":
        return RegressionGenerator.load(path)
    if kind == "diffusion":
        return DiffusionGenerator.load(path)
    raise NndiffError(f"{path} holds no generator of a family run (kind {kind!r}); retrain the run")
