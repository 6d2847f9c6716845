"""The health check (`nndiff doctor`): is the zoo worth learning, did the autoencoder learn it, did
the generator? Each check is pass / warn / fail with what was measured and the one setting that
fixes it.

Everything here is measured on validation data or in parameter space: a warning that looked at
the test set would be a way of tuning on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from nndiff.analysis.distribution import (
    COLLAPSED_SPREAD,
    COPIES_SHARE,
    nearest_distances,
    originals_spacing,
    relative_distances,
    replica_share,
    spread_ratio,
    unexplained_share,
    variation_missed,
)
from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import COPIES_IOU, mean_offdiagonal, pairwise_iou
from nndiff.evaluation.uncertainty import Bootstrap, estimate, mean_accuracy
from nndiff.generator.principal import PrincipalCodec
from nndiff.params.rows import column_blocks, finite_rows, rows_where

# Thresholds, in the units each check reports.
COPIES_IOUS = (0.98, COPIES_IOU)  # snapshots' mean pairwise IoU of wrong validation predictions: warn above either


COPIES_SPREAD = (1e-3, 1e-4)  # snapshots' per-dimension std (median) over the subset's RMS: warn, fail below


# Accuracy losses are graded by the lower end of their 95% interval.
DRIFT = (2.0, 5.0)  # points of validation accuracy the snapshots lose against the base model


RECONSTRUCTION_GAP = (0.5, 2.0)  # points of validation accuracy the autoencoder's reconstructions lose


UNEXPLAINED = (0.05, 0.25)  # share of the snapshots' variance (normalized space) the reconstructions miss


GENERATED_GAP = (1.0, 5.0)  # points of validation accuracy the generated models lose against the originals


SPREAD = (0.3, COLLAPSED_SPREAD)  # generated spread / originals' spread (median over dimensions)


REPLICAS = (0.1, COPIES_SHARE)  # share of generated models closer to a snapshot than 0.1 of the snapshots' spacing


NONFINITE = (0.0, 0.1)  # share of generated models with NaN/Inf


RECONSTRUCTED = 64  # snapshots the autoencoder check reconstructs ...


RECONSTRUCT_CHUNK = 8  # ... this many at a time


@dataclass
class Check:
    check: str
    status: str  # "pass", "warn", "fail" or "skip"
    measured: str
    fix: str = ""


def _loss(val, reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Points of validation accuracy `other` loses against `reference` (both [N, n] predictions; a
    row of -1 is a model that could not be evaluated), with its 95% interval (paired bootstrap over
    validation samples and models)."""
    labels = val.y.cpu()
    boot = Bootstrap(len(labels))
    (ref, ref_reps), (oth, oth_reps) = mean_accuracy(boot, reference == labels), mean_accuracy(boot, other == labels)
    return estimate(ref - oth, ref_reps - oth_reps)


def _graded_loss(loss: dict, warn: float, fail: float) -> str:
    """A loss counts only where its whole interval lies beyond the threshold: a few validation samples
    must not fail a check."""
    return _grade(loss["ci95"][0], warn, fail)


def _says(loss: dict) -> str:
    lo, hi = loss["ci95"]
    return f"{loss['estimate']:+.2f} points (95% CI {lo:+.2f} to {hi:+.2f})"


def _grade(value: float, warn: float, fail: float, higher_is_worse: bool = True) -> str:
    if value != value:  # NaN: nothing could be measured
        return "fail"
    bad = (lambda t: value > t) if higher_is_worse else (lambda t: value < t)
    return "fail" if bad(fail) else "warn" if bad(warn) else "pass"


def parameter_spread(params: torch.Tensor) -> float:
    """The snapshots' per-dimension std (median over dimensions) over the subset's RMS value, in
    float64 a block of columns at a time (no float64 copy of the zoo)."""
    stds, square_sum = [], 0.0
    for b in column_blocks(len(params), params.shape[1]):
        block = params[:, b].double()
        stds.append(block.std(0))
        square_sum += float(block.pow(2).sum())
    rms = math.sqrt(square_sum / max(params.numel(), 1))
    return float(torch.cat(stds).median()) / max(rms, 1e-12)


