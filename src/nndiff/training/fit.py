"""`fit`: the autoencoder, then the diffusion model over its latents, each with its budget, resumable."""

from __future__ import annotations

import time

import torch

from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.principal import PrincipalCodec
from nndiff.generator.sampler import ParamGenerator
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import fingerprint
from nndiff.runtime.device import resolve_device, seed_everything
from nndiff.runtime.distributed import broadcast, check_ranks_agree, is_main, rank, world_size
from nndiff.runtime.memory import release_freed_memory
from nndiff.runtime.stage import Stage
from nndiff.training.budget import Judge, held_back
from nndiff.training.codec import autoencoder_latent, choose, codec_kind, principal_first, principal_on_held_back
from nndiff.training.loops import encode_all, reconstruction_mse, train_autoencoder, train_diffusion
from nndiff.training.output_loss import OutputMatch
from nndiff.zoo.format import Zoo


def conditions(zoo: Zoo, condition: str) -> tuple[torch.Tensor | None, Normalizer | None]:
    """The [K, 1] condition of each snapshot and its standardizer (None, None: unconditional).

    The condition is the snapshot's validation accuracy: never its test accuracy, which stays for
    reporting."""
    if condition == "none":
        return None, None
    if any("val_acc" not in s for s in zoo.snapshots):
        raise NndiffError(
            "the zoo was recorded without a task, so its snapshots have no validation accuracy to condition on: "
            "train with --condition none, or record with a task"
        )
    values = torch.tensor([[float(s["val_acc"])] for s in zoo.snapshots])
    if len(values) < 2 or float(values.std()) == 0.0:
        raise NndiffError(
            "every snapshot has the same validation accuracy, so there is nothing to condition on; "
            "train with diffusion.condition: none, or collect a more varied zoo (a higher --lr)"
        )
    return values, Normalizer.fit(values, None, "element")


def fit(
    zoo: Zoo, config: TrainConfig | None = None, progress: bool = True, stage: Stage | None = None
) -> tuple[ParamGenerator, dict]:
    """Train the autoencoder, then the latent diffusion model, on a zoo. Returns the generator and stats.

    With a `stage`, each loop saves its state every CHECKPOINT_EVERY steps, and a repeated call
    with the same zoo and configuration resumes where the last one stopped.
    """
    config = (config or TrainConfig()).validate()
    if len(zoo) < 1:
        raise NndiffError("the zoo holds no snapshots; collect some with `nndiff collect`")
    device = resolve_device(config.device)
    stage = stage or Stage(None)
    stage.claim(
        {**config.to_dict(), "device": None, "zoo": fingerprint(zoo.params), "processes": world_size()}, "training"
    )
    # Rank r draws its own batches and noise; rank 0 draws what a single process would.
    gen = seed_everything(config.seed + 7919 * rank())
    kind = codec_kind(config)  # "auto": the principal components or the autoencoder, by codec.py's rule
    # the autoencoder's check rows (automatic budget): the normalizer must not have seen them either
    checking = config.autoencoder.steps == "auto" and kind != "pca"
    held = held_back([s["run"] for s in zoo.snapshots]) if checking else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(zoo), dtype=torch.bool)
    keep[held] = False
    normalizer = Normalizer.fit(zoo.params, zoo.layout, config.normalization, rows=keep.nonzero().squeeze(1))

    auto = "auto" in (config.autoencoder.steps, config.diffusion.steps)
    judge = Judge.of_zoo(zoo, device) if auto and is_main() else None  # budgets chosen on validation (budget.py)

    t0 = time.perf_counter()
    fitted, principal = None, None
    if kind == "auto":
        fitted, principal = principal_on_held_back(
            zoo, normalizer, judge, held, count=config.autoencoder.components, device=device
        )
    trained, sizes = None, [e.numel for e in zoo.layout.entries]
    first = kind == "auto" and principal_first(
        principal, fitted[0].latent_shape[1] if fitted else 0, autoencoder_latent(zoo.layout.size, config, sizes)
    )
    if kind == "conv" or (kind == "auto" and not first):
        weight, output_loss = config.autoencoder.output_weight, None
        if weight > 0:
            task = zoo.make_task()
            output_loss = OutputMatch(task, zoo.model(task), zoo.layout, normalizer, weight=weight, device=device)
        ae, ae_stats = train_autoencoder(
            zoo.params, config, gen, progress, stage=stage, judge=judge, normalizer=normalizer, device=device,
            sizes=sizes, output_loss=output_loss, held=held
        )
        trained = broadcast((ae_stats.get("curve") or [None])[-1])
    chosen = choose(principal, trained, first) if kind == "auto" else kind
    if chosen == "pca":  # nothing to train: principal.py (the codec judged, when there is one)
        # judged without the held-back rows; kept with as many directions, fitted on every row
        count = fitted[0].latent_shape[1] if fitted else config.autoencoder.components
        ae, explained = PrincipalCodec.fit(zoo.params, normalizer, count)
        del fitted
        ae = ae.to(device)
        ae_stats = {
            "kind": "pca",
            "components": ae.latent_shape[1],
            "explained": explained,
            "reconstruction_mse": reconstruction_mse(ae, zoo.params, normalizer, device),
        }
    if kind == "auto":
        measures = ("unexplained", "gap", "passes")
        ae_stats["codec"] = {
            "kind": chosen,
            **{
                name: {k: v for k, v in point.items() if k in measures}
                for name, point in (("principal", principal), ("autoencoder", trained))
                if point
            },
        }
    t1 = time.perf_counter()
    z = encode_all(ae, zoo.params, normalizer, device)
    latent_normalizer = Normalizer.fit(z.flatten(1), None, "element")
    z = latent_normalizer(z.flatten(1)).view(z.shape).to(device)
    cond, cond_normalizer = conditions(zoo, config.diffusion.condition)
    release_freed_memory()  # the codec's fitting and checks kept their freed blocks for reuse: not needed now

    def check_batch(ema: Denoiser) -> dict:
        candidate = ParamGenerator(zoo.layout, config, normalizer, latent_normalizer, ae, ema, cond_normalizer)
        return judge.generated(candidate, normalizer)

    denoiser, diff_stats = train_diffusion(
        z,
        config,
        gen,
        progress,
        stage=stage,
        cond=None if cond is None else cond_normalizer(cond).to(device),
        check_batch=check_batch,
    )
    t2 = time.perf_counter()

    check_ranks_agree(ae, denoiser)
    generator = ParamGenerator(zoo.layout, config, normalizer, latent_normalizer, ae, denoiser, cond_normalizer)
    if cond is not None:
        generator.condition_range = (float(cond.min()), float(cond.max()))
    stats = {
        "autoencoder": ae_stats,
        "diffusion": diff_stats,
        "timings_s": {"train_autoencoder": round(t1 - t0, 3), "train_diffusion": round(t2 - t1, 3)},
    }
    return generator, stats
