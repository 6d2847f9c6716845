"""A PyTorch Lightning callback that records a zoo while a `Trainer` fits (nndiff[lightning]).

    trainer = lightning.Trainer(callbacks=[RecordZoo("runs/pl/zoo", ["bn2.*"], k=200, task="digits-cnn",
                                                     module="net", burn_in=100, monitor="val_acc")])

After `burn_in` optimizer steps it takes a snapshot every `every` steps (nndiff.Recorder does the
writing, the resuming and the checks), with the metric the LightningModule logs under `monitor` as
the snapshot's validation score. `module` names the LightningModule's attribute holding the network
the task builds (None: the LightningModule itself). Under DDP the global-zero rank writes. A
held-out trajectory is a second fit with `held_out_run=True` (the zoo opened with `heldout=H`).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from nndiff.zoo.recorder import Recorder


class RecordZoo(Callback):
    def __init__(self, out: str | Path, select: list[str], k: int, task: str, module: str | None = None,
                 every: int = 1, burn_in: int = 0, monitor: str | None = None, heldout: int = 0,
                 held_out_run: bool = False):
        self.out, self.select, self.k, self.task, self.module = out, select, k, task, module
        self.every, self.burn_in, self.monitor = every, burn_in, monitor
        self.heldout, self.held_out_run = heldout, held_out_run
        self.recorder: Recorder | None = None

    def _network(self, pl_module):
        return pl_module if self.module is None else getattr(pl_module, self.module)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.recorder = Recorder(self.out, self._network(pl_module), self.select, self.k, self.task, self.heldout)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimizer steps taken so far
        if self.recorder is None or step <= self.burn_in or (step - self.burn_in) % self.every:
            return
        score = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        self.recorder.record(self._network(pl_module), step, heldout=self.held_out_run,
                             val_score=None if score is None else float(score))
