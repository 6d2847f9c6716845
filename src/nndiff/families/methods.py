"""Every method's heads for the held-out tasks ([T, m, D] each), the yardstick and the baselines
beside the generators, and the novelty of generated heads."""

from __future__ import annotations

import time

import torch

from nndiff.families.data import task_rows
from nndiff.families.descriptors import of_tasks
from nndiff.families.evaluate import SGD_STEPS
from nndiff.families.examples import draw, embed_draws
from nndiff.families.heads import logits, train_heads

EXAMPLE_SGD_STEPS = 100


def heldout_methods(family, config, generators, inputs, *, rows, init, feats, labels, codes, tasks, per_task, desc):
    """Each method's heads for the held-out tasks and the generators' sampling times."""
    held, train = tasks["heldout"], tasks["train"]
    dim, classes = rows.shape[1], family.classes
    out = {"trained": task_rows(rows, held, per_task)}  # the yardstick: the tasks' own SGD snapshots
    seconds = {}
    for name, gen in generators.items():
        given = desc.sets["heldout"] if name == "regression_examples" else inputs
        n = 1 if gen.one_per_task else config.n
        t0 = time.perf_counter()
        out[name] = gen.sample(given, n, config.seed).view(len(held), -1, dim)
        seconds[name] = {"per_task": (time.perf_counter() - t0) / len(held)}
        t0 = time.perf_counter()
        gen.sample(given[:1], 100, config.seed)
        seconds[name]["100_models_one_task"] = time.perf_counter() - t0
    x_train = of_tasks(feats["train"], held)
    lab_train = family.labels(codes[held], labels["train"])
    for steps in SGD_STEPS:
        heads, _ = train_heads(init, x_train, lab_train, classes, steps=steps, lr=config.lr, seed=config.seed + 1)
        out[f"sgd_{steps}"] = heads[:, None]
    # SGD for the wall time generating one task's models takes (one task's steps, timed alone)
    t0 = time.perf_counter()
    train_heads(
        init, x_train[:1] if x_train.ndim == 3 else x_train, lab_train[:1], classes, steps=50, lr=config.lr, seed=0
    )
    step_s = (time.perf_counter() - t0) / 50
    for name in generators:
        steps = max(1, int(seconds[name]["per_task"] / step_s))
        heads, _ = train_heads(init, x_train, lab_train, classes, steps=steps, lr=config.lr, seed=config.seed + 1)
        out[f"sgd_same_time_as_{name}"] = heads[:, None]
        seconds[name]["sgd_steps_in_that_time"] = steps
    # the examples alone: SGD on the same labelled examples the examples-conditioned generator sees
    idx, rows_ix = desc.picked["heldout"], torch.arange(len(held))[:, None]
    x_ex = x_train[idx] if x_train.ndim == 2 else x_train[rows_ix, idx]
    heads, _ = train_heads(
        init, x_ex, lab_train[rows_ix, idx], classes, steps=EXAMPLE_SGD_STEPS, lr=config.lr, seed=config.seed + 1
    )
    out["sgd_on_examples"] = heads[:, None]
    if "regression_examples" in generators and family.relabel is not None:
        out.update(
            _per_base_class(
                family,
                config,
                generators["regression_examples"],
                init,
                x_train=x_train,
                labels=labels,
                lab_train=lab_train,
            )
        )
    out["retrieval_nearest"] = task_rows(
        rows, train[_nearest(family, desc, codes, held, train=train, generators=generators)], per_task
    )
    out["retrieval_best_on_val"] = task_rows(
        rows, train[_best_on_val(family, rows, feats, labels, codes=codes, tasks=tasks, per_task=per_task)], per_task
    )
    out["zoo_mean"] = task_rows(rows, train, per_task).reshape(-1, dim).mean(0).expand(len(held), 1, dim)
    return out, seconds


def _per_base_class(family, config, generator, init, *, x_train, labels, lab_train) -> dict:
    """Tasks over relabelled classes, shown `shots` examples of every base class (each labelled by
    the task): the examples-conditioned generator and SGD on those examples alone."""
    held = len(lab_train)
    base = labels["train"].expand(held, -1)
    idx = draw(base, int(labels["train"].max()) + 1, config.shots, torch.Generator().manual_seed(config.seed + 3))
    rows_ix = torch.arange(held)[:, None]
    shown = embed_draws(x_train, lab_train, idx, family.classes)
    x_ex = x_train[idx] if x_train.ndim == 2 else x_train[rows_ix, idx]
    heads, _ = train_heads(
        init, x_ex, lab_train[rows_ix, idx], family.classes, steps=EXAMPLE_SGD_STEPS, lr=config.lr, seed=config.seed + 1
    )
    return {
        "regression_examples_per_base_class": generator.sample(shown).view(held, 1, -1),
        "sgd_on_examples_per_base_class": heads[:, None],
    }


def _nearest(family, desc, codes, held, *, train, generators) -> torch.Tensor:
    """For each held-out task, the training task nearest by descriptor: the code (Hamming distance)
    when tasks are asked for by code, else the example-set embedding (in the generator's input units)."""
    if family.asked_by == "code":
        return (codes[held][:, None, :] != codes[train][None]).sum(2).argmin(1)
    scale = generators["regression"].inputs
    return torch.cdist(scale(desc.sets["heldout"]), scale(desc.task_means())).argmin(1)


def _best_on_val(family, rows, feats, labels, *, codes, tasks, per_task) -> torch.Tensor:
    """For each held-out task, the training task whose last head is most accurate on the held-out
    task's validation split."""
    held, train = tasks["heldout"], tasks["train"]
    last = task_rows(rows, train, per_task)[:, -1]
    lab_val = family.labels(codes[held], labels["val"])
    best = []
    for t in range(len(held)):
        x = feats["val"] if feats["val"].ndim == 2 else feats["val"][held[t]]
        if t == 0 or feats["val"].ndim == 3:
            with torch.no_grad():
                preds = torch.cat(
                    [logits(last[i : i + 64], x, family.classes).argmax(2) for i in range(0, len(last), 64)]
                )
        best.append((preds == lab_val[t]).float().mean(1).argmax())
    return torch.stack(best)


def novelty(generated: torch.Tensor, trained: torch.Tensor, normalizer) -> dict:
    """For each held-out task: the generated heads' nearest distance to the task's own trained heads,
    in units of those heads' own nearest spacing (normalized space); a replica is nearer than 0.1."""
    rel, replicas = [], 0
    for g, t in zip(generated, trained):
        gn, tn = normalizer(g), normalizer(t)
        spacing = torch.cdist(tn, tn).fill_diagonal_(float("inf")).min(1).values.median()
        nearest = torch.cdist(gn, tn).min(1).values / spacing.clamp_min(1e-12)
        rel.append(nearest)
        replicas += int((nearest < 0.1).sum())
    rel = torch.cat(rel)
    return {"relative_nearest_distance_median": float(rel.median()), "replica_share": replicas / len(rel)}
