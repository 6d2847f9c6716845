"""Which codec maps the zoo to the diffusion model's latents (`autoencoder.kind: auto`, the default).

Two candidates: the zoo's principal components (principal.py; nothing to train, every training
snapshot reproduced exactly) and the conv parameter autoencoder. Both are judged the way the
autoencoder's automatic budget judges it (budget.py): on the held-back snapshots (the end of each
run, which neither codec nor the normalizer has seen), by the share of their variation the
reconstructions miss and the validation accuracy they lose. The principal components are kept without
training the autoencoder when they stay within the health check's lines there (`PCA_UNEXPLAINED`,
`PCA_GAP`) and their latent is no larger than the autoencoder's; otherwise the autoencoder is
trained as before, and kept unless it fails those lines where the principal components do better
(`choose`: the one further from the health check's fail lines, accuracy lost and variation missed
each against its own line).

Measured (bench/whole_networks.md): on whole networks the principal components miss 13-18% of the
held-back variation at 6k-98k parameters, where the autoencoder still missed 31-53% after its whole
budget. On the default BatchNorm subset (192 values) they would give the diffusion model 179 values
to learn where the autoencoder's latent has 48: the autoencoder is trained there, as before.
"""

from __future__ import annotations

import math

import torch

from nndiff.analysis.doctor import RECONSTRUCTION_GAP, UNEXPLAINED
from nndiff.generator.principal import PrincipalCodec
from nndiff.generator.tokens import auto_token_size
from nndiff.runtime.distributed import broadcast, is_main

PCA_UNEXPLAINED = UNEXPLAINED[1]  # below the health check's fail line for the variation missed ...
PCA_GAP = RECONSTRUCTION_GAP[0]  # ... and within its pass line for the validation accuracy lost


def codec_kind(config) -> str:
    """"pca", "conv", or "auto" (still to be decided). An automatic choice needs the automatic
    autoencoder budget (its held-back snapshots); a fixed --ae-steps or a functional loss
    (--ae-output-weight) asks for the conv autoencoder."""
    cfg = config.autoencoder
    if cfg.kind == "auto" and (cfg.steps != "auto" or cfg.output_weight > 0):
        return "conv"
    return cfg.kind


def principal_on_held_back(zoo, normalizer, judge, held: torch.Tensor, *, count: int, device):
    """The principal components of the rows not held back (`count` directions, 0: all) and, judged on
    the held-back rows, the judge's measures plus `passes` (whether they stay within the lines): the
    same on every rank. (None, None) without held-back rows."""
    if not len(held):
        return None, None
    keep = torch.ones(len(zoo), dtype=torch.bool)
    keep[held] = False
    codec, explained = PrincipalCodec.fit(zoo.params, normalizer, count, rows=keep.nonzero().squeeze(1))
    point = None
    if is_main() and judge is not None:
        point = judge.reconstruction(codec, normalizer, held, device)
        point["passes"] = point["unexplained"] <= PCA_UNEXPLAINED and point.get("gap", 0.0) <= PCA_GAP
    return (codec, explained), broadcast(point)


def autoencoder_latent(dim: int, config, sizes: list[int]) -> int:
    """How many values the conv autoencoder's latent would have (without building it)."""
    cfg = config.autoencoder
    token = cfg.token_size or auto_token_size(dim)
    tokens = sum(math.ceil(n / token) for n in sizes)
    return cfg.latent_channels * math.ceil(tokens / 2**cfg.depth)


def principal_first(principal: dict | None, components: int, latent: int) -> bool:
    """Whether the principal components replace the autoencoder without training it: they pass on
    the held-back snapshots and give the diffusion model no more values to learn than the
    autoencoder's latent would (on a small subset, such as a few BatchNorm layers, the autoencoder
    compresses and the principal components do not: there it is trained as before)."""
    return principal is not None and principal["passes"] and components <= latent


def choose(principal: dict | None, autoencoder: dict | None, first: bool) -> str:
    """"pca" or "conv": the principal components when `first`; else the autoencoder while it stays
    within both lines on the held-back snapshots. When it fails them, the principal components if
    they stay within both; when both fail, the one further from the health check's fail lines, each
    measure taken against its own line (variation missed / 25%, validation accuracy lost / 2 points),
    so neither a codec that keeps only the mean (accurate, little variation) nor one that loses many
    points of accuracy is kept over one that does neither."""
    if first:
        return "pca"
    if principal is None or autoencoder is None:
        return "conv"  # no held-back rows to judge by (a zoo under 10 snapshots): the autoencoder

    def fails(point: dict) -> bool:
        return point.get("unexplained", 0.0) > PCA_UNEXPLAINED or point.get("gap", 0.0) > PCA_GAP

    if not fails(autoencoder):
        return "conv"
    if not fails(principal):
        return "pca"

    def worst(point: dict) -> float:  # how far past the health check's fail lines (1: on them)
        return max(point.get("unexplained", 0.0) / UNEXPLAINED[1], point.get("gap", 0.0) / RECONSTRUCTION_GAP[1])

    if worst(principal) != worst(autoencoder):
        return "pca" if worst(principal) < worst(autoencoder) else "conv"
    return "pca" if principal["unexplained"] < autoencoder.get("unexplained", float("inf")) else "conv"


def choice_line(stats: dict) -> str | None:
    """The choice in words (train_stats.json's autoencoder entry), for the budget summary."""
    chosen = stats.get("codec")
    if not chosen:
        return None
    p, a = chosen.get("principal"), chosen.get("autoencoder")
    said = (f"principal components {100 * p['unexplained']:.1f}% of the held-back snapshots' variation missed"
            + (f", {p['gap']:+.2f} points of validation accuracy lost" if "gap" in p else "")) if p else ""
    if a:
        said += f"; autoencoder {100 * a['unexplained']:.1f}% missed"
    elif p and p["passes"]:
        said += " (within the health check's lines, so no autoencoder was trained)"
    return f"codec: {chosen['kind']}, chosen automatically ({said or 'too few snapshots to hold any back'})."
