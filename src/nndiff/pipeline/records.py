"""The JSON files of a run, checked against what nndiff reads from them before anything uses them.

A schema is a type (or a tuple of types), a dict {key: schema} (each key optional unless it is in
REQUIRED, unknown keys ignored), a one-item list [schema] (a list of such), or Values(schema) (a
mapping from names to such). A file that does not match is refused with one line naming the file,
the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nndiff.errors import NndiffError
from nndiff.io.files import load_json

NUMBER = "number"  # int or float, not bool (null, the JSON of NaN, included)


@dataclass(frozen=True)
class Values:
    schema: Any


@dataclass(frozen=True)
class Required:
    schema: Any


_LOOP = {
    "steps": int,
    "max_steps": int,
    "budget": str,
    "kind": str,
    "components": int,
    "explained": NUMBER,
    "stopped_early": bool,
    "final_loss": NUMBER,
    "reconstruction_mse": NUMBER,
    "curve": [Values(NUMBER)],
}
TRAIN_STATS = {"autoencoder": _LOOP, "diffusion": _LOOP, "timings_s": Values(NUMBER), "stage": str}
TRAINED = {"zoo": Required(str), "task": Required((str, type(None))),  # None: a zoo recorded without a task
           "zoo_fingerprint": str, "stage": str, "settings": str}
GENERATED_INFO = {
    "count": int,
    "seed": int,
    "sampler": str,
    "steps": int,
    "target_acc": NUMBER,
    "guidance": NUMBER,
    "seconds": NUMBER,
    "fingerprint": str,
    "generator": str,
}
_SUMMARY = {"mean": NUMBER, "std": NUMBER, "min": NUMBER, "max": NUMBER, "median": NUMBER}
_GROUP = {"test_acc": Values(NUMBER), "val_acc": Values(NUMBER), "fingerprint": str}
METRICS = {
    "task": Required(str),
    "originals": Required(_GROUP),
    "generated": Required({**_GROUP, "fingerprint": Required(str)}),
    "weight_average": Required({"test_acc": NUMBER, "val_acc": NUMBER}),
    "timings_s": Values(NUMBER),
}


def read_record(path: Path, schema: dict, fix: str, required: bool = False) -> dict:
    """The JSON object in `path`, checked against `schema` ({} when the file is absent and not `required`)."""
    if not path.is_file() and not required:
        return {}
    data = load_json(path)
    problem = mismatch(data, schema, "")
    if problem is not None:
        raise NndiffError(f"{path}: {problem}; {fix}")
    return data


def mismatch(value: Any, schema: Any, where: str) -> str | None:
    """Where `value` departs from `schema`, in words (None: it matches)."""
    if isinstance(schema, Required):
        schema = schema.schema
    if schema == NUMBER:
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        return None if ok else f"{where or 'the file'} must be a number, got {_short(value)}"
    if isinstance(schema, (type, tuple)):
        ok = isinstance(value, schema) and not (isinstance(value, bool) and schema is int)
        return None if ok else f"{where or 'the file'} must be {_name(schema)}, got {_short(value)}"
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where or 'the file'} must be a list, got {_short(value)}"
        return next((m for i, v in enumerate(value) if (m := mismatch(v, schema[0], f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{where or 'the file'} must be a JSON object, got {_short(value)}"
    if isinstance(schema, Values):
        return next((m for k, v in value.items() if (m := mismatch(v, schema.schema, _key(where, k)))), None)
    for key, sub in schema.items():
        if key not in value:
            if isinstance(sub, Required):
                return f"{_key(where, key)} is missing"
            continue
        problem = mismatch(value[key], sub, _key(where, key))
        if problem is not None:
            return problem
    return None


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _name(schema) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number", dict: "a JSON object"}
    return names.get(schema, getattr(schema, "__name__", str(schema)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
