"""A stage's files replaced as a whole: written into a staging directory, then moved in after a
commit record, so a crash at any moment leaves a directory that is entirely old or, once
`recover_staged` has run, entirely new.

    with Staging(run_dir, "train") as staging:     # DIR/.train.staging/, emptied first
        save(staging.dir / "denoiser.safetensors")  # ... every file of the stage
        staging.commit()                           # the commit record, then each file moved in

A crash before the commit record exists leaves the old files untouched (the staging directory is
discarded); after it, `recover_staged` finishes the moves. Every command that reads the directory
calls it first, under the directory's lock.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nndiff.io.files import write_bytes_atomic

COMMIT = "COMMIT"  # inside the staging directory: the names of the files to move in, written when all are complete


class Staging:
    def __init__(self, directory: str | Path, stage: str):
        self.target = Path(directory)
        self.stage = stage
        self.dir = self.target / f".{stage}.staging"

    def __enter__(self) -> Staging:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None and not (self.dir / COMMIT).exists():
            shutil.rmtree(self.dir, ignore_errors=True)  # nothing was moved: the old files stand

    def commit(self) -> None:
        names = sorted(p.name for p in self.dir.iterdir())
        write_bytes_atomic(self.dir / COMMIT, json.dumps(names).encode())
        _sync(self.dir)
        _move_in(self.dir, self.target)


def recover_staged(directory: str | Path) -> list[str]:
    """Finish or discard what an interrupted stage left in `directory`; one sentence for each,
    saying which files the directory now holds."""
    said = []
    for staging in sorted(Path(directory).glob(".*.staging")):
        stage = staging.name[1 : -len(".staging")]
        if (staging / COMMIT).is_file():
            _move_in(staging, Path(directory))
            said.append(f"an interrupted `{stage}` had written all its files: they are now in place in {directory}")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            said.append(f"an interrupted `{stage}` left unfinished files; they were removed and {directory} "
                        f"holds what it held before that `{stage}`")
    return said


def _move_in(staging: Path, target: Path) -> None:
    """Move every file the commit record names into `target` (those already moved are skipped:
    this finishes an interrupted move as well), then remove the staging directory."""
    try:
        names = json.loads((staging / COMMIT).read_text())
    except (OSError, ValueError):
        names = None
    if not isinstance(names, list):  # a commit record that was never completed: nothing to move
        shutil.rmtree(staging, ignore_errors=True)
        return
    for name in names:
        if isinstance(name, str) and "/" not in name and name != COMMIT and (staging / name).exists():
            os.replace(staging / name, target / name)
    _sync(target)
    shutil.rmtree(staging, ignore_errors=True)


def _sync(directory: Path) -> None:
    """Make the renames inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
