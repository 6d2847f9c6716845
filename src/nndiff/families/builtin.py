"""The built-in families.

- `mnist1d-binary`, `digits-binary` (label space): the binary tasks cut from ten classes, each
  assigning every class to "positive" or "negative" (a 10-bit code), 2^10 - 2 = 1,022 tasks (the
  all-zero and all-one codes are no task).
- `mnist1d-domains` (input domain): MNIST-1D's ten labels under 300 transformations of the signal
  (a circular shift, a slight Gaussian blur, a gain that may flip the sign, an offset), each task's own;
  the trunk is trained on the untransformed signals, and a task is asked for by labelled examples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nndiff.families.family import Family, binary_codes, binary_labels

DOMAIN_TASKS = 300


def _binary_family(name: str, data: str, base_task: str, values: str) -> Family:
    return Family(
        name=name,
        description=f"1,022 binary tasks over {data}'s 10 classes (descriptor: which classes are positive), "
        f"a generated 2-way head ({values} values) on the frozen {base_task} trunk",
        base_task=base_task,
        head="head",
        codes=binary_codes(10),
        classes=2,
        relabel=binary_labels,
    )


def mnist1d_binary() -> Family:
    return _binary_family("mnist1d-binary", "MNIST-1D", "mnist1d-cnn", "130")


def digits_binary() -> Family:  # small enough for quick checks
    return _binary_family("digits-binary", "scikit-learn's 8x8 digits", "digits-cnn", "1,026")


def domain_codes(count: int = DOMAIN_TASKS, seed: int = 0) -> torch.Tensor:
    """[count, 4]: each task's shift (samples, -8..8), blur (Gaussian sigma, 0..0.8), gain (+-0.7..2)
    and offset (-1..1), drawn once by a fixed seed (the same tasks on every install). Stronger blur or
    weaker gain leave a frozen trunk too little to separate the digits with any head."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(-8, 9, (count,), generator=g).float()
    blur = torch.rand(count, generator=g) * 0.8
    sign = torch.where(torch.rand(count, generator=g) < 0.5, -1.0, 1.0)
    gain = sign * (0.7 + torch.rand(count, generator=g) * 1.3)
    offset = torch.rand(count, generator=g) * 2 - 1
    return torch.stack([shift, blur, gain, offset], 1)


def transform_signal(code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MNIST-1D signals [N, 1, L] as task `code` (shift, blur, gain, offset) sees them."""
    shift, blur, gain, offset = code.tolist()
    x = torch.roll(x, int(shift), dims=-1)
    if blur > 0.05:
        radius = 6
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / blur) ** 2)
        x = F.conv1d(F.pad(x, (radius, radius), mode="replicate"), (kernel / kernel.sum()).view(1, 1, -1))
    return gain * x + offset


def mnist1d_domains() -> Family:
    return Family(
        name="mnist1d-domains",
        description=f"MNIST-1D's 10 classes under {DOMAIN_TASKS} signal transformations (shift, blur, gain, offset), "
        "a generated 10-way head (650 values) on the frozen mnist1d-cnn trunk; a task is asked for by examples",
        base_task="mnist1d-cnn",
        head="head",
        codes=domain_codes(),
        classes=10,
        transform=transform_signal,
        asked_by="examples",
        samples={"train": 4000, "val": 1000, "test": 4000},
    )


FAMILIES = {"mnist1d-binary": mnist1d_binary, "digits-binary": digits_binary, "mnist1d-domains": mnist1d_domains}
