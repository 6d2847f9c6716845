"""A user's model nndiff was never tuned for: an MLP with LayerNorm on scikit-learn's digits,
generating its last LayerNorm and its head (778 values). Only the model, the data and the
parameters to generate are given; every collection and training setting is nndiff's default."""

from torch import nn

from nndiff.tasks import ClassificationTask
from nndiff.tasks.digits import load_digits_splits


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm1 = nn.Linear(64, 128), nn.LayerNorm(128)
        self.fc2, self.norm2 = nn.Linear(128, 64), nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.norm1(self.fc1(x.flatten(1))).relu()
        return self.head(self.norm2(self.fc2(x)).relu())


def make_task():
    return ClassificationTask(name="digits-layernorm-mlp", description="digits, MLP with LayerNorm; norm2 + head",
                              make_model=Net, load_data=load_digits_splits, default_select=["norm2.*", "head.*"])
