"""What the generators are conditioned on, for every task a run uses.

A label-space family's tasks are asked for by their code (the binary digits as floats); every
family's tasks can also be asked for by examples: `shots` labelled examples per class drawn from the
task's training split, embedded through the frozen trunk (examples.py). Training tasks get `draws`
example sets each, so an examples-conditioned generator learns what varies between sets of one task;
validation and held-out tasks get one set each, drawn by the seed from their training split (never
their validation or test data).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nndiff.families.examples import draw, embed_draws


def of_tasks(feats: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """The features these tasks see: shared [N, F] as they are, per-task [T, N, F] indexed."""
    return feats if feats.ndim == 2 else feats[tasks]


@dataclass
class Descriptors:
    codes: torch.Tensor  # [T, C] float: every task's code
    train_sets: torch.Tensor  # [T_train, draws, E]: embeddings of the training tasks' example sets
    sets: dict[str, torch.Tensor]  # "val", "heldout": [T_split, E], one example set per task
    picked: dict[str, torch.Tensor]  # "val", "heldout": [T_split, classes * shots], the examples' indices

    @classmethod
    def make(cls, family, config, feats, labels, *, codes, tasks) -> "Descriptors":
        gen = torch.Generator().manual_seed(config.seed + 2)
        train_sets, sets, picked = [], {}, {}
        for split in ("train", "val", "heldout"):
            ids = tasks[split]
            task_labels = family.labels(codes[ids], labels["train"])
            x = of_tasks(feats["train"], ids)
            if split == "train":
                for _ in range(config.draws):
                    idx = draw(task_labels, family.classes, config.shots, gen)
                    train_sets.append(embed_draws(x, task_labels, idx, family.classes))
            else:
                picked[split] = draw(task_labels, family.classes, config.shots, gen)
                sets[split] = embed_draws(x, task_labels, picked[split], family.classes)
        return cls(codes.float(), torch.stack(train_sets, 1), sets, picked)

    def task_means(self) -> torch.Tensor:
        """[T_train, E]: each training task's mean embedding over its example sets."""
        return self.train_sets.mean(1)


def pairs(task_rows: torch.Tensor, sets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head of a task with every example set of the task: task_rows [T, K, D], sets [T, R, E]
    -> params [T * R * K, D], descriptors [T * R * K, E]."""
    t, k, d = task_rows.shape
    r, e = sets.shape[1], sets.shape[2]
    params = task_rows[:, None].expand(t, r, k, d).reshape(-1, d)
    return params, sets[:, :, None].expand(t, r, k, e).reshape(-1, e)
