"""`nndiff run --family NAME`: a family's zoo over its tasks, generators from descriptor to head,
and every method judged on held-out tasks.

    OUT/family.json                  the run's family, its fingerprint and settings (marks a family run)
    OUT/family/...                   the trunk, the zoo of heads and its manifest (data.py)
    OUT/regression.safetensors, OUT/regression_tuned.safetensors, OUT/diffusion.safetensors
                                     the generators the validation tasks choose between
    OUT/regression_examples.safetensors   (families asked for by code) the generator for `--examples`
    OUT/examples.safetensors         the training tasks' mean example-set embeddings and their spread
    OUT/metrics.json, OUT/report/    every method on the held-out tasks (report.py); metrics.json
                                     records the digest of every file above that `generate` reads

The run is a stage like a single task's training (runtime/stage.py): it holds OUT's lock, resumes
only with the settings it started with (else refuses, naming --fresh), keeps the trunk's progress
in OUT/.progress, and moves its generators, index and metrics in together under a commit record
(io/staging.py), so a run killed at any point leaves the previous results or the new ones, whole.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import torch

from nndiff.errors import NndiffError
from nndiff.families.config import FamilyConfig
from nndiff.families.data import check_contract, collect_heads, family_codes, load_data, task_rows
from nndiff.families.descriptors import Descriptors, of_tasks, pairs
from nndiff.families.evaluate import SGD_STEPS, compare_methods, per_sample, steps_worth
from nndiff.families.generators import GENERATORS, DiffusionGenerator, RegressionGenerator
from nndiff.families.methods import heldout_methods, novelty
from nndiff.families.tuning import tune
from nndiff.generator.registry import save_generator
from nndiff.families.registry import fingerprint, get_family
from nndiff.io.files import file_digest, load_json, save_json
from nndiff.io.staging import Staging, recover_staged
from nndiff.io.tensors import save_tensors
from nndiff.pipeline.rundir import FAMILY_RUN, refuse_other_kind
from nndiff.runtime.stage import Stage


REGRESSION_WIDTHS = (256, 1024)  # the validation tasks choose (wide fitted mnist1d-binary best, narrow digits-binary)
# the files a run commits together
RESULTS = (*(f"{g}.safetensors" for g in (*GENERATORS, "regression_examples")), "examples.safetensors", "metrics.json")


def run_family(config: FamilyConfig, out: str | Path, progress: bool = True, log=print, *, fresh: bool = False) -> dict:
    """Collect over the family's tasks, train the generators on the training tasks, choose the
    default on the validation tasks, and judge every method on the held-out tasks (metrics.json).
    `fresh`: start over, removing what an earlier run left in `out`."""
    out = Path(out)
    config.validate()
    refuse_other_kind(out, "family")
    family = get_family(config.family)
    check_contract(family, family_codes(family, config))
    record = {"format": "nndiff-family-run", "family": family.name, "fingerprint": fingerprint(family),
              "settings": config.settings()}
    with Stage.open(out, fresh) as stage:
        for sentence in recover_staged(out):
            warnings.warn(sentence)
        if fresh:
            _remove_results(out)
        _claim(out, record)
        stage.claim(record, "a family run")
        save_json(out / FAMILY_RUN, record)
        metrics = _run(family, config, out, progress, log=log, stage=stage)
        stage.finish()
    return metrics


def _claim(out: Path, record: dict) -> None:
    """Refuse, naming --fresh, a directory that holds a family run of another family or other settings."""
    path = out / FAMILY_RUN
    if not path.is_file():
        if (out / "family" / "manifest.json").is_file() or (out / "metrics.json").is_file():
            raise NndiffError(f"{out} holds a family run that records no settings; pass --fresh to start over")
        return
    saved = load_json(path)
    if saved == record:
        return
    saved = saved if isinstance(saved, dict) else {}
    if saved.get("family") != record["family"]:
        what = f"family {saved.get('family')!r}"
    elif saved.get("fingerprint") != record["fingerprint"]:
        what = "its family's code or data as they were before an edit"
    else:
        old, new = saved.get("settings") or {}, record["settings"]
        what = "other settings (" + ", ".join(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)) + ")"
    raise NndiffError(f"{out} holds a family run of {what}; pass --fresh to start over, or choose another --out")


def _remove_results(out: Path) -> None:
    """--fresh: what an earlier family run wrote goes (the lock file stays)."""
    for name in (*RESULTS, FAMILY_RUN):
        (out / name).unlink(missing_ok=True)
    for name in ("family", "report", "generated"):
        shutil.rmtree(out / name, ignore_errors=True)


def _run(family, config: FamilyConfig, out: Path, progress: bool, *, log, stage: Stage) -> dict:
    from nndiff.report.family import write_family_report

    t_start = time.perf_counter()
    codes = family_codes(family, config)
    log(f"[1/4] the {family.base_task} trunk and the heads of {len(codes)} tasks ({config.steps} SGD steps each)")
    _, feats, labels = load_data(family, config, out, codes, progress=progress, stage=stage)
    rows, init, manifest = collect_heads(family, config, feats, labels, out=out, codes=codes)
    tasks = {k: torch.tensor(v, dtype=torch.long) for k, v in manifest["tasks"].items()}
    per_task = len(manifest["snapshot_steps"])
    desc = Descriptors.make(family, config, feats, labels, codes=codes, tasks=tasks)

    # every choice is made on validation data of the validation tasks (never held-out tasks, never test data)
    inputs = _inputs(family, desc, tasks)
    lab_val = family.labels(codes[tasks["val"]], labels["val"])
    x_val = of_tasks(feats["val"], tasks["val"])

    def on_validation(gen, given) -> torch.Tensor:
        heads = _sample(gen, given, config).view(len(tasks["val"]), -1, rows.shape[1])
        return per_sample(heads, x_val, lab_val, family.classes)

    log(f"[2/4] training the generators on {len(tasks['train'])} tasks ({len(tasks['train']) * per_task} heads)")
    x_train, lab_train = of_tasks(feats["train"], tasks["train"]), family.labels(codes[tasks["train"]], labels["train"])
    generators, timings, candidates = _train(
        family,
        config,
        rows,
        tasks,
        per_task=per_task,
        desc=desc,
        progress=progress,
        validate=lambda gen, name: on_validation(gen, _val_inputs(name, inputs, desc)),
        x_train=x_train,
        lab_train=lab_train,
    )
    del x_train, lab_train
    timings["collect"] = manifest["seconds"]
    examples_generator = "regression_examples" if family.asked_by == "code" else None

    val_shares = {name: on_validation(generators[name], inputs["val"]) for name in GENERATORS}
    choice = {name: float(share.mean() * 100) for name, share in val_shares.items()}
    chosen = max(choice, key=choice.get)
    versus = compare_methods(val_shares, chosen, seed=config.seed)
    margins = {f"{k}_minus_{chosen}": versus[k][f"minus_{chosen}"] for k in GENERATORS if k != chosen}
    log(
        f"[3/4] validation tasks choose the {chosen} generator ("
        + ", ".join(f"{k} {v:.2f}%" for k, v in choice.items())
        + "; "
        + "; ".join(
            f"{k.replace('_', ' ')} {d['estimate']:+.2f}, 95% CI {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f}"
            for k, d in margins.items()
        )
        + ")"
    )

    held = tasks["heldout"]
    log(f"[4/4] every method on {len(held)} held-out tasks")
    methods, seconds = heldout_methods(
        family, config, generators, inputs["heldout"], rows=rows, init=init, feats=feats, labels=labels, codes=codes,
        tasks=tasks, per_task=per_task, desc=desc
    )
    lab_test = family.labels(codes[held], labels["test"])
    x_test = of_tasks(feats["test"], held)
    shares = {name: per_sample(h, x_test, lab_test, family.classes) for name, h in methods.items()}
    metrics = compare_methods(shares, chosen, seed=config.seed)
    sgd = {s: metrics[f"sgd_{s}"]["test_acc_mean"] for s in SGD_STEPS}
    metrics.update(
        {
            "family": family.name,
            "asked_by": family.asked_by,
            "shots": config.shots,
            "tasks": {k: len(v) for k, v in tasks.items()},
            "models_per_task": {name: int(h.shape[1]) for name, h in methods.items()},
            "chosen_on_validation_tasks": {
                "generator": chosen,
                "val_acc_mean": choice,
                **margins,
                "regression_candidates": candidates,
            },
            "diffusion_minus_regression": _versus_regression(shares, config.seed),
            "examples_generator": examples_generator or chosen,
            "sgd_steps_worth": {g: steps_worth(sgd, metrics[g]["test_acc_mean"]) for g in generators},
            "sampling_s": seconds,
            "novelty": novelty(methods[chosen], methods["trained"], generators["regression"].normalizer),
            "timings_s": {**timings, "total": round(time.perf_counter() - t_start, 3)},
            "heads_key": manifest["key"],
        }
    )
    with Staging(out, "family") as staging:
        for name, gen in generators.items():
            save_generator(staging.dir / f"{name}.safetensors", gen)
        _save_examples_index(staging.dir, desc, generators[examples_generator or "regression"])
        files = [staging.dir / f"{name}.safetensors" for name in generators] + [staging.dir / "examples.safetensors"]
        metrics["files"] = {p.name: file_digest(p) for p in [*files, out / "family" / "base.safetensors"]}
        save_json(staging.dir / "metrics.json", metrics)
        staging.commit()
    write_family_report(out / "report", metrics)
    return metrics


def _train(family, config, rows, tasks, *, per_task, desc, progress, validate, x_train, lab_train):
    """The generators, each on the training tasks only: regression and diffusion on the family's
    descriptor, the regression tuned with the tasks' own loss, and for families asked for by code also
    a regression on example sets. Every regression is fitted at each width of REGRESSION_WIDTHS;
    `validate(gen, name)` (per-sample shares on the validation tasks) keeps the best fit, which is then
    tuned; the examples regression keeps the tuned one if the validation tasks prefer it.
    x_train, lab_train: the training tasks' training features and labels. Returns the generators,
    timings and every candidate's validation accuracy."""
    train = tasks["train"]
    trows = task_rows(rows, train, per_task)
    by_examples = pairs(trows, desc.train_sets)
    codes = desc.codes[train]

    def some_sets(t: torch.Tensor, draw: torch.Generator) -> torch.Tensor:
        return desc.train_sets[t, torch.randint(desc.train_sets.shape[1], (len(t),), generator=draw)]

    if family.asked_by == "code":
        main = (trows.reshape(-1, rows.shape[1]), codes.repeat_interleave(per_task, 0))
        main_descriptors = lambda t, _: codes[t]  # noqa: E731
    else:
        main, main_descriptors = by_examples, some_sets
    generators, timings, scores = {}, {}, {}
    t0 = time.perf_counter()
    generators["diffusion"] = DiffusionGenerator.fit(*main, config.diffusion, progress)
    timings["train_diffusion"] = round(time.perf_counter() - t0, 3)
    data = {"regression": (main, main_descriptors)}
    if family.asked_by == "code":
        data["regression_examples"] = (by_examples, some_sets)
    for name, ((params, descriptors), given) in data.items():
        t0 = time.perf_counter()
        fitted = {
            f"{w}": RegressionGenerator.fit(params, descriptors, config.regression_steps, config.seed, width=w)
            for w in REGRESSION_WIDTHS
        }
        scores[name] = {k: float(validate(gen, name).mean() * 100) for k, gen in fitted.items()}
        fit = max(scores[name], key=scores[name].get)
        tuned = tune(
            fitted[fit], given, x_train, lab_train, classes=family.classes, steps=config.tune_steps, seed=config.seed
        )
        scores[name][f"{fit} tuned"] = float(validate(tuned, name).mean() * 100)
        if name == "regression":
            generators["regression"], generators["regression_tuned"] = fitted[fit], tuned
        else:
            generators[name] = tuned if scores[name][f"{fit} tuned"] > scores[name][fit] else fitted[fit]
        timings[f"train_{name}"] = round(time.perf_counter() - t0, 3)
    return generators, timings, scores