def zoo_checks(zoo, task, model, val, *, snapshots: torch.Tensor) -> list[Check]:
    """Are the snapshots diverse, and still as accurate as the base model they started from?
    `snapshots`: their [K, n] validation predictions."""
    lr = zoo.info.get("collect", {}).get("lr")  # the rate used (what --lr auto chose)
    loss = _loss(val, task.evaluate(model, val).predictions[None].cpu(), snapshots)
    lower = f"collect again with a smaller --lr (e.g. {lr / 3:g})" if lr else "collect again with a smaller --lr"
    drift = Check(
        "snapshot accuracy",
        _graded_loss(loss, *DRIFT),
        f"validation accuracy the snapshots lose against the base model: {_says(loss)}",
        f"collection drifts away from the base model: {lower}",
    )
    if len(zoo) < 2:
        one = Check("zoo diversity", "fail", "a single snapshot: nothing varies, nothing to learn",
                    "collect more snapshots (-k 50 or more)")
        return [one, drift]
    iou = mean_offdiagonal(pairwise_iou(snapshots, val.y.cpu()))
    # In parameter space: the snapshots' per-dimension spread (median) relative to the subset's scale.
    spread = parameter_spread(zoo.params)
    factor = 10 if spread < COPIES_SPREAD[1] else 3  # copies even in parameters: the lr is far too small
    raise_lr = (
        f"collect again with a larger --lr (e.g. {factor * lr:g} instead of {lr:g})"
        if lr
        else "collect again with a larger --lr"
    )
    grades = [_grade(spread, *COPIES_SPREAD, higher_is_worse=False), _grade(iou, *COPIES_IOUS)]
    # Identical validation mistakes alone are a warning: a model robust to its own noise makes the
    # same few mistakes at every snapshot while its parameters still differ (a LayerNorm MLP on digits:
    # IoU 1.000 at a spread of 4.9e-3, near digits-cnn's 1.4e-2; copies at --lr 1e-4: 3.9e-6).
    status = "fail" if grades[0] == "fail" else "warn" if "warn" in grades or "fail" in grades else "pass"
    diversity = Check(
        "zoo diversity",
        status,
        f"parameter spread {spread:.1e} of their scale; mean pairwise IoU of wrong validation predictions {iou:.3f}",
        f"the snapshots are near-copies: {raise_lr}, or more --runs",
    )
    return [diversity, drift]


@torch.no_grad()
def autoencoder_check(zoo, task, model, generator, *, val, snapshots: torch.Tensor, steps: int) -> Check:
    """How much of the snapshots' variation the autoencoder reproduces (in normalized parameter
    space), and the validation accuracy its reconstructions lose. The first catches under-fitting
    the second cannot: on a subset whose mean model is as good as any snapshot (BatchNorm layers),
    reconstructions that all collapse to the mean keep the accuracy. `steps`: how many the
    autoencoder trained (the fix asks for twice as many)."""
    rows = torch.linspace(0, len(zoo) - 1, min(RECONSTRUCTED, len(zoo))).round().long().unique()
    ae, norm = generator.autoencoder, generator.normalizer
    ae.eval()
    # a few rows at a time (a whole network's rows are large): the share of the variation missed
    # is the squared error summed over the chunks over the squared spread around the rows' mean
    chunks = rows.split(RECONSTRUCT_CHUNK)
    mean = sum(norm(zoo.params[c]).sum(0) for c in chunks) / len(rows)
    missed = spread = 0.0
    finite, predictions = True, []
    for c in chunks:
        x = norm(zoo.params[c])
        recon_n = ae.reconstruct(x.to(generator.device)).cpu()
        chunk_missed, chunk_spread = variation_missed(x, recon_n, mean)
        missed, spread = missed + chunk_missed, spread + chunk_spread
        recon = norm.inverse(recon_n)
        finite = finite and bool(torch.isfinite(recon).all())
        if finite:
            evals = evaluate_params(task, model, zoo.layout, recon, splits={"val": val}, progress=False)
            predictions.append(evals["val"].predictions)
    unexplained = unexplained_share(missed, spread)
    if finite:
        loss = _loss(val, snapshots[rows], torch.cat(predictions))
        grades, says = [_grade(unexplained, *UNEXPLAINED), _graded_loss(loss, *RECONSTRUCTION_GAP)], _says(loss)
    else:
        grades, says = ["fail"], "NaN or Inf reconstructions"
    status = "fail" if "fail" in grades else "warn" if "warn" in grades else "pass"
    return Check(
        "autoencoder",
        status,
        f"{100 * unexplained:.1f}% of the snapshots' variation not reproduced; validation accuracy the "
        f"reconstructions lose against the snapshots: {says}",
        "the principal components miss part of the snapshots: keep more, --ae-components 0 (all)"
        if isinstance(ae, PrincipalCodec)
        else f"the autoencoder under-fits: train it longer, --ae-steps {max(2 * steps, 1000)}",
    )


