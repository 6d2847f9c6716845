"""Progress checkpoints, so long stages resume where they stopped instead of starting over.

A checkpoint is one safetensors file: tensors (model, optimizer and RNG states, snapshots so far)
plus JSON metadata for everything else (step counters, optimizer hyperparameters). Nested state
such as an optimizer's state_dict is flattened to dotted keys; no pickle is involved anywhere.
Checkpoints live in DIR/.progress/ (stage.py keeps them) and are removed once the stage has written its results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nndiff.errors import NndiffError
from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

PROGRESS = ".progress"


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested dicts/lists into {dotted.key: tensor} and a JSON skeleton with tensor markers."""
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return tensors, {"__tensor__": prefix}
    if isinstance(obj, dict):
        skeleton = {}
        for k, v in obj.items():
            t, s = flatten_state(v, f"{prefix}.{k}" if prefix else str(k))
            tensors.update(t)
            skeleton[str(k)] = s
        return tensors, {"__dict__": skeleton, "__int_keys__": all(isinstance(k, int) for k in obj) and bool(obj)}
    if isinstance(obj, (list, tuple)):
        items = []
        for i, v in enumerate(obj):
            t, s = flatten_state(v, f"{prefix}.{i}" if prefix else str(i))
            tensors.update(t)
            items.append(s)
        return tensors, {"__list__": items}
    return tensors, obj


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            int_keys = skeleton.get("__int_keys__", False)
            return {(int(k) if int_keys else k): unflatten_state(v, tensors) for k, v in skeleton["__dict__"].items()}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
    return skeleton


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tensors, skeleton = flatten_state(state)
    # safetensors refuses tensors that share memory; checkpoints are small enough to copy
    tensors = {k: v.detach().clone() for k, v in tensors.items()}
    save_tensors(path, tensors, {"state": skeleton})


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state saved in `path` (None: no such checkpoint)."""
    if not path.is_file():
        return None
    try:
        return unflatten_state(load_metadata(path)["state"], load_tensors(path))
    except (KeyError, TypeError, ValueError) as e:
        raise NndiffError(
            f"{path}: unreadable progress checkpoint ({e!r}); delete {path.parent} to start over"
        ) from None
    except NndiffError as e:
        raise NndiffError(f"{e}; delete {path.parent} to start the stage over") from None


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Everything random the training loops draw from: their generator, torch's global RNG and, on a
    GPU machine, every CUDA device's (dropout and initialization on the GPU draw from those)."""
    state = {"generator": generator.get_state(), "global": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["global"])
    if "cuda" in state and torch.cuda.device_count() == len(state["cuda"]):  # elsewhere: nothing to restore
        torch.cuda.set_rng_state_all(state["cuda"])
