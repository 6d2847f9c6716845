"""Training loops for the parameter autoencoder and the latent diffusion model, written out plainly."""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nndiff.generator.autoencoder import Autoencoder
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.diffusion import make_scheduler, training_loss
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import row_blocks
from nndiff.runtime.distributed import broadcast, data_parallel, is_main, world_size
from nndiff.runtime.stage import Stage
from nndiff.training.budget import Judge, autoencoder_done, diffusion_done, held_back
from nndiff.training.output_loss import OutputMatch
from nndiff.training.progress import resume, save_progress


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all parameters in one fused call."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    """Linear warmup, then cosine decay to a tenth of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module) -> None:
    """Backpropagate `loss`, clip the gradient norm to 1 and step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    opt.step()


def autoencoder_step(
    net: nn.Module,
    ae: Autoencoder,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    normalizer: Normalizer | None = None,
    device: torch.device | str | None = None,
    output_loss: OutputMatch | None = None,
) -> float:
    """One optimizer step on the mean squared reconstruction error of the batch `x[rows]` (all of `x`
    by default), normalized by `normalizer` (None: `x` is normalized already), plus `output_loss`
    of the reconstructions where given (output_loss.py). The batch is gathered,
    normalized and sent through in micro-batches of at most BLOCK_VALUES values (their gradients
    summed), so a step's memory stays a fixed size whatever D: one pass for small subsets, 16 rows at
    a time at 1M, and never a [batch, D] copy of the zoo's rows."""
    rows = torch.arange(len(x)) if rows is None else rows
    blocks = row_blocks(len(rows), x.shape[1])
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for i, block in enumerate(blocks):
        part = x[rows[block]]
        part = (normalizer(part) if normalizer is not None else part).to(device if device is not None else x.device)
        quiet = net.no_sync() if i < len(blocks) - 1 and hasattr(net, "no_sync") else contextlib.nullcontext()
        with quiet:  # under DDP the gradients are averaged once, after the last micro-batch
            recon = net(part)
            loss = F.mse_loss(recon, part)
            if output_loss is not None:
                loss = loss + output_loss(recon, part)
            if len(blocks) > 1:
                loss = loss * (len(part) / len(rows))
            loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
    opt.step()
    return total


@torch.no_grad()
def reconstruction_mse(ae: Autoencoder, x: torch.Tensor, normalizer: Normalizer | None, device) -> float:
    """Mean squared error of the reconstructions of all rows of `x` (normalized space), block by block."""
    total = 0.0
    for block in row_blocks(len(x), x.shape[1]):
        rows = normalizer(x[block]) if normalizer is not None else x[block]
        rows = rows.to(device)
        total += float(F.mse_loss(ae.decode(ae.encode(rows)), rows, reduction="sum"))
    return total / max(x.numel(), 1)


def train_autoencoder(
    x: torch.Tensor,
    config: TrainConfig,
    gen: torch.Generator,
    progress: bool,
    *,
    stage: Stage | None = None,
    judge: Judge | None = None,
    normalizer: Normalizer | None = None,
    device: torch.device | str | None = None,
    sizes: list[int] | None = None,
    output_loss: OutputMatch | None = None,
    held: torch.Tensor | None = None,
) -> tuple[Autoencoder, dict]:
    """x: [K, D] parameters, normalized by `normalizer` batch by batch (None: `x` is normalized
    already), so no normalized copy of the zoo is made and `x` may be memory-mapped. Batches are
    moved to `device` (default: x's). With `steps: auto`, a held-back tenth of them (the end of
    each run) is not trained on: `judge` measures its reconstructions (budget.py). `sizes`: the
    values of each layer, so that tokens follow the layers (default: one layer). `output_loss`: the
    functional term added to each step's loss (output_loss.py; None: parameter error alone). `held`:
    the held-back rows (default: `held_back` of x as one run); the normalizer should not have seen them."""
    cfg = config.autoencoder
    device = x.device if device is None else torch.device(device)
    auto = cfg.steps == "auto"
    total = cfg.max_steps if auto else cfg.steps
    if held is None:
        held = held_back([0] * len(x))
    rows = held if auto else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[rows] = False
    train_rows = keep.nonzero().squeeze(1)
    check_rows = rows if len(rows) else torch.arange(len(x))
    ae = Autoencoder(x.shape[1], cfg, sizes).to(device)
    net = data_parallel(ae)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    batch = _per_rank_batch(cfg.batch_size, len(train_rows))
    stage = stage or Stage(None)
    start, loss_value, curve = resume(stage, "autoencoder", ae, opt, gen=gen)
    ae.train()  # enables the input and latent noise augmentation

    def check() -> dict:
        return judge.reconstruction(ae, normalizer, check_rows, device)

    stopped = auto and autoencoder_done(curve)
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc="autoencoder",
        disable=not progress or stopped,
        leave=False,
    )
    for step in [] if stopped else bar:
        set_lr(opt, cosine_lr(step, total, cfg.lr))
        idx = train_rows[torch.randint(len(train_rows), (batch,), generator=gen)].to(x.device)
        loss_value = autoencoder_step(
            net, ae, opt, x, rows=idx, normalizer=normalizer, device=device, output_loss=output_loss
        )
        if step % 50 == 0:
            bar.set_postfix(mse=f"{loss_value:.4f}")
        point = _check_point(step + 1, total, cfg.check_every, loss_value, check=check if auto else None, curve=curve)
        stopped = point is not None and auto and autoencoder_done(curve)
        save_progress(
            stage, "autoencoder", step + 1, total, model=ae, opt=opt, gen=gen, loss=loss_value, curve=curve,
            force=stopped
        )
        if stopped:
            break
    bar.close()
    ae.eval()
    trained = curve[-1]["step"] if curve else start
    return ae, {
        "final_loss": loss_value,
        "reconstruction_mse": reconstruction_mse(ae, x, normalizer, device),
        "resumed_at_step": start,
        **_budget(cfg, trained, stopped, curve, held_back=len(rows)),
    }


