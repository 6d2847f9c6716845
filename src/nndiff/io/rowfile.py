"""Rows written to disk as they are made, so a collection never holds its whole zoo in memory.

A RowFile is a safetensors file of float32 blocks of rows ({"params": [K, D], "heldout": [H, D]}
for a zoo), stored back to back so that together they are one [K + H, D] matrix. It is created at
its full size before the first row exists (sparse: the disk fills as rows arrive), each row is
written in place with pwrite — from the page cache, not from this process's memory — and a
collection that is resumed reopens the same file and keeps the rows it already wrote. Once
complete, the rows are read back memory-mapped and moved into place as the zoo's params file.
Each file carries a random id in its header: a checkpoint records the id of the file whose rows it
counts, and is resumed only with that same file (a file made again after a crash starts empty, and
an older checkpoint's rows are not in it).

Without a path (a library call that keeps no progress) the rows are an ordinary tensor.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import struct
from pathlib import Path

import torch

from nndiff.io.files import write_bytes_atomic
from nndiff.io.tensors import safetensors_header


class RowFile:
    def __init__(self, path: str | Path | None, blocks: dict[str, int], dim: int):
        """`blocks`: {name: number of rows}, in the order they are stored; every row has `dim` values."""
        self.path, self.blocks, self.dim = (None if path is None else Path(path)), dict(blocks), dim
        self.count = count = sum(self.blocks.values())
        self.kept = False  # whether an earlier attempt's file (and the rows it wrote) was reopened
        self.id: str | None = None  # the file's own id, which checkpoints of its rows record
        self._fd: int | None = None
        if self.path is None:
            self._memory = torch.empty(count, dim)
            return
        entries = {name: (torch.float32, [n, dim]) for name, n in self.blocks.items()}
        # an earlier attempt's file is kept when its header is the one these rows would have, id aside
        self.id = self._id_on_disk() or secrets.token_hex(8)  # ids have one length: so has the header
        header = safetensors_header(entries, self.path, {"rows_id": self.id})
        self._start, size = len(header), len(header) + 4 * count * dim
        if self.path.is_file() and self.path.stat().st_size == size:
            with open(self.path, "rb") as f:
                self.kept = f.read(len(header)) == header
        if not self.kept:  # created whole, then renamed into place: a half-created file is never reopened
            self.id = secrets.token_hex(8)  # a new file: no checkpoint counts its rows
            write_bytes_atomic(self.path, safetensors_header(entries, self.path, {"rows_id": self.id}))
            os.truncate(self.path, size)
        self._fd = os.open(self.path, os.O_RDWR)

    def _id_on_disk(self) -> str | None:
        """The id in an existing file's header (None: no file, or not a row file)."""
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                found = json.loads(f.read(min(n, 1 << 20)))["__metadata__"]["rows_id"]
            return json.loads(found) if isinstance(found, str) else None
        except (OSError, struct.error, ValueError, KeyError, TypeError):
            return None

    def write(self, index: int, rows: torch.Tensor) -> None:
        """Store `rows` ([n, dim]) as rows index .. index + n - 1 (counted over all blocks)."""
        rows = rows.detach().to("cpu", torch.float32).reshape(-1, self.dim)
        if self.path is None:
            self._memory[index : index + len(rows)] = rows
            return
        data = rows.contiguous().numpy()
        offset = self._start + 4 * index * self.dim
        written = 0
        while written < data.nbytes:  # pwrite may write less than asked
            written += os.pwrite(self._fd, memoryview(data).cast("B")[written:], offset + written)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows start .. stop - 1, as a copy."""
        if self.path is None:
            return self._memory[start:stop].clone()
        data = os.pread(self._fd, 4 * (stop - start) * self.dim, self._start + 4 * start * self.dim)
        return torch.frombuffer(bytearray(data), dtype=torch.float32).view(stop - start, self.dim)

    def sync(self) -> None:
        """The rows written so far are on disk (called before a checkpoint counts them)."""
        if self.path is not None:
            os.fsync(self._fd)

    def matrix(self) -> torch.Tensor:
        """All rows as one [count, dim] tensor: memory-mapped from the file (copy-on-write, so
        changing it never changes the file), or the tensor itself."""
        if self.path is None:
            return self._memory
        self.sync()
        values = self.count * self.dim
        if values == 0:
            return torch.empty(self.count, self.dim)
        mapped = mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)
        return torch.frombuffer(mapped, dtype=torch.float32, count=values, offset=self._start).view(
            self.count, self.dim
        )

    def close(self) -> None:
        if self.path is not None and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RowFile":
        return self

    def __exit__(self, *exc) -> None:  # closed however the collection ends
        self.close()
