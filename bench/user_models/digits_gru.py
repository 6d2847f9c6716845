"""A user's recurrent model: a GRU reading the 8x8 digits row by row, generating its head
(330 values); every collection and training setting is nndiff's default."""

from torch import nn

from nndiff.tasks import ClassificationTask
from nndiff.tasks.digits import load_digits_splits


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        _, h = self.gru(x.flatten(1, 2))  # [N, 1, 8, 8] -> 8 steps of 8 pixels
        return self.head(h[-1])


def make_task():
    return ClassificationTask(name="digits-gru", description="digits read row by row by a GRU; head",
                              make_model=Net, load_data=load_digits_splits, default_select=["head.*"])