@torch.no_grad()
def encode_all(ae: Autoencoder, x: torch.Tensor, normalizer: Normalizer, device) -> torch.Tensor:
    """[K, C, L] latents of all rows of `x` (CPU), normalized and encoded block by block."""
    blocks = row_blocks(len(x), x.shape[1])
    return torch.cat([ae.encode(normalizer(x[b]).to(device)).cpu() for b in blocks])


def train_diffusion(
    z: torch.Tensor,
    config: TrainConfig,
    gen: torch.Generator,
    progress: bool,
    *,
    stage: Stage | None = None,
    cond: torch.Tensor | None = None,
    check_batch=None,
) -> tuple[Denoiser, dict]:
    """z: [K, C, L] standardized latents; cond: [K, c] standardized conditions (None: unconditional).
    With `steps: auto`, `check_batch(ema)` measures a small generated batch (budget.py).
    Returns the EMA denoiser."""
    cfg = config.diffusion
    auto = cfg.steps == "auto"
    total = cfg.max_steps if auto else cfg.steps
    model = Denoiser(tuple(z.shape[1:]), config.denoiser, 0 if cond is None else cond.shape[1]).to(z.device)
    net = data_parallel(model)  # broadcasts rank 0's initial weights, so every EMA starts equal
    ema = copy.deepcopy(model).requires_grad_(False)
    scheduler = make_scheduler(cfg, "ddpm")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    batch = _per_rank_batch(cfg.batch_size, len(z))
    stage = stage or Stage(None)
    start, running, curve = resume(stage, "diffusion", model, opt, gen=gen, ema=ema)
    model.train()
    stopped = auto and diffusion_done(curve)
    bar = tqdm(
        range(start, total), initial=start, total=total, desc="diffusion", disable=not progress or stopped, leave=False
    )
    for step in [] if stopped else bar:
        set_lr(opt, cosine_lr(step, total, cfg.lr))
        idx = torch.randint(len(z), (batch,), generator=gen).to(z.device)
        loss = training_loss(
            net, z[idx], scheduler, gen, cond=None if cond is None else cond[idx], dropout=cfg.condition_dropout
        )
        optimizer_step(opt, loss, model)
        # Warm the EMA up: with few steps a fixed 0.999 would still remember the random init.
        update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
        point = _check_point(
            step + 1, total, cfg.check_every, running, check=(lambda: check_batch(ema)) if auto else None, curve=curve
        )
        stopped = point is not None and auto and diffusion_done(curve)
        save_progress(
            stage, "diffusion", step + 1, total, model=model, opt=opt, gen=gen, loss=running, curve=curve, ema=ema,
            force=stopped
        )
        if stopped:
            break
    bar.close()
    trained = curve[-1]["step"] if curve else start
    return ema.eval(), {"final_loss": running, "resumed_at_step": start, **_budget(cfg, trained, stopped, curve)}


def _check_point(step: int, total: int, every: int, loss: float, *, check, curve: list[dict]) -> dict | None:
    """Every `every` steps and at the last: the curve's next point (the training loss, and with an
    automatic budget what `check` measures on validation). Rank 0 measures, every rank gets the point
    (so all stop together); the measurement draws from none of the training loop's random streams."""
    if step % every and step != total:
        return None
    point = {"step": step, "loss": loss}
    if check is not None:
        if is_main():
            with torch.random.fork_rng(devices=[]):
                measured = check()
        point.update(broadcast(measured if is_main() else None))
    curve.append(point)
    return point


def _budget(cfg, trained: int, stopped: bool, curve: list[dict], *, held_back: int | None = None) -> dict:
    """What train_stats.json says of a loop's budget."""
    auto = cfg.steps == "auto"
    out = {
        "steps": trained,
        "budget": "validation" if auto else "fixed",
        "stopped_early": bool(auto and stopped and trained < cfg.max_steps),
        "curve": curve,
    }
    if auto:
        out["max_steps"] = cfg.max_steps
    if held_back is not None and auto:
        out["held_back_snapshots"] = held_back
    return out


def _per_rank_batch(batch: int, n: int) -> int:
    """Each rank draws its share, so the effective batch is the configured one whatever the ranks."""
    return max(1, min(batch, n) // world_size())
