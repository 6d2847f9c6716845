"""Training budgets chosen by validation (`steps: auto`, the default for both training loops).

A fixed number of steps is right for the task it was tuned on and wrong elsewhere: the default
1,000 autoencoder steps under-fit mnist1d-mlp's whole network. With `steps: auto` each loop runs
up to its `max_steps` and is checked every `check_every` steps on validation data:

- the autoencoder stops once it reconstructs a held-back tenth of the zoo well enough: the end of
  each run's trajectory, which neither the autoencoder nor the normalizer ever sees. The
  reconstructions lose at most `RECONSTRUCTION_GAP` points of validation accuracy against those
  snapshots, and miss at most `UNEXPLAINED` of their variation around the training snapshots' mean
  in normalized parameter space (the doctor's pass thresholds) — or no longer miss less of it from
  one check to the next (a plateau, which the doctor still reports);
- the diffusion model stops once a small generated batch (the same seeds at every check) has
  stopped improving for `PATIENCE` checks: neither its mean validation accuracy (while more than
  `ACCURACY_REACHED` points below the snapshots') nor how close its spread lies to the snapshots'
  got better.

Each check is one point of the loop's curve (`train_stats.json`, and the figure in the report).
Everything here is measured on the validation split: test data never chooses a budget. A zoo
recorded without a task has no validation data: its checks measure the parameters alone (the
variation missed, the generated spread) and the accuracy criteria drop out.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from nndiff.analysis.distribution import spread_ratio, unexplained_share, variation_missed
from nndiff.analysis.doctor import RECONSTRUCTION_GAP as HEALTH_GAP
from nndiff.analysis.doctor import UNEXPLAINED as HEALTH_UNEXPLAINED
from nndiff.evaluation.engine import evaluate_params
from nndiff.params.rows import finite_rows, rows_where
from nndiff.runtime.memory import release_freed_memory
from nndiff.training.codec import choice_line

HELD_BACK = 10  # one snapshot in this many is held back from the autoencoder to judge it (zoos of 10 or more)


MAX_HELD_BACK = 32


RECONSTRUCTION_GAP = HEALTH_GAP[0]  # points of validation accuracy the held-back reconstructions may lose


UNEXPLAINED = HEALTH_UNEXPLAINED[0]  # share of the held-back snapshots' variation the reconstructions may miss ...


MIN_RELATIVE_GAIN = 0.1  # ... unless one check shrank it by less than this share of itself (diminishing returns)


BATCH = 16  # generated models per diffusion check


SAMPLE_STEPS = 25  # DDIM steps per diffusion check


PATIENCE = 2  # diffusion checks without improvement before it stops


MIN_GAIN = 0.1  # points of mean validation accuracy that count as an improvement ...


ACCURACY_REACHED = 0.5  # ... up to this many points below the snapshots' mean; from there only the spread counts


MIN_SPREAD_GAIN = 0.05  # |log spread ratio| must shrink by this much to count as an improvement


CHECK_SEED = (
    1_000_003  # the generated batch's first seed (the same at every check, so checks compare models, not noise)
)


def held_back(runs: Sequence[int]) -> torch.Tensor:
    """Indices of the snapshots the autoencoder does not train on, given the run of each row (rows of
    a run are consecutive, in trajectory order): the last stretch of every run, a tenth of the zoo
    (at most MAX_HELD_BACK) shared out by run size. A stretch, not single snapshots between training
    ones: a snapshot one SGD step from two training rows would test interpolation, not generalization.
    None in a zoo under HELD_BACK snapshots, whose checks then look at the training snapshots."""
    runs = list(runs)
    k = len(runs)
    if k < HELD_BACK:
        return torch.zeros(0, dtype=torch.long)
    count = min(MAX_HELD_BACK, k // HELD_BACK)
    starts = [i for i in range(k) if i == 0 or runs[i] != runs[i - 1]]
    spans = [(a, b) for a, b in zip(starts, starts[1:] + [k])]
    share = [count * (b - a) // k for a, b in spans]
    for i in sorted(range(len(spans)), key=lambda i: -(spans[i][1] - spans[i][0])):  # the rest to the largest runs
        if sum(share) == count:
            break
        share[i] += 1 if share[i] < spans[i][1] - spans[i][0] - 1 else 0
    return torch.tensor([j for (a, b), h in zip(spans, share) for j in range(b - h, b)], dtype=torch.long)


class Judge:
    """The validation measurements the budgets are chosen by, for one zoo."""

    def __init__(self, task, model, layout, val, *, originals: torch.Tensor):
        self.task, self.model, self.layout, self.val = task, model, layout, val
        self.originals = originals  # [K, D] the zoo's parameters, raw
        self._reference: dict = {}

    @classmethod
    def of_zoo(cls, zoo, device) -> "Judge":
        task = zoo.task_if_known()
        if task is None:  # recorded without a task: the parameters alone
            return cls(None, None, zoo.layout, None, originals=zoo.params)
        return cls(task, zoo.model(task).to(device), zoo.layout, task.splits()["val"].to(device), originals=zoo.params)

    @torch.no_grad()
    def val_acc(self, params: torch.Tensor) -> torch.Tensor:
        """[N] validation accuracy of each parameter set; a set with NaN or Inf counts as 0."""
        acc = torch.zeros(len(params), dtype=torch.float64)
        finite = finite_rows(params)
        if finite.any():
            ev = evaluate_params(
                self.task, self.model, self.layout, rows_where(params, finite), splits={"val": self.val}, progress=False
            )
            acc[finite] = ev["val"].accuracy.double().cpu()
        return acc

    def reference(self, rows: torch.Tensor) -> float:
        """Mean validation accuracy of the snapshots at `rows` (measured once)."""
        key = tuple(rows.tolist())
        if key not in self._reference:
            every = len(rows) == len(self.originals) and torch.equal(rows, torch.arange(len(rows)))
            self._reference[key] = float(self.val_acc(self.originals if every else self.originals[rows]).mean())
        return self._reference[key]

    @torch.no_grad()
    def reconstruction(self, ae, normalizer, rows: torch.Tensor, device) -> dict:
        """How well the autoencoder reproduces the snapshots at `rows`."""
        x = normalizer(self.originals[rows])
        ae.eval()
        recon_n = ae.reconstruct(x.to(device)).cpu()
        ae.train()
        # their variation around the training snapshots' mean: 0 in normalized space, the normalizer
        # being fitted on the training rows (a held-back stretch is compact around a mean of its own)
        unexplained = unexplained_share(*variation_missed(x, recon_n, torch.zeros(x.shape[1])))
        if self.task is None:
            return {"unexplained": unexplained}
        acc = float(self.val_acc(normalizer.inverse(recon_n)).mean())
        reference = self.reference(rows)
        del x, recon_n
        release_freed_memory()  # a check's buffers are not held through the training steps until the next
        return {"val_acc": acc, "gap": reference - acc, "unexplained": unexplained, "snapshots_val_acc": reference}

    @torch.no_grad()
    def generated(self, generator, normalizer) -> dict:
        """Mean validation accuracy and spread (vs the snapshots', normalized space) of a small batch."""
        vectors = generator.sample(BATCH, CHECK_SEED, "ddim", SAMPLE_STEPS)
        finite = finite_rows(vectors)
        spread = spread_ratio(rows_where(vectors, finite), self.originals)["median"]  # the same in raw space
        if self.task is None:
            return {"spread": spread}
        acc = self.val_acc(vectors)
        reference = self.reference(torch.arange(len(self.originals)))
        del vectors
        release_freed_memory()  # as in `reconstruction`
        return {"val_acc": float(acc.mean()), "spread": spread, "snapshots_val_acc": reference}


def autoencoder_done(curve: list[dict]) -> bool:
    """True once the reconstructions keep the accuracy and either reproduce the variation or get
    better at it only slowly (diminishing returns: on mnist1d-mlp's whole network they miss 88% of
    it at step 250, 53% at 1,000 and still 44% at 2,750, their training snapshots' about as much;
    mnist1d-convnet's 81%, 34%, 31% at 250, 1,000, 1,500; the doctor still grades what is missed)."""
    if not curve:
        return False
    last = curve[-1]
    if last.get("gap", 0.0) > RECONSTRUCTION_GAP:  # no gap: a zoo without a task, the variation alone
        return False
    if last["unexplained"] <= UNEXPLAINED:
        return True
    return (
        len(curve) > 1 and curve[-2]["unexplained"] - last["unexplained"] < MIN_RELATIVE_GAIN * curve[-2]["unexplained"]
    )


def _spread_error(point: dict) -> float:
    s = point["spread"]
    return abs(math.log(s)) if s == s and s > 0 else float("inf")


def _useful_acc(point: dict) -> float:
    """The batch's validation accuracy as far as it still counts: gains past ACCURACY_REACHED points
    below the snapshots' come from a generator narrowing onto their best region, not from learning
    them (mnist1d-mlp: 75.56 -> 75.89 while its spread fell from 0.91 to 0.72 of the snapshots').
    Without a task (no accuracy measured) it never improves: the spread alone decides."""
    if "val_acc" not in point:
        return 0.0
    return min(point["val_acc"], point.get("snapshots_val_acc", float("inf")) - ACCURACY_REACHED)


def diffusion_done(curve: list[dict]) -> bool:
    """True once the last PATIENCE checks improved on none of the earlier ones."""
    if len(curve) <= PATIENCE:
        return False
    before, recent = curve[:-PATIENCE], curve[-PATIENCE:]
    best_acc = max(_useful_acc(p) for p in before)
    best_spread = min(_spread_error(p) for p in before)
    return not any(
        _useful_acc(p) > best_acc + MIN_GAIN or _spread_error(p) < best_spread - MIN_SPREAD_GAIN for p in recent
    )


def summary_lines(training: dict) -> list[str]:
    """Each loop's budget in words (train_stats.json's view; printed by `train` and `run`, and in report.md)."""
    lines = []
    for name in ("autoencoder", "diffusion"):
        stats = training.get(name) or {}
        chosen = choice_line(stats) if name == "autoencoder" else None
        if chosen:
            lines.append(chosen)
        if stats.get("kind") == "pca":
            lines.append(
                f"autoencoder: none, {stats['components']} principal components instead "
                f"({100 * stats['explained']:.1f}% of the snapshots' variation)."
            )
            continue
        if "steps" not in stats:
            continue
        if stats.get("budget") != "validation":
            lines.append(f"{name}: {stats['steps']} steps (fixed).")
            continue
        last = stats["curve"][-1] if stats.get("curve") else {}
        why = "stopped" if stats.get("stopped_early") else f"reached its cap of {stats.get('max_steps')} steps"
        if stats.get("stopped_early") and name == "autoencoder" and last.get("unexplained", 0) > UNEXPLAINED:
            why = "stopped at a plateau"
        elif stats.get("stopped_early") and name == "diffusion":
            why = f"stopped after {PATIENCE} checks without improvement"
        if name == "autoencoder" and "gap" in last:
            held = stats.get("held_back_snapshots", 0)
            which = (
                f"{held} held-back snapshots (the end of each run, never trained on)"
                if held
                else "the training snapshots (too few to hold any back)"
            )
            said = (
                f"its reconstructions of {which}: mean validation accuracy {last['val_acc']:.2f}% "
                f"(the snapshots' {last['val_acc'] + last['gap']:.2f}%; the health check gives the interval), "
                f"{100 * last['unexplained']:.1f}% of their variation missed"
            )
        elif "val_acc" in last:
            said = (
                f"a generated batch's validation accuracy {last['val_acc']:.2f}%, "
                f"spread {last['spread']:.2f}x the snapshots'"
            )
        elif "unexplained" in last:
            said = f"{100 * last['unexplained']:.1f}% of the snapshots' variation missed; no task, so no accuracy"
        elif "spread" in last:
            said = f"a generated batch's spread {last['spread']:.2f}x the snapshots'; no task, so no accuracy"
        else:
            said = "no validation check"
        how = "validation" if "val_acc" in last else "the parameters' checks"  # a zoo without a task: no accuracy
        lines.append(f"{name}: {stats['steps']} steps, chosen by {how} ({why}; {said}).")
    return lines