def _versus_regression(shares: dict, seed: int) -> dict:
    """Latent diffusion minus the plain (MSE) regression on the held-out tasks, paired."""
    pair = {k: shares[k] for k in ("regression", "diffusion")}
    return compare_methods(pair, "regression", seed=seed)["diffusion"]["minus_regression"]


def _val_inputs(name: str, inputs: dict, desc: Descriptors) -> torch.Tensor:
    return desc.sets["val"] if name == "regression_examples" else inputs["val"]


def _inputs(family, desc, tasks) -> dict[str, torch.Tensor]:
    """The main generators' descriptors of the validation and held-out tasks."""
    if family.asked_by == "code":
        return {k: desc.codes[tasks[k]] for k in ("val", "heldout")}
    return {k: desc.sets[k] for k in ("val", "heldout")}


def _sample(gen, descriptors: torch.Tensor, config: FamilyConfig) -> torch.Tensor:
    return gen.sample(descriptors, 1 if gen.one_per_task else config.n, config.seed)


def _save_examples_index(directory: Path, desc: Descriptors, gen) -> None:
    """What `generate --examples` compares a user's set with: each training task's mean embedding and
    how far a task's own example sets typically lie from it (the median), in the generator's input units."""
    means = desc.task_means()
    spread = (gen.inputs(desc.train_sets) - gen.inputs(means)[:, None]).norm(dim=2)
    radius = spread.flatten().median()
    save_tensors(directory / "examples.safetensors", {"task_means": means, "radius": radius.reshape(1)})
