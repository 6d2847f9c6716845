"""A PyTorch Lightning Trainer recording a zoo through nndiff's callback (pip install 'nndiff[lightning]').

    python examples/lightning_loop.py runs/pl
    nndiff train --zoo runs/pl/zoo --out runs/pl/run
    nndiff generate --run runs/pl/run && nndiff evaluate --run runs/pl/run && nndiff report --run runs/pl/run

The LightningModule holds the built-in digits-cnn network as `self.net`, so the zoo's task is the
built-in `digits-cnn` (no task file to name). A first fit trains the whole network; a second fits
only its last BatchNorm layer (the rest frozen, BatchNorm in eval mode) with the `RecordZoo`
callback taking a snapshot after every step (the validation every 10 steps scores the snapshot of
that step); a third, from the same start with another seed, records the held-out trajectory.
"""

import sys
from pathlib import Path

import lightning
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nndiff.tasks import get_task
from nndiff.tasks.digits import DigitsCNN
from nndiff.zoo.lightning import RecordZoo


class Digits(lightning.LightningModule):
    def __init__(self, lr: float, only: str | None = None):
        super().__init__()
        self.net, self.lr, self.only = DigitsCNN(), lr, only

    def on_train_epoch_start(self) -> None:
        if self.only:  # only one layer trains: the rest frozen, normalization statistics too
            self.net.eval()
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith(self.only))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean() * 100)

    def configure_optimizers(self):
        if self.only:
            return torch.optim.SGD(getattr(self.net, self.only).parameters(), lr=self.lr, momentum=0.9)
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def trainer(**kw) -> lightning.Trainer:
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False,
             "enable_checkpointing": False, "accelerator": "cpu", "devices": 1}
    return lightning.Trainer(**quiet, **kw)


def main(out: Path, k: int = 60, heldout: int = 20) -> None:
    splits = get_task("digits-cnn").splits()
    train = DataLoader(TensorDataset(splits["train"].x, splits["train"].y), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(splits["val"].x, splits["val"].y), batch_size=300)
    lightning.seed_everything(0, verbose=False)
    base = Digits(lr=3e-3)
    trainer(max_epochs=8).fit(base, train)
    for run, (steps, held) in enumerate(((k, False), (heldout, True))):
        lightning.seed_everything(1 + run, verbose=False)
        module = Digits(lr=0.5, only="bn2")
        module.net.load_state_dict(base.net.state_dict())
        record = RecordZoo(out / "zoo", ["bn2.*"], k=k, task="digits-cnn", module="net", monitor="val_acc",
                           heldout=heldout, held_out_run=held)
        trainer(max_steps=steps, callbacks=[record], val_check_interval=10, check_val_every_n_epoch=None).fit(
            module, train, val)
    print(f"recorded {out / 'zoo'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pl"))
