"""The bookkeeping every long stage shares, so collection and training read as the method.

A stage (collecting a zoo, training a generator) works in one directory:

    with Stage.open(out, fresh) as stage:          # rank 0 holds out/.nndiff.lock; --fresh drops old progress
        stage.claim(settings, "a collection")      # resume only what was started with these settings
        state = stage.load("run0")                 # rank 0 reads, every rank gets it (None: start afresh)
        ...
        stage.checkpoint("run0", step, total, make_state)   # every `every` steps and at the end
        ...                                        # write the result, then
        stage.finish()                             # the progress is removed

Progress lives in DIR/.progress/ as safetensors files (checkpoint.py); under torchrun every rank
calls the same methods, rank 0 alone reads and writes files, and the others get what it read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from nndiff.errors import NndiffError
from nndiff.io.checkpoint import PROGRESS, read_checkpoint, write_checkpoint
from nndiff.io.rowfile import RowFile
from nndiff.runtime.distributed import barrier, broadcast, is_main, main_lock, rank


class Stage:
    """Named progress checkpoints of one stage in DIR/.progress/, with the rules for resuming them."""

    def __init__(self, directory: str | Path | None):
        """`None`: a stage that keeps no progress (a library call without a directory)."""
        self.dir = None if directory is None else Path(directory) / PROGRESS

    @classmethod
    @contextlib.contextmanager
    def open(cls, directory: str | Path, fresh: bool = False) -> Iterator["Stage"]:
        """The stage in `directory`, under its lock (held by rank 0); `fresh` discards earlier progress."""
        with main_lock(directory):
            stage = cls(directory)
            if fresh and is_main():
                stage.finish()
            barrier()  # under torchrun: no rank reads progress before rank 0 has cleared it
            yield stage
        barrier()  # the result is on disk before any rank moves on

    @property
    def started(self) -> bool:
        """Whether progress of an unfinished run is here (a finished stage leaves none)."""
        return self.dir is not None and self.dir.exists()

    def claim(self, settings: dict[str, Any], what: str) -> None:
        """Resume only progress made with the same `settings` (which include the number of
        processes): refuse, naming what differs, otherwise; then record them."""
        saved = self.load("config")
        if saved is not None and saved != settings:
            keys = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            differ = ["the number of processes" if k == "processes" else k for k in keys]
            raise NndiffError(
                f"{self.dir} holds progress of {what} with other settings (differing: {', '.join(differ)}); "
                "rerun with the same settings to resume, or pass --fresh to start over"
            )
        self.save("config", settings)

    def load(self, name: str, mine: bool = False) -> dict[str, Any] | None:
        """A checkpoint as rank 0 reads it, on every rank (None: there is none). `mine`: work this
        rank does alone (a collection run, the base model), read by this rank only."""
        if self.dir is None:
            return None
        if mine:
            return read_checkpoint(self.dir / f"{name}.safetensors")
        return broadcast(read_checkpoint(self.dir / f"{name}.safetensors") if is_main() else None)

    def save(self, name: str, state: dict[str, Any], mine: bool = False) -> None:
        """Rank 0 writes (`mine`: this rank writes its own work's checkpoint)."""
        if self.dir is not None and (mine or is_main()):
            write_checkpoint(self.dir / f"{name}.safetensors", state)

    def checkpoint(
        self,
        name: str,
        step: int,
        total: int,
        make_state: Callable[[], dict],
        *,
        every: int,
        force: bool = False,
        mine: bool = False,
    ) -> None:
        """Save `make_state()` every `every` steps, at the last step and where a loop stops early
        (`force`). Every rank that calls this calls `make_state` (it may gather from all of them)."""
        if self.dir is None or (step % every and step != total and not force):
            return
        self.save(name, make_state(), mine)

    def rows(self, name: str, blocks: dict[str, int], dim: int) -> RowFile:
        """This rank's row file `name` in the progress directory (reopened with its rows when an
        earlier attempt left one), or rows in memory for a stage that keeps no progress."""
        return RowFile(None if self.dir is None else self._rows_path(name), blocks, dim)

    def move_rows(self, name: str, target: str | Path) -> None:
        """Rank 0's finished row file becomes `target` (renamed: the rows are not copied)."""
        if self.dir is not None and is_main():
            os.replace(self._rows_path(name), target)

    def _rows_path(self, name: str) -> Path:
        return self.dir / f"{name}.rank{rank()}.safetensors"

    def finish(self) -> None:
        """The stage wrote its result: its progress goes."""
        if self.dir is not None and is_main():
            shutil.rmtree(self.dir, ignore_errors=True)
