"""Predictions already computed in this process, so that a parameter vector is evaluated once per split.

`nndiff run` evaluates the snapshots when it collects them and the generated models when it
evaluates them, and then the novelty report and the health checks ask for the same predictions
again: at 1M parameters each of those passes costs minutes of a CPU. A vector's predictions are kept
under the SHA-256 of its bytes together with everything else they depend on (the task, the model's
other weights and buffers, the device, the evaluation path, the split's inputs and labels), so a hit
returns what evaluating it again would return.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from collections import OrderedDict

import torch
from torch import nn

from nndiff.params.layout import Layout
from nndiff.params.rows import row_blocks

LIMIT = 2**26  # predictions kept (as int16: 128 MB); the least recently used go first


def _update(digest, t: torch.Tensor) -> None:
    digest.update(str((t.dtype, tuple(t.shape))).encode())
    digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())


def row_digests(params: torch.Tensor) -> list[bytes]:
    """One digest per row of [N, D] (read a block of rows at a time)."""
    out = []
    for block in row_blocks(len(params), params.shape[1]):
        for row in params[block].float().cpu():
            out.append(hashlib.sha256(row.contiguous().numpy()).digest())
    return out


def _task_settings(task) -> list:
    """The task's settings (a dataclass task's fields, another object's public attributes), so that
    two tasks of one name made with other settings do not share predictions."""
    names = [f.name for f in dataclasses.fields(task)] if dataclasses.is_dataclass(task) else list(vars(task))
    out = []
    for name in sorted(names):
        value = getattr(task, name, None)
        if name.startswith("_"):
            continue
        if isinstance(value, torch.Tensor):
            digest = hashlib.sha256()
            _update(digest, value)
            out.append((name, digest.hexdigest()))
        elif callable(value):
            out.append((name, getattr(value, "__module__", None), getattr(value, "__qualname__", repr(type(value)))))
        else:
            out.append((name, repr(value)))
    return out


def context_key(task, model: nn.Module, layout: Layout, device, *, batched: bool) -> bytes:
    """What a vector's predictions depend on besides the vector and the split."""
    head = (type(task).__qualname__, _task_settings(task), type(model).__qualname__, str(device))
    digest = hashlib.sha256(repr(head).encode())
    digest.update(repr((layout.to_json(), batched)).encode())
    generated = set(layout.names)
    for name, t in model.state_dict().items():
        if name not in generated:
            digest.update(name.encode())
            _update(digest, t)
    return digest.digest()


_SPLITS: dict[int, tuple] = {}  # id of an inputs tensor -> (its weak reference, the labels', versions, digest)


def split_key(split) -> bytes | None:
    """A split's inputs and labels (None: inputs that are not one tensor, e.g. a streamed image
    folder, which are not memoized). Hashed once per pair of tensors, again only if either changed
    in place (its version counter moved)."""
    if not isinstance(split.x, torch.Tensor):
        return None
    versions = (split.x._version, split.y._version)
    known = _SPLITS.get(id(split.x))
    if known is not None and known[0]() is split.x and known[1]() is split.y and known[2] == versions:
        return known[3]
    digest = hashlib.sha256()
    _update(digest, split.x)
    _update(digest, split.y)
    key = id(split.x)
    gone = weakref.ref(split.x, lambda _: _SPLITS.pop(key, None))  # forgotten with the tensor
    _SPLITS[key] = (gone, weakref.ref(split.y), versions, digest.digest())
    return digest.digest()


class PredictionMemo:
    def __init__(self, limit: int = LIMIT):
        self.limit = limit
        self.entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.size = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        self.entries.move_to_end(key)
        return hit.long()

    def put(self, key: tuple, predictions: torch.Tensor) -> None:
        if key in self.entries or len(predictions) > self.limit:
            return
        small = predictions.short() if predictions.numel() and int(predictions.abs().max()) < 2**15 else predictions
        self.entries[key] = small.cpu().clone()
        self.size += len(small)
        while self.size > self.limit:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped)

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


MEMO = PredictionMemo()
