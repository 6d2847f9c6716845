"""Your own training loop over your own files, recorded as a zoo with two lines.

    python examples/own_loop.py runs/own          # writes the images as files, trains, records runs/own/zoo
    nndiff train --zoo runs/own/zoo --out runs/own/run
    nndiff generate --run runs/own/run
    nndiff evaluate --run runs/own/run --task examples/own_loop.py:make_task
    nndiff report --run runs/own/run --task examples/own_loop.py:make_task

The data is scikit-learn's 8x8 digits written as one .npy file per image (label in the file name),
read by a plain `Dataset` through a `DataLoader`. The loop trains a small CNN, then freezes all but
its last BatchNorm layer and keeps training that: the recorder takes a snapshot after every step
(`recorder.record(model, step)`), then a second, held-out trajectory from the same start. Killed at
any point, the same command resumes: the recorder skips the steps it has and the loop, replaying
from its seed, reaches the same snapshots. The recording names no task, so training the generator
needs the zoo alone; `make_task` (the model and the validation and test files, nothing to train)
is what evaluate and report are told to judge the models with.
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import nndiff
from nndiff.tasks.datasets_any import evaluation_task

DATA = Path(os.environ.get("OWN_LOOP_DATA", Path.home() / ".cache" / "nndiff" / "own-loop-digits"))


def write_files(root: Path = DATA) -> None:
    """The digits as files: ROOT/{train,val,test}/00017_3.npy (index, label)."""
    if (root / "test").is_dir():
        return
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    for split, part in (("train", order[:1000]), ("val", order[1000:1300]), ("test", order[1300:])):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in part:
            np.save(root / split / f"{i:05d}_{d.target[i]}.npy", (d.images[i] / 16.0).astype(np.float32))


class DigitFiles(Dataset):
    def __init__(self, split: str, root: Path = DATA):
        self.files = sorted((root / split).glob("*.npy"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        x = torch.from_numpy(np.load(path, allow_pickle=False)).unsqueeze(0)
        return x, int(path.stem.split("_")[1])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)
        self.head = nn.Linear(32 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.bn2(self.conv2(x))).flatten(1))


def make_task():
    """What nndiff needs to evaluate: the model and the validation and test files."""
    write_files()
    return evaluation_task("own-loop-digits", Net, DigitFiles("val"), DigitFiles("test"))


def trajectory(model: Net, recorder, seed: int, steps: int, heldout: bool) -> None:
    """Train only bn2 (the rest frozen, BatchNorm in eval mode) and record a snapshot after each step."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.bn2.parameters():
        p.requires_grad_(True)
    model.eval()
    opt = torch.optim.SGD(model.bn2.parameters(), lr=0.5, momentum=0.9)
    loader = DataLoader(DigitFiles("train"), batch_size=64, shuffle=True)
    step = 0
    while step < steps:
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
            recorder.record(model, step, heldout=heldout)  # nndiff: one line in the loop
            if step == steps:
                break


def main(out: Path, k: int = 60, heldout: int = 20) -> None:
    write_files()
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):  # the base model: every weight, BatchNorm in training mode
        for x, y in DataLoader(DigitFiles("train"), batch_size=64, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    recorder = nndiff.Recorder(out / "zoo", model, ["bn2.*"], k=k, heldout=heldout)  # nndiff
    trajectory(model, recorder, seed=1, steps=k, heldout=False)
    model.load_state_dict(start)  # the held-out trajectory starts where the first did
    trajectory(model, recorder, seed=2, steps=heldout, heldout=True)
    print(f"recorded {out / 'zoo'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/own"))