def generator_checks(
    zoo, task, model, generated: torch.Tensor, *, normalizer, val, snapshots: torch.Tensor, diffusion_steps: int
) -> list[Check]:
    """Non-finite models, spread, replicas and validation accuracy of the generated models."""
    finite = finite_rows(generated)
    share = 1.0 - float(finite.double().mean())
    checks = [
        Check(
            "non-finite models",
            _grade(share, *NONFINITE),
            f"{100 * share:.0f}% of {len(generated)} contain NaN or Inf",
            "the generator diverged: retrain with --fresh and a smaller learning rate in config.yaml (diffusion.lr)",
        )
    ]
    gen = rows_where(generated, finite)
    if len(zoo) < 2:
        return checks + [Check("generator spread", "skip", "one training snapshot: no spread to compare with",
                               "collect more snapshots (-k 50 or more)")]
    if len(gen) < 2:
        return checks + [
            Check("generator", "fail", f"{len(gen)} finite generated model(s)", "generate more models (-n)")
        ]
    spread = spread_ratio(gen, zoo.params)["median"]  # the same in raw and normalized space
    if spread > 1 / SPREAD[0]:
        grade, fix = "warn", "wider than the zoo: train the diffusion model longer (--diffusion-steps)"
    else:
        grade = _grade(spread, *SPREAD, higher_is_worse=False)
        fix = "the generator collapsed: train the autoencoder longer (--ae-steps) and keep its --latent-noise"
    checks.append(
        Check("generator spread", grade, f"generated spread {spread:.2f}x the snapshots' (median over dimensions)", fix)
    )
    if len(zoo.params) > 1:
        spacing = originals_spacing(zoo.params, normalizer)[1]
        replicas = replica_share(relative_distances(nearest_distances(gen, zoo.params, normalizer=normalizer), spacing))
        checks.append(
            Check(
                "replicas",
                _grade(replicas, *REPLICAS),
                f"{100 * replicas:.0f}% of the generated models copy a snapshot",
                "the generator memorized the zoo: collect a more varied one (a larger --lr, more --runs, more -k)",
            )
        )
    preds = torch.full(
        (len(generated), len(val)), -1, dtype=torch.long
    )  # NaN models count as failures, as everywhere else
    evaluated = evaluate_params(task, model, zoo.layout, gen, splits={"val": val}, progress=False)
    preds[finite] = evaluated["val"].predictions
    loss = _loss(val, snapshots, preds)
    checks.append(
        Check(
            "generated accuracy",
            _graded_loss(loss, *GENERATED_GAP),
            f"validation accuracy the generated models lose against the snapshots: {_says(loss)}",
            f"if the autoencoder passes, train the diffusion model longer: "
            f"--diffusion-steps {max(2 * diffusion_steps, 2000)}",
        )
    )
    checks.append(weight_average_check(zoo, task, model, val, preds=preds))
    return checks


def weight_average_check(zoo, task, model, val, *, preds: torch.Tensor) -> Check:
    """Whether generating is worth it: the generated models (predictions [N, n] on validation data)
    against the free weight average of the snapshots. It warns only when the whole interval of what
    they lose lies above zero; the other checks can all pass while it does (a generator that learned
    the zoo well is still no better than its mean)."""
    average = zoo.params.mean(0, keepdim=True)
    reference = evaluate_params(task, model, zoo.layout, average, splits={"val": val}, progress=False)[
        "val"
    ].predictions
    behind = _loss(val, reference, preds)
    return Check(
        "weight average",
        "warn" if behind["ci95"][0] > 0 else "pass",
        f"validation accuracy the generated models lose against the weight average of the {len(zoo)} "
        f"snapshots: {_says(behind)}",
        "the weight average (one model, free: `nndiff evaluate` reports it) is more accurate here; generate "
        "only if you need many different models",
    )


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.check) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status.upper():4s}  {c.check:{width}s}  {c.measured}")
        if c.status in ("warn", "fail") and c.fix:
            lines.append(f"{'':4s}  {'':{width}s}  fix: {c.fix}")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
