"""Checks of every number a user can type — options, config.yaml fields, a task's settings — run
before any work starts, so a NaN, a negative count or an overflowing seed is one clear line
instead of a traceback or, worse, a run that exits 0 with unusable output.

A dataclass declares each field's range or choices once with `setting(...)`; `check_fields` checks a
whole config (nested dataclasses included) against those declarations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from nndiff.errors import NndiffError

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
            return " or ".join(
                [
                    Range(self.low, self.high, self.integer, self.low_open, self.high_open).describe(),
                    *(repr(w) for w in self.words),
                ]
            )
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
        label = (
            name if not self.flag or self.flag == name else self.flag if "." not in name else f"{name} ({self.flag})"
        )
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


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] = (), **range_args) -> Any:
    """A config dataclass field, declared once: its default, its help, the short option users know
    (`flag`), its choices and its allowed range (`Range`'s arguments). The command line, config.yaml
    and these checks all read it from here (options.py).

        steps: int = setting(1000, "training steps", low=1, integer=True, flag="--steps")
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices)}
    if range_args:
        metadata["range"] = Range(**range_args, flag=flag)
    return dataclasses.field(default=default, metadata=metadata)


def auto_steps(help: str, flag: str) -> Any:
    """A training loop's `steps`: a number, or "auto" (the default: chosen by validation, budget.py)."""
    return setting("auto", help, low=1, integer=True, words=("auto",), flag=flag)


def check_fields(obj: Any, where: str = "") -> Any:
    """Check every field of a dataclass (recursively) that declares a Range; returns `obj`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, name)
        elif f.metadata.get("range"):
            f.metadata["range"].check(value, name)
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            raise NndiffError(f"unknown {name} {value!r}; choose one of {', '.join(f.metadata['choices'])}")
    return obj


def number(value: Any, name: str, **range_args) -> Any:
    """Check one value that lives outside a dataclass (e.g. `generate -n`)."""
    return Range(**range_args).check(value, name)


def seed(value: Any, name: str = "--seed") -> int:
    return number(value, name, low=0, high=SEED_MAX, integer=True)
