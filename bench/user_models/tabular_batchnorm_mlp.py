"""A user's model with BatchNorm: an MLP on synthetic tabular data (scikit-learn's
make_classification, generated locally), generating its second BatchNorm layer (128 values); every
collection and training setting is nndiff's default."""

import torch
from sklearn.datasets import make_classification
from torch import nn

from nndiff.tasks import ClassificationTask, Split


def load_data():
    x, y = make_classification(n_samples=5000, n_features=16, n_informative=10, n_classes=3, random_state=1)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return {"train": Split(x[:3000], y[:3000]), "val": Split(x[3000:4000], y[3000:4000]), "test": Split(x[4000:], y[4000:])}


def make_task():
    model = lambda: nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(),  # noqa: E731
                                  nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 3))
    return ClassificationTask(name="tabular-batchnorm-mlp", description="synthetic tabular data, MLP with BatchNorm; 2nd BN",
                              make_model=model, load_data=load_data, default_select=["4.*"])
