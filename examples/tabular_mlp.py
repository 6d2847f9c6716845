"""A user-defined task: an MLP with LayerNorm on a synthetic tabular dataset.

    nndiff run --task examples/tabular_mlp.py:make_task --out runs/tabular
    nndiff inspect --task examples/tabular_mlp.py:make_task --select 'norm2.*'

A task is a ClassificationTask: a model factory, a function returning train/val/test splits of
tensors, the parameters to generate by default, and training settings. Everything else (collection,
training, generation, evaluation, the novelty report) works on it unchanged.
"""

import torch
from sklearn.datasets import make_classification
from torch import nn

from nndiff.tasks import ClassificationTask, Split


class MLP(nn.Module):
    def __init__(self, features: int = 20, hidden: int = 64, classes: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        x = torch.relu(self.norm1(self.fc1(x)))
        x = torch.relu(self.norm2(self.fc2(x)))
        return self.out(x)


def load_data() -> dict[str, Split]:
    # generated locally: no download
    x, y = make_classification(n_samples=6000, n_features=20, n_informative=12, n_classes=4, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return {"train": Split(x[:3000], y[:3000]), "val": Split(x[3000:4000], y[3000:4000]), "test": Split(x[4000:], y[4000:])}


def make_task() -> ClassificationTask:
    return ClassificationTask(
        name="tabular-mlp",
        description="synthetic 4-class tabular data, MLP with LayerNorm; generates the last LayerNorm",
        make_model=MLP,
        load_data=load_data,
        default_select=["norm2.*"],
        base_epochs=20,
        base_lr=3e-3,
        batch_size=128,
        collect_lr=0.2,
    )
