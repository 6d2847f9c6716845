"""Checks of every number a user can type — options, config.yaml fields, a task's settings — run
before any work starts, so a NaN, a negative count or an overflowing seed is one clear line
instead of a traceback or, worse, a run that exits 0 with unusable output.

A dataclass declares each numeric field's range once with `bounded(...)`; `check_fields` checks a
whole config (nested dataclasses included) against those declarations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import NndiffError

SEED_MAX = 2**32 - 1  # every seed must fit the generators it is derived into (seed * 100_003 + ..., seed + i)


@dataclass(frozen=True)
class Range:
    """low <= value <= high (strict where `*_open`); integers where `integer`; None allowed where `optional`."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    words: tuple[str, ...] = ()  # strings accepted as they are (e.g. "auto")
    flag: str | None = None  # the command-line option that sets it, named in the message

    def describe(self) -> str:
        if self.words:
            return " or ".join([Range(self.low, self.high, self.integer, self.low_open, self.high_open).describe(),
                                *(repr(w) for w in self.words)])
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            return f"{kind} in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        if self.low is not None:
            if self.low == 0 and self.low_open:
                return f"a positive {kind.split(' ', 1)[1]}"
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return kind

    def check(self, value: Any, name: str) -> Any:
        if value is None and self.optional or isinstance(value, str) and value in self.words:
            return value
        # a top-level field is what its option sets (--lr); a nested one is named as in config.yaml, with its option
        label = name if not self.flag or self.flag == name else self.flag if "." not in name else f"{name} ({self.flag})"
        bad = NndiffError(f"{label} must be {self.describe()} (got {value!r})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.integer and not isinstance(value, int):
            raise bad
        if not math.isfinite(value):
            raise bad
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bounded(default: Any, **range_args) -> Any:
    """A dataclass field with its allowed range: `steps: int = bounded(1000, low=1, integer=True)`."""
    return dataclasses.field(default=default, metadata={"range": Range(**range_args)})


def check_fields(obj: Any, where: str = "") -> Any:
    """Check every field of a dataclass (recursively) that declares a Range; returns `obj`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, name)
        elif "range" in f.metadata:
            f.metadata["range"].check(value, name)
    return obj


def number(value: Any, name: str, **range_args) -> Any:
    """Check one value that lives outside a dataclass (e.g. `generate -n`)."""
    return Range(**range_args).check(value, name)


def seed(value: Any, name: str = "--seed") -> int:
    return number(value, name, low=0, high=SEED_MAX, integer=True)


def from_yaml(value: Any, default: Any, name: str) -> Any:
    """A YAML value for a field whose default is `default`, in any numeric notation.

    YAML 1.1 (PyYAML) reads `1e-3` as a string and `1.0e-3` as a float; both are numbers here.
    A string that is no number, or a bool where a number belongs, is refused by name.
    """
    wrong = NndiffError(f"{name} = {value!r} has the wrong type; expected {type(default).__name__}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, str):
            try:
                value = int(value) if isinstance(default, int) and value.strip().lstrip("+-").isdigit() else float(value)
            except ValueError:
                raise wrong from None
        if not isinstance(value, (int, float)):
            raise wrong
        if isinstance(default, int):
            if isinstance(value, float):
                if not math.isfinite(value) or not value.is_integer():
                    raise NndiffError(f"{name} must be an integer (got {value!r})")
                value = int(value)
            return value
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong
        return value
    raise wrong
