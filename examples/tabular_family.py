"""A user-defined task family: the tabular task of tabular_mlp.py seen through 200 sensors, each
task's own (every feature scaled by a gain, some flipped in sign), asked for by labelled examples.

    nndiff run --family examples/tabular_family.py:make_family --out runs/tabular-family
    nndiff generate --run runs/tabular-family --examples my_examples.safetensors \\
        --family examples/tabular_family.py:make_family

A family names the task whose model is the shared trunk (`base_task`, here a user task by its
path), the linear layer to generate per task (`head`), one row of `codes` per task, and how a task
differs: `relabel(codes, labels)` for tasks over other labels, `transform(code, x)` for tasks over
other inputs, or both. `asked_by="code"` needs binary codes and lets a user ask for a task by its
digits; `"examples"` asks by a safetensors file of labelled examples (x, y).
"""

from pathlib import Path

import torch

from nndiff.families import Family

TASKS = 200


def sensor_gains(count: int = TASKS) -> torch.Tensor:
    """[count, 20]: each task's gain per feature, between 0.5 and 2 in size, a quarter flipped in sign."""
    g = torch.Generator().manual_seed(0)
    size = 0.5 + 1.5 * torch.rand(count, 20, generator=g)
    sign = torch.where(torch.rand(count, 20, generator=g) < 0.25, -1.0, 1.0)
    return size * sign


def through_sensors(code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * code


def make_family() -> Family:
    return Family(
        name="tabular-sensors",
        description="synthetic 4-class tabular data through 200 sets of sensor gains; a generated 4-way head",
        base_task=f"{Path(__file__).with_name('tabular_mlp.py')}:make_task",
        head="out",
        codes=sensor_gains(),
        classes=4,
        transform=through_sensors,
        asked_by="examples",
    )
