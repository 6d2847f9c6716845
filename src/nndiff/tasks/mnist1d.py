"""MNIST-1D (Greydanus 2020), generated locally (mnist1d_data.py) and cached as .npz.

The dataset's own 4,000/1,000 split makes so few test errors that every similarity measure
saturates, so we generate 35,000 samples: 20,000 train, 5,000 validation, 10,000 test. The data
of the built-in tasks is the same on every install: its fingerprint is checked when it is made or
read from the cache, and recorded in every zoo.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.io.files import write_bytes_atomic
from nndiff.tasks import mnist1d_data
from nndiff.tasks.base import ClassificationTask, Split

N_TRAIN, N_VAL, N_TEST = 20_000, 5_000, 10_000
DATA_SEED = 42
DATA_VERSION = 2  # in the cache's file name: version 1 came from the mnist1d package and varied by install


def cache_dir() -> Path:
    return Path(os.environ.get("NNDIFF_CACHE", Path.home() / ".cache" / "nndiff"))


def _generate(n: int, path: Path, expected: str | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = mnist1d_data.generate(n, DATA_SEED)
    if expected is not None and mnist1d_data.fingerprint(x, y) != expected:
        warnings.warn(
            "the MNIST-1D data generated here differs from the reference data (fingerprint "
            f"{mnist1d_data.fingerprint(x, y)[:12]} instead of {expected[:12]}): results will not match published ones",
            stacklevel=3,
        )
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    try:
        write_bytes_atomic(path, buf.getvalue())
    except NndiffError as e:  # an unwritable cache costs time on every run, nothing else
        warnings.warn(f"the MNIST-1D data is not cached: {e} (set NNDIFF_CACHE to a writable directory)", stacklevel=3)
    return x, y


def load_mnist1d(n_train: int = N_TRAIN, n_val: int = N_VAL, n_test: int = N_TEST) -> dict[str, Split]:
    n = n_train + n_val + n_test
    expected = mnist1d_data.FINGERPRINT if (n, DATA_SEED) == (N_TRAIN + N_VAL + N_TEST, 42) else None
    path = cache_dir() / f"mnist1d-v{DATA_VERSION}-{n}-seed{DATA_SEED}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
        if x.shape != (n, mnist1d_data.LENGTH) or y.shape != (n,):
            raise ValueError("wrong shape")
        if expected is not None and mnist1d_data.fingerprint(x, y) != expected:
            raise ValueError("not the reference data")  # a cache written by something else: make it again
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        x, y = _generate(n, path, expected)
    x, y = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)
    cuts = np.cumsum([0, n_train, n_val, n_test])
    return {name: Split(x[a:b], y[a:b]) for name, a, b in zip(("train", "val", "test"), cuts[:-1], cuts[1:])}


class Mnist1dCNN(nn.Module):
    """Three 1-D conv blocks and a two-layer head, all with BatchNorm (~26k params).

    The generated default, bn3 + bn4, sits after the convolutions that cost most, so evaluating
    many generated models can reuse the frozen trunk's activations.
    """

    def __init__(self, width: int = 16, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(2 * width)
        self.conv3 = nn.Conv1d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm1d(2 * width)
        self.fc = nn.Linear(2 * width * 10, hidden, bias=False)
        self.bn4 = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        x = torch.relu(self.bn4(self.fc(x.flatten(1))))
        return self.head(x)


def mnist1d_cnn() -> ClassificationTask:
    return ClassificationTask(
        name="mnist1d-cnn",
        data_fingerprint=mnist1d_data.FINGERPRINT,
        description="MNIST-1D (generated locally, 20k/5k/10k), 1-D CNN with BatchNorm; generates the last two BN "
        "layers",
        make_model=Mnist1dCNN,
        load_data=load_mnist1d,
        default_select=["bn3.*", "bn4.*"],
        base_epochs=20,
    )


# SGD on every weight wants a gentler rate than on two BN layers (0.5 diverges), and consecutive
# steps at that rate are near-copies, so snapshots are 10 steps apart. Measured on both whole-network
# tasks: lr 0.05 every step costs the snapshots 3-5 points of test accuracy (mnist1d-mlp: mean 70.3
# from a 75.2 base); lr 0.01 every 10 steps keeps them at or above the base (75.5) and still distinct
# (mean pairwise IoU of wrong predictions 0.66; 0.51 on mnist1d-convnet).
WHOLE_NETWORK_COLLECTION = {"collect_lr": 0.01, "collect_every": 10}


class Mnist1dMLP(nn.Module):
    """A 40-128-64-10 MLP (14k params), small enough to generate whole."""

    def __init__(self, hidden: tuple[int, int] = (128, 64), classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(40, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def mnist1d_mlp() -> ClassificationTask:
    return _whole_network_task("mnist1d-mlp", "40-128-64-10 MLP (14k params)", Mnist1dMLP)


def mnist1d_mlp100k() -> ClassificationTask:
    """The MLP at 40-320-256-10 (97,866 parameters): the middle of the whole-network sizes
    (6k, 14k, 98k, 969k) that bench/scaling.py measures on real zoos."""
    return _whole_network_task(
        "mnist1d-mlp100k", "40-320-256-10 MLP (98k params)", lambda: Mnist1dMLP(hidden=(320, 256))
    )


def mnist1d_mlp1m() -> ClassificationTask:
    """The same MLP at 40-1024-896-10 (969k parameters): 89.8% validation accuracy after its 20 epochs
    (the 14k MLP: 75%), at one multiply-add per parameter per sample, so hundreds of whole generated
    models are evaluated in minutes on a CPU."""
    return _whole_network_task(
        "mnist1d-mlp1m", "40-1024-896-10 MLP (969k params)", lambda: Mnist1dMLP(hidden=(1024, 896))
    )


class Mnist1dConvNet(nn.Module):
    """Three strided 1-D convolutions and a linear classifier, no normalization layers (6.4k params),
    small enough to generate whole."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.flatten(1))


def mnist1d_convnet() -> ClassificationTask:
    return _whole_network_task("mnist1d-convnet", "1-D ConvNet without normalization (6.4k params)", Mnist1dConvNet)


def _whole_network_task(name: str, model: str, make_model) -> ClassificationTask:
    return ClassificationTask(
        name=name,
        data_fingerprint=mnist1d_data.FINGERPRINT,
        description=f"MNIST-1D, {model}; generates the whole network",
        make_model=make_model,
        load_data=load_mnist1d,
        default_select=["*"],
        base_epochs=20,
        **WHOLE_NETWORK_COLLECTION,
    )
