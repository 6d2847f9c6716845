"""Safe, atomic reading and writing of the files nndiff produces.

Everything is safetensors, JSON or YAML: nothing here unpickles. Every write goes to a temporary
file in the target directory, is fsync'ed, then renamed over the target, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import NndiffError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Write tensors as safetensors; `metadata` values are stored JSON-encoded."""
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_bytes_atomic(path, save(tensors, metadata=meta))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NndiffError(f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupt — regenerate it") from None


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
        raise NndiffError(f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupt — regenerate it") from None


def _finite(obj: Any) -> Any:
    """NaN and Inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def save_json(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n").encode())


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise NndiffError(f"{path}: not valid JSON ({e})") from None


def save_yaml(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, yaml.safe_dump(obj, sort_keys=False).encode())


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise NndiffError(f"{path}: not valid YAML ({e})") from None
