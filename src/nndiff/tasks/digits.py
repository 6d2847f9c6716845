"""scikit-learn's bundled 8x8 handwritten digits (1,797 images; no download)."""

from __future__ import annotations

import torch
from torch import nn

from nndiff.tasks.base import ClassificationTask, Split


def load_digits_splits(seed: int = 0) -> dict[str, Split]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return {
        "train": Split(x[:1000], y[:1000]),
        "val": Split(x[1000:1300], y[1000:1300]),
        "test": Split(x[1300:], y[1300:]),
    }


class DigitsCNN(nn.Module):
    """Two conv blocks with BatchNorm and a linear head (~10k params)."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.flatten(1))


def digits_cnn() -> ClassificationTask:
    return ClassificationTask(
        name="digits-cnn",
        description="scikit-learn 8x8 digits (1000/300/497), small 2-D CNN with BatchNorm; generates both BN layers",
        make_model=DigitsCNN,
        load_data=load_digits_splits,
        default_select=["bn1.*", "bn2.*"],
        base_epochs=30,
        batch_size=64,
        # the --lr auto probe's starting point; on the 300 validation samples (bench/collect_lr.py, K = 200)
        # lr 0.5 gives a zoo IoU of 0.917 and 2.0 of 0.958, so the probe, not this number, decides
        collect_lr=2.0,
    )
