"""A PyTorch Lightning callback that records a zoo while a `Trainer` fits (nndiff[lightning]).

    trainer = lightning.Trainer(callbacks=[RecordZoo("runs/pl/zoo", ["bn2.*"], k=200, task="digits-cnn",
                                                     module="net", burn_in=100, monitor="val_acc")])

After `burn_in` optimizer steps it takes a snapshot every `every` steps (nndiff.Recorder does the
writing, the resuming and the checks). With `monitor`, the snapshot's validation score is the metric
the LightningModule logs under that name in a validation of that very model (run right after its
step, before the next one); a snapshot no validation scored keeps none. `module` names the
LightningModule's attribute holding the network the task builds (None: the LightningModule itself).
Under DDP the global-zero rank writes. A held-out trajectory is a second fit with `held_out_run=True`
(the zoo opened with `heldout=H`).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from nndiff.errors import NndiffError
from nndiff.zoo.recorder import Recorder


class RecordZoo(Callback):
    def __init__(self, out: str | Path, select: list[str], k: int, task: str, *, module: str | None = None,
                 every: int = 1, burn_in: int = 0, monitor: str | None = None, heldout: int = 0,
                 held_out_run: bool = False):
        for name, value, low in (("every", every, 1), ("burn_in", burn_in, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NndiffError(f"RecordZoo: {name} must be a whole number of at least {low} (got {value!r})")
        self.out, self.select, self.k, self.task, self.module = out, select, k, task, module
        self.every, self.burn_in, self.monitor = every, burn_in, monitor
        self.heldout, self.held_out_run = heldout, held_out_run
        self.recorder: Recorder | None = None
        self.pending: int | None = None  # a due step waiting for the validation of that very model

    def _network(self, pl_module):
        return pl_module if self.module is None else getattr(pl_module, self.module)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.recorder = Recorder(
                self.out, self._network(pl_module), self.select, self.k, task=self.task, heldout=self.heldout
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # Lightning's signature
        step = trainer.global_step  # optimizer steps taken so far
        if self.recorder is None or step <= self.burn_in or (step - self.burn_in) % self.every:
            return
        if self.monitor is None:
            self._record(pl_module, step, None)
        else:  # the score is the validation run right after this step, if one runs before the next step
            self.pending = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.pending is not None and trainer.global_step == self.pending and not trainer.sanity_checking:
            score = trainer.callback_metrics.get(self.monitor)
            self._record(pl_module, self.pending, None if score is None else float(score))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._flush(pl_module)  # the model is still the pending step's: no validation scored it

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(pl_module)

    def _flush(self, pl_module) -> None:
        if self.pending is not None:
            self._record(pl_module, self.pending, None)

    def _record(self, pl_module, step: int, score: float | None) -> None:
        self.pending = None
        self.recorder.record(self._network(pl_module), step, heldout=self.held_out_run, val_score=score)
