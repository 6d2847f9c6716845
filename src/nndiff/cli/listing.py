"""`nndiff tasks`: the built-in tasks, the vision tasks' parts, and the built-in task families."""

from __future__ import annotations


def listing() -> str:
    from nndiff.families.builtin import FAMILIES
    from nndiff.tasks import TASKS
    from nndiff.tasks.vision import ARCHITECTURES, DATASETS

    lines = [f"{name:24s} {make().description}" for name, make in TASKS.items()]
    lines += [
        "",
        "vision tasks, DATASET-ARCH with --data-root (pip install 'nndiff[vision]'):",
        f"  datasets: {', '.join(DATASETS)}",
        f"  architectures: {', '.join(ARCHITECTURES)}",
        "  e.g. cifar100-resnet18 generates layer4.1.bn1 + layer4.1.bn2 as in the paper",
        "",
        "task families, with `nndiff run --family NAME` (your own: --family path/to/file.py:make_family):",
    ]
    for name, make in FAMILIES.items():
        family = make()
        width = family.codes.shape[1]
        ask = f"--code ({width} binary digits)" if family.asked_by == "code" else "--examples FILE"
        lines.append(f"{name:24s} {family.description}")
        lines.append(f"{'':24s} generates `{family.head}` ({family.classes} outputs); a task is asked for by {ask}")
    return "\n".join(lines)
