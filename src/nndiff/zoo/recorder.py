"""Recording a zoo from your own training loop: two lines in the loop you already have.

    recorder = nndiff.Recorder("runs/mine/zoo", model, ["bn*"], k=200)   # task="my_task.py:make_task": evaluate now
    for step, (x, y) in enumerate(loader):
        ...                                  # your forward, backward, optimizer.step()
        recorder.record(model, step)         # after the steps you want kept

Each snapshot of the selected parameters is written to disk as it is taken (a RowFile in
ZOO/.recording/, with the recording's state beside it), so the zoo is never held in memory and a
loop killed at any point resumes: reopen the recorder on the same directory and replay from your own
checkpoint; steps already recorded are skipped. A held-out run is a second recording into the same
directory with `heldout=True` (the recorder is opened with `heldout=H` rows for it). Once every row
is filled, the snapshots are evaluated with the task (its validation and test splits), if one was
given, and the zoo is written in the format `nndiff train` reads. Without a task, `nndiff train`
needs only the zoo, and evaluate/report/doctor take the evaluation as `--task file.py:make_task`.

Only the selection may change between snapshots: everything else in the model (other parameters,
BatchNorm statistics) is the zoo's base and must stay as it was at the first snapshot (freeze it,
and keep normalization layers in eval mode), or the snapshots would not be models of one base.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.io.files import DirectoryLock, load_json, save_json
from nndiff.io.rowfile import RowFile
from nndiff.io.tensors import load_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.runtime.distributed import is_main

WORK = ".recording"


class Recorder:
    def __init__(self, out: str | Path, model: nn.Module, select: list[str], k: int, *, task: str | None = None,
                 heldout: int = 0):
        """Open (or reopen, to resume) the recording of `k` snapshots (and `heldout` held-out ones) of
        the parameters of `model` that `select` (glob patterns, as --select) matches. `task` (a
        built-in task or your file.py:make_task) evaluates the snapshots once all are taken; without
        one the zoo holds no accuracies, and the commands that evaluate take your task as --task."""
        if isinstance(select, str):
            select = [select]
        for name, value in (("k", k), ("heldout", heldout)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "k" else 0):
                raise NndiffError(f"Recorder: {name} must be a whole number{' above 0' if name == 'k' else ''} "
                                  f"(got {value!r})")
        self.out, self.work = Path(out), Path(out) / WORK
        self.active = is_main()  # under torchrun every rank may open it; rank 0 alone touches files
        try:
            self.layout = Layout.select(model, select)
        except NndiffError as e:
            raise NndiffError(f"Recorder: {str(e).replace('--select ', 'select ')}") from None
        self.task, self.k, self.heldout = task, k, heldout
        # what a reopened recording must match (the task may change: one that failed at the end can be fixed)
        self.identity = {"layout": self.layout.to_json(), "select": list(select), "k": k, "heldout": heldout}
        self.records: dict[str, list] = {"params": [], "heldout": []}
        self.lock = None
        if not self.active:
            return
        if (self.out / "manifest.json").is_file():
            raise NndiffError(f"{self.out} holds a complete zoo already; record into another directory")
        self.lock = DirectoryLock(self.out)  # held for the whole recording: a second process is refused
        self.lock.__enter__()
        try:
            self._open(model)
        except BaseException:
            self._release()
            raise
        if self.recorded == self.k + self.heldout:  # a finish interrupted earlier: complete it now
            self._finish()

    def _open(self, model: nn.Module) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        state = load_json(self.work / "state.json") if (self.work / "state.json").is_file() else None
        moved = self.out / "params.safetensors"
        if state is not None and moved.is_file() and not (self.work / "rows.safetensors").exists():
            os.replace(moved, self.work / "rows.safetensors")  # a finish interrupted before the manifest
        saved = state.get("identity") if isinstance(state, dict) and isinstance(state.get("identity"), dict) else {}
        saved = {key: value for key, value in saved.items() if key != "task"}  # recordings that recorded it
        if state is not None and saved != self.identity:
            differs = sorted(key for key in self.identity if saved.get(key) != self.identity[key])
            raise NndiffError(
                f"{self.out} holds a recording of another model or selection ({', '.join(differs)} differ); "
                "record into another directory"
            )
        self.rows = RowFile(self.work / "rows.safetensors", {"params": self.k, "heldout": self.heldout},
                            self.layout.size)
        kept = state is not None and self.rows.kept and state.get("rows") == self.rows.id
        self.records = state["records"] if kept else {"params": [], "heldout": []}
        self.base = self._base_state() if kept else None
        if self.base is not None:
            self._check_base(model)

    @property
    def recorded(self) -> int:
        """Snapshots recorded so far (held-out ones included)."""
        return len(self.records["params"]) + len(self.records["heldout"])

    def record(self, model: nn.Module, step: int, heldout: bool = False, val_score: float | None = None) -> bool:
        """Take a snapshot of the selection after training step `step` (steps only grow: a step already
        recorded is skipped, so a resumed loop may replay). `val_score`: your own validation score,
        kept with the snapshot. Returns whether a snapshot was written (False once all of its kind are
        taken); the last one finishes the zoo."""
        if not self.active:  # under torchrun every rank holds the same model: rank 0 writes
            return False
        if heldout and not self.heldout:
            raise NndiffError("record: heldout=True needs a recorder opened with heldout=H rows for the held-out run")
        if self.lock is None:
            raise NndiffError(f"record: the recording of {self.out} is finished; open a new Recorder to record again")
        block = "heldout" if heldout else "params"
        records, size = self.records[block], self.heldout if heldout else self.k
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise NndiffError(f"record: step must be a whole number (got {step!r})")
        if (records and step <= records[-1]["step"]) or len(records) == size:
            return False  # recorded before (a resumed loop replaying), or all of this kind are taken
        if val_score is not None and (isinstance(val_score, bool) or not isinstance(val_score, (int, float))
                                      or not math.isfinite(val_score)):
            raise NndiffError(f"record: val_score must be a finite number or None (got {val_score!r})")
        self.layout.check_model(model)
        if self.base is None:
            self.base = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            save_tensors(self.work / "base.safetensors", self.base)
        else:
            self._check_base(model)
        vector = self.layout.flatten(dict(model.named_parameters())).cpu()
        if not torch.isfinite(vector).all():
            raise NndiffError(f"record: the selection holds NaN or Inf at step {step}; nothing was written")
        offset = 0 if not heldout else self.k
        self.rows.write(offset + len(records), vector[None])
        self.rows.sync()
        records.append({"step": step, **({"val_score": float(val_score)} if val_score is not None else {})})
        save_json(self.work / "state.json", {"identity": self.identity, "rows": self.rows.id, "records": self.records})
        if self.recorded == self.k + self.heldout:
            self._finish()
        return True

    def _base_state(self) -> dict[str, torch.Tensor] | None:
        path = self.work / "base.safetensors"
        return load_tensors(path) if path.is_file() else None

    def _check_base(self, model: nn.Module) -> None:
        """Everything outside the selection is as it was at the first snapshot."""
        chosen = set(self.layout.names)
        state = model.state_dict()
        if set(state) != set(self.base):
            raise NndiffError("record: the model's parameters and buffers are not those of the first snapshot's model")
        for name, value in state.items():
            if name not in chosen and not torch.equal(value.detach().cpu(), self.base[name]):
                raise NndiffError(
                    f"record: {name} changed since the first snapshot, but only the selection may change: freeze "
                    "what is not selected (requires_grad=False; normalization layers in eval mode) or select it too"
                )

    def _finish(self) -> None:
        """Every row is taken: evaluate the snapshots with the task (if there is one) and write the zoo."""
        from nndiff.tasks import get_task, resolve_task_spec
        from nndiff.zoo.format import FILES, Zoo

        everything = self.rows.matrix()
        records = [dict(r, run=0 if block == "params" else 1) for block in ("params", "heldout")
                   for r in self.records[block]]
        info = {"select": self.identity["select"], "recorded": {"k": self.k, "heldout": self.heldout}}
        zoo = Zoo(resolve_task_spec(self.task) if self.task else None, self.layout, everything[: self.k], self.base,
                  records[: self.k], info, everything[self.k :], records[self.k :])
        if self.task:  # rank 0 alone finishes: with_accuracies evaluates without collectives
            zoo = zoo.with_accuracies(get_task(self.task))
        self.rows.close()
        os.replace(self.work / "rows.safetensors", self.out / FILES["params"])
        zoo.save(self.out, params_in_place=True)  # the manifest last: its presence means complete
        shutil.rmtree(self.work)
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None
