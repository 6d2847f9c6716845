"""Splits over any `torch.utils.data.Dataset` whose items are (x, label): read through a DataLoader
batch by batch, never held in memory, so evaluating many models costs memory that does not grow
with the dataset. Training, collection and evaluation use them as they use the vision tasks'
streamed images (images.py): a task's `load_data` returns

    dataset_splits(train=MyDataset("train"), val=MyDataset("val"), test=MyDataset("test"))

The labels are read once when the split is made (one pass over the dataset, nothing else kept),
or taken from `labels` when the dataset knows them. The in-memory `Split(x, y)` stays the fast path
for data that fits.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from nndiff.errors import NndiffError
from nndiff.tasks.images import StreamedSplit


class _Items(Dataset):
    """Items (index, seed) as the streamed split asks for them; the seed is unused (no augmentation)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        x, y = self.dataset[item[0]]
        return torch.as_tensor(x), int(y)


class DatasetSplit(StreamedSplit):
    def __init__(self, dataset: Dataset, labels: torch.Tensor | None = None, workers: int = 0, name: str = "split"):
        try:
            count = len(dataset)
        except TypeError:
            raise NndiffError(f"the {name} dataset must have a length (a map-style Dataset)") from None
        self.indices = torch.arange(count)
        self.samples = _Items(dataset)
        if labels is None:
            labels = [dataset[i][1] for i in range(count)]
        wrong = NndiffError(f"the {name} dataset's labels must be {count} integers, one per item")
        try:
            given = torch.as_tensor(labels)
            if given.dtype == torch.bool or given.is_floating_point() and not bool((given == given.round()).all()):
                raise wrong  # 1.7 is no class: truncating it would train and judge on labels nobody gave
            self.y = given.long().reshape(count)
        except (TypeError, ValueError, RuntimeError):
            raise wrong from None
        self.workers, self.device = workers, torch.device("cpu")


def dataset_splits(train: Dataset, val: Dataset, test: Dataset, workers: int = 0) -> dict[str, DatasetSplit]:
    """train/val/test splits over Datasets of (x, label) items (`workers`: DataLoader worker processes)."""
    return {name: DatasetSplit(d, workers=workers, name=name) for name, d in (("train", train), ("val", val),
                                                                                ("test", test))}


def evaluation_task(name: str, make_model, val: Dataset, test: Dataset, *, workers: int = 0):
    """The smallest task: your model and validation and test Datasets, all nndiff needs to evaluate a
    zoo recorded without a task (`--task file.py:make_task` on evaluate, report and doctor). It has
    no train split, so nndiff trains nothing with it."""
    from nndiff.tasks.base import ClassificationTask

    def load():
        return {"val": DatasetSplit(val, workers=workers, name="val"),
                "test": DatasetSplit(test, workers=workers, name="test")}

    return ClassificationTask(name=name, description=f"{name}: evaluation only (validation and test data)",
                              make_model=make_model, load_data=load, default_select=["*"])
