"""DDPM over latents: the noise schedule, the training loss and the samplers.

The schedule and the reverse-step math come from diffusers' schedulers (DDPM, DDIM, DPM-Solver++),
configured once from the same betas, so every sampler reads the schedule the model was trained on.
Sampling is reproducible: the same seeds give bit-identical samples on the same device. Sample i
of a call with seed S uses its own generator seeded S + i, so asking for more models keeps the
first ones (up to float rounding, since the batch size changes the kernels' summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nndiff.config.settings import auto_steps, setting
from nndiff.errors import NndiffError

SAMPLERS = ("ddpm", "ddim", "dpm")


CONDITIONS = ("none", "val_acc")


@dataclass
class DiffusionConfig:
    train_timesteps: int = setting(1000, "diffusion timesteps in training", low=2, integer=True)
    beta_start: float = setting(
        1e-4, "first noise level of the linear schedule", low=0, high=1, low_open=True, high_open=True
    )
    beta_end: float = setting(
        2e-2, "last noise level of the linear schedule", low=0, high=1, low_open=True, high_open=True
    )
    steps: int | str = auto_steps(
        "diffusion training steps, or 'auto': until a small generated batch stops improving on validation, "
        "at most diffusion.max_steps",
        "--diffusion-steps",
    )
    max_steps: int = setting(4000, "the most steps 'auto' trains", low=1, integer=True)
    check_every: int = setting(250, "steps between validation checks of 'auto'", low=1, integer=True)
    batch_size: int = setting(64, "diffusion batch size", low=1, integer=True)
    lr: float = setting(1e-3, "diffusion learning rate (AdamW, cosine schedule)", low=0, low_open=True)
    ema_decay: float = setting(
        0.999, "decay of the weights' moving average that generates", low=0, high=1, high_open=True
    )
    condition: str = setting(
        "none",
        "val_acc: condition the diffusion model on each snapshot's validation "
        "accuracy, so `generate --target-acc` can ask for one",
        choices=CONDITIONS,
        flag="--condition",
    )
    condition_dropout: float = setting(
        0.1, "share of training samples that see no condition (for guidance)", low=0, high=1, high_open=True
    )


def make_scheduler(config: DiffusionConfig, sampler: str = "ddpm"):
    """A diffusers scheduler for the linear-beta, epsilon-prediction schedule of `config`."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=config.train_timesteps,
        beta_schedule="linear",
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type="epsilon",
    )
    if sampler == "ddpm":
        # Latents are standardized, not bounded to [-1, 1]: clipping x0 would distort them.
        return DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    if sampler == "dpm":
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
        )
    raise NndiffError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def training_loss(
    model: nn.Module,
    x0: torch.Tensor,
    scheduler,
    generator: torch.Generator | None = None,
    *,
    cond: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Epsilon-prediction MSE at a uniformly drawn timestep per sample: ||eps - model(x_t, t[, c])||^2.

    With a condition, each sample drops it with probability `dropout`, so the same model also
    learns the unconditional prediction that guidance needs.
    """
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)  # sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    if cond is None:
        return F.mse_loss(model(x_t, t), noise)
    keep = (torch.rand(x0.shape[0], generator=generator) >= dropout).to(x0.device)
    return F.mse_loss(model(x_t, t, cond, keep), noise)


@torch.no_grad()
def sample(
    model: nn.Module,
    shape: tuple[int, ...],
    scheduler,
    steps: int,
    *,
    seeds: list[int],
    device: torch.device | str = "cpu",
    cond: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Run the reverse process from N(0, I) for len(seeds) samples of `shape`; returns [N, *shape].

    cond [N, cond_dim] with classifier-free guidance: eps = eps_uncond + guidance * (eps_cond - eps_uncond)
    (1: the plain conditional model; larger pushes harder towards the condition).
    """
    if steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise NndiffError(f"--steps must be between 1 and {scheduler.config.num_train_timesteps} (got {steps})")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
    scheduler.set_timesteps(steps)
    model.eval()
    if cond is not None:
        cond = cond.to(device)
    for t in scheduler.timesteps:
        tt = t.to(device).expand(x.shape[0])
        if cond is None:
            eps = model(x, tt)
        elif guidance == 1.0:
            eps = model(x, tt, cond)
        else:  # both predictions in one batch
            keep = torch.arange(2 * len(x), device=device) < len(x)
            both = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, cond]), keep)
            eps_cond, eps_uncond = both.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        # DDPM's fresh noise at each step is drawn from each sample's own generator (diffusers
        # accepts one generator per batch element); DDIM (eta = 0) and DPM-Solver++ draw none.
        x = scheduler.step(eps, t, x, generator=gens).prev_sample
    return x
