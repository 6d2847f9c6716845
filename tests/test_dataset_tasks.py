"""Tasks over any torch Dataset (tasks/datasets_any.py): streamed batch by batch, never resident."""

import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from nndiff import NndiffError
from nndiff.evaluation.engine import evaluate_params
from nndiff.params.layout import Layout
from nndiff.tasks import check_task_data
from nndiff.tasks.base import ClassificationTask
from nndiff.tasks.datasets_any import DatasetSplit, dataset_splits


class Synthetic(Dataset):
    """Items made from their index (four classes, 20 features), counting how many are alive at once."""

    def __init__(self, n: int, offset: int = 0, bad_label: bool = False):
        self.n, self.offset, self.bad_label = n, offset, bad_label
        self.alive = self.peak = 0

    def __len__(self):
        return self.n

    def _gone(self):
        self.alive -= 1

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.offset + i)
        y = (self.offset + i) % 4
        x = torch.randn(20, generator=g) * 0.5
        x[y * 5 : y * 5 + 5] += 1.0
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        weakref.finalize(x, self._gone)
        return x, (9 if self.bad_label and i == self.n - 1 else y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.out = nn.Linear(20, 32), nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.fc(x))))


def task_over(n: int, bad_label: bool = False) -> ClassificationTask:
    data = dataset_splits(Synthetic(n), Synthetic(n, 10**6), Synthetic(n, 2 * 10**6, bad_label))
    return ClassificationTask(name="synthetic", description="synthetic items from a Dataset", make_model=MLP,
                              load_data=lambda: data, default_select=["norm.*"], base_epochs=1, batch_size=64)


@pytest.mark.parametrize("n", [400, 20_000])
def test_evaluating_100_models_keeps_a_few_batches_resident_whatever_the_length(n):
    task = task_over(n)
    torch.manual_seed(0)
    model = MLP().eval()
    layout = Layout.select(model, ["norm.*"])
    base = layout.flatten(dict(model.named_parameters()))
    params = base + 0.1 * torch.randn(100, layout.size)
    val = task.splits()["val"]
    out = evaluate_params(task, model, layout, params, splits={"val": val}, progress=False)
    assert out["val"].predictions.shape == (100, n)
    # the same predictions as the model itself, one at a time
    layout.write(model, params[7])
    with torch.no_grad():
        direct = torch.cat([model(x).argmax(1) for x in val.x.batches(256)])
    assert torch.equal(out["val"].predictions[7], direct)
    # one batch (the evaluation batch: 4,096) at most, however long the split
    assert val.samples.dataset.peak <= min(n, ClassificationTask.eval_batch_size)


def test_labels_out_of_range_are_one_line_before_any_work():
    task = task_over(200, bad_label=True)
    with pytest.raises(NndiffError, match=r"split 'test' has labels from 0 to 9, but the model has 4 outputs"):
        check_task_data(task, "the task from synthetic.py:make_task")


def test_a_dataset_without_integer_labels_is_one_line():
    class Words(Synthetic):
        def __getitem__(self, i):
            return torch.zeros(20), "cat"

    with pytest.raises(NndiffError, match="labels must be 3 integers"):
        DatasetSplit(Words(3), name="train")


@pytest.mark.parametrize("labels", [[0.0, 1.7, 2.0], [True, False, True]])
def test_float_or_boolean_labels_are_refused_not_truncated(labels):
    class Floats(Synthetic):
        def __getitem__(self, i):
            return torch.zeros(20), labels[i]

    with pytest.raises(NndiffError, match="labels must be 3 integers"):
        DatasetSplit(Floats(3), name="train")
    assert DatasetSplit(Floats(3), labels=torch.tensor([0.0, 1.0, 2.0]), name="train").y.tolist() == [0, 1, 2]


def test_a_dataset_task_trains_and_collects_a_zoo_streamed():
    from nndiff import CollectConfig, collect

    task = task_over(300)
    task.base_epochs = 15
    zoo = collect(task, CollectConfig(k=4, heldout=2, burn_in=3, lr=0.05), progress=False)
    assert zoo.params.shape == (4, 64) and zoo.heldout.shape == (2, 64)
    assert zoo.info["base"]["val_acc"] > 50  # four classes, learned from streamed items
    assert task.splits()["train"].samples.dataset.peak <= 300
