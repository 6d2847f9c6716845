"""A user's attention model: one Transformer encoder layer over the 8 rows of a digit, generating
the layer's second LayerNorm and the head (394 values); every collection and training setting is
nndiff's default."""

import torch
from torch import nn

from nndiff.tasks import ClassificationTask
from nndiff.tasks.digits import load_digits_splits


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.position = nn.Parameter(torch.zeros(8, 32))
        self.encoder = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        tokens = self.embed(x.flatten(1, 2)) + self.position
        return self.head(self.encoder(tokens).mean(1))


def make_task():
    return ClassificationTask(name="digits-attention", description="digits, one Transformer encoder layer; norm2 + head",
                              make_model=Net, load_data=load_digits_splits, default_select=["encoder.norm2.*", "head.*"])
