"""Codecs and generators by name. Each is saved with its class tag and its constructor's arguments
and rebuilt from them, so a file says what it holds and nothing is guessed from which keys it has.

A codec maps normalized parameter rows [B, D] to latents [B, *latent_shape] and back. It is an
`nn.Module` (its weights are its state_dict) with

    latent_shape                    the shape of one row's latent
    encode(x, noise=0.0) -> z       `noise`: the input-noise augmentation, for codecs that train
    decode(z) -> x
    reconstruct(x) -> x             decode(encode(x)) without noise, a block of rows at a time
    arguments() -> dict             JSON values, "dim" (D) among them; `cls.from_arguments(arguments)`
                                    builds it (its weights are then loaded: `load_codec`)

A generator samples parameter rows and has

    sample(...) -> [rows, D]
    arguments() -> dict             JSON values: what `from_saved` needs besides the tensors
    tensors() -> {name: tensor}
    from_saved(arguments, tensors)  (classmethod) the generator again

and `save_generator` / `load_generator` keep one in a single safetensors file. A user adds either
kind by decorating a class with `register_codec(name)` or `register_generator(name)`; loading a file
looks the name up among the classes registered in this process and so runs no code the file names.
Modules are rebuilt on the meta device and take the file's tensors only when every name, shape and
dtype fits (`restore_module`), so a file that records a huge module allocates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

CODEC_CLASSES: dict[str, type] = {}
GENERATOR_CLASSES: dict[str, type] = {}


def register_codec(name: str) -> Callable[[type], type]:
    """Class decorator: the codec class known by `name` in saved files."""
    return _register(CODEC_CLASSES, name, "codec")


def register_generator(name: str) -> Callable[[type], type]:
    """Class decorator: the generator class known by `name` in saved files."""
    return _register(GENERATOR_CLASSES, name, "generator")


def _register(table: dict[str, type], name: str, what: str) -> Callable[[type], type]:
    if not isinstance(name, str) or not name:
        raise NndiffError(f"a {what} is registered under a non-empty name, not {name!r}")

    def add(cls: type) -> type:
        if name in table and table[name].__qualname__ != cls.__qualname__:
            raise NndiffError(f"the {what} name {name!r} is taken by {table[name].__qualname__}")
        cls.tag = name
        table[name] = cls
        return cls

    return add


def codec_record(codec) -> dict[str, Any]:
    """What a saved file records of a codec: its class tag and constructor arguments."""
    return {"class": _registered_tag(CODEC_CLASSES, codec, "codec"), "args": codec.arguments()}


def _registered_tag(table: dict[str, type], obj, what: str) -> str:
    """The tag `obj`'s own class is registered under (a subclass does not inherit its parent's: it
    would be loaded as the parent)."""
    tag = getattr(type(obj), "tag", None)
    if table.get(tag) is not type(obj):
        raise NndiffError(f"{type(obj).__qualname__} is no registered {what}; decorate it with "
                          f"register_{what}(name) so that a saved file can name it")
    return tag


def load_codec(record: Any, state: Mapping[str, torch.Tensor], where: str, dim: int):
    """The codec of `dim` values that `record` describes, holding the weights `state`."""
    cls = _lookup(CODEC_CLASSES, record, where, "codec")
    if record["args"].get("dim") != dim:
        saved = record["args"].get("dim")
        raise NndiffError(f"{where} holds a codec of {saved!r} values where {dim} are generated; retrain it")
    return _construct(lambda args: restore_module(lambda: cls.from_arguments(args), state), record["args"], where,
                      "codec")


def under(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, named without it (one part of a saved generator)."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def restore_module(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The module `build()` makes, holding `state`'s tensors (as they are: a mapped file stays mapped).
    ValueError unless `state` has exactly the module's names, shapes and dtypes."""
    with torch.device("meta"):
        module = build()
    want = module.state_dict()
    for name, t in want.items():
        got = state.get(name)
        if got is None or got.shape != t.shape or got.dtype != t.dtype:
            what = "missing" if got is None else f"{got.dtype} {list(got.shape)}"
            raise ValueError(f"tensor {name} is {what} where the module has {t.dtype} {list(t.shape)}")
    if set(state) - set(want):
        raise ValueError(f"tensors {sorted(set(state) - set(want))[:3]} belong to no part of the module")
    module.load_state_dict(state, assign=True)
    return module.eval()


def save_generator(path: str | Path, generator, metadata: dict[str, Any] | None = None) -> None:
    """`generator` as one safetensors file: its tensors, class tag and arguments (plus `metadata`)."""
    tag = _registered_tag(GENERATOR_CLASSES, generator, "generator")
    meta = {**(metadata or {}), "class": tag, "args": generator.arguments()}
    save_tensors(path, generator.tensors(), meta)


def load_generator(path: str | Path, allowed: tuple[str, ...] | None = None):
    """The generator saved in `path`; `allowed`: the class tags accepted (default: any registered)."""
    meta = load_metadata(path)
    record = {"class": meta.get("class"), "args": meta.get("args")}
    if allowed is not None and record["class"] not in allowed:
        raise NndiffError(f"{path} holds no generator of the kinds {', '.join(allowed)} (it says {record['class']!r})")
    cls = _lookup(GENERATOR_CLASSES, record, str(path), "generator")
    return _construct(lambda args: cls.from_saved(args, load_tensors(path)), record["args"], str(path), "generator")


def _lookup(table: dict[str, type], record: Any, where: str, what: str) -> type:
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise NndiffError(f"{where} does not record which {what} it holds and how it was built; retrain it")
    name = record.get("class")
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise NndiffError(f"{where} holds a {what} of kind {name!r}, which is not registered here (known: {known})")
    return table[name]


def _construct(build: Callable[[dict], Any], args: dict, where: str, what: str):
    try:
        return build(args)
    except (NndiffError, KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        detail = str(e).splitlines()[0].removesuffix("; retrain it") if str(e) else type(e).__name__
        raise NndiffError(
            f"{where}: its {what} cannot be rebuilt from what it records ({detail}); retrain it"
        ) from None
