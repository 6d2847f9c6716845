"""Safetensors files: streamed writes, checked headers, memory-mapped reads, and refusing pickled checkpoints.

Nothing here unpickles. The writer and the copy-on-write mapping are ours because the library offers
neither a streamed write nor a writable mapping.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nndiff.errors import NndiffError
from nndiff.io.files import write_atomic

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


BLOCK_BYTES = 2**25  # what save_tensors writes at a time


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None
) -> None:
    """Write tensors as safetensors; `metadata` values are stored JSON-encoded.

    The file is the format's header followed by each tensor's bytes, written a block at a time
    straight from the tensor: safetensors' own `save` first builds the whole file as one bytes
    object, which for a zoo is a second copy of it in memory."""
    # widest elements first, as safetensors orders them: every tensor then starts aligned to its element
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    tensors = {k: tensors[k].detach() for k in order}
    raw = safetensors_header({k: (t.dtype, list(t.shape)) for k, t in tensors.items()}, path, metadata)

    def write(f: BinaryIO) -> None:
        f.write(raw)
        for t in tensors.values():
            flat = t.reshape(-1)
            step = max(1, BLOCK_BYTES // max(t.element_size(), 1))
            for start in range(0, len(flat), step):
                f.write(flat[start : start + step].cpu().contiguous().view(torch.uint8).numpy())

    write_atomic(path, write)


def safetensors_header(
    entries: Mapping[str, tuple[torch.dtype, list[int]]], path, metadata: Mapping[str, Any] | None = None
) -> bytes:
    """The bytes before the data of a safetensors file holding `entries` ({name: (dtype, shape)})
    stored back to back in the order given; `metadata` values are stored JSON-encoded."""
    header: dict[str, Any] = {"__metadata__": {k: json.dumps(v) for k, v in metadata.items()}} if metadata else {}
    offset = 0
    for name, (dtype, shape) in entries.items():
        if dtype not in _NAMES:
            raise NndiffError(f"{path}: cannot store tensor {name!r} of dtype {dtype}")
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NndiffError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupt — regenerate it"
        ) from None


def map_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped instead of read: pages come from the file
    as they are touched (and the OS can drop them again), so a zoo larger than memory can be
    trained on. The mapping is copy-on-write: writing to a tensor never changes the file."""
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    bad = f"{path}: not a readable safetensors file"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, length = _read_header(f, size, bad)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
    out = {}
    for name, (dtype, shape, start, _) in _check_entries(header, size - 8 - length, bad).items():
        count = math.prod(shape)
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=8 + length + start).view(shape)
    return out


MAX_HEADER = 100_000_000  # bytes of a header, the safetensors library's own limit


def _read_header(f: BinaryIO, size: int, bad: str) -> tuple[dict, int]:
    """The JSON header and its length, refused as the safetensors library refuses it: too large,
    not JSON, a key named twice, or metadata that is not names to strings."""

    def unique(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("a tensor named twice")
        return dict(pairs)

    try:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER or 8 + length > size:
            raise ValueError("header length beyond the file")
        header = json.loads(f.read(length), object_pairs_hook=unique)
    except (struct.error, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise NndiffError(f"{bad} (bad header: {e}); it may be truncated or corrupt — regenerate it") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise NndiffError(f"{bad} (bad header: its metadata must map names to strings); regenerate it")
    return header, length


def _check_entries(header: dict, data_bytes: int, bad: str) -> dict[str, tuple[torch.dtype, list[int], int, int]]:
    """{name: (dtype, shape, start, end)}, checked: known dtype, shape of counts, a byte range that
    matches the shape, and ranges that tile the data exactly (no gap, no overlap, nothing after)."""
    entries = {}
    for name, item in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, offsets = _DTYPES[item["dtype"]], item["shape"], item["data_offsets"]
            if not all(type(n) is int and n >= 0 for n in [*shape, *offsets]) or len(offsets) != 2:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise NndiffError(f"{bad} (tensor {name!r}: {str(item)[:80]}); regenerate it") from None
        start, end = offsets
        if end - start != math.prod(shape) * torch.empty(0, dtype=dtype).element_size():
            raise NndiffError(f"{bad} (tensor {name!r}: its byte range does not match its shape); regenerate it")
        entries[name] = (dtype, shape, start, end)
    position = 0
    for name, (_, _, start, end) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if start != position:
            raise NndiffError(f"{bad} (tensor {name!r} overlaps another or leaves a gap); regenerate it")
        position = end
    if position != data_bytes:
        raise NndiffError(f"{bad} (its tensors do not fill the file exactly); it may be truncated — regenerate it")
    return entries


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file written by `save_tensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        return {k: json.loads(v) for k, v in meta.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NndiffError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupt — regenerate it"
        ) from None


FOREIGN_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors, or from a foreign PyTorch file without running its code.

    Pickle files can execute arbitrary code when loaded; `torch.load(weights_only=True)` only
    rebuilds tensors and plain containers and refuses anything else.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if path.suffix not in FOREIGN_SUFFIXES:
        raise NndiffError(
            f"{path}: unknown state_dict format; use .safetensors or a PyTorch file ({', '.join(FOREIGN_SUFFIXES)})"
        )
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusals come as several exception types
        # torch's own message advises loading with weights_only=False, i.e. running the file's code: not quoted.
        raise NndiffError(
            f"{path}: refused to load ({type(e).__name__}): it is not a plain tensor state_dict, or it is "
            "corrupt; nndiff never unpickles code — save the state_dict with safetensors instead"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise NndiffError(f"{path}: not a state_dict (a mapping from parameter names to tensors)")
    return state
