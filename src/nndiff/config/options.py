"""Command-line options and YAML settings, both made from the config dataclasses by jsonargparse.

Every field of `CollectConfig` and `TrainConfig` (nested ones included) becomes an option named by
its key in config.yaml (`--autoencoder.max_steps`), plus the short flag users know where the field
declares one (`--ae-steps`); help, default, choices and range come from the field's `setting(...)`
(settings.py). A new setting is one new field: it appears in `--help`, in every run's config.yaml
and in what `--config` reads, with nothing else to edit.

Why jsonargparse: it is argparse underneath, so the subcommands and the flags users know (`-k`,
`--select a b`, `--amp`) stay as they are; it reads YAML into the same options (`--config FILE`,
later options win, `--print_config` writes one), with YAML 1.2 numbers (`1e-3` is a float); and it
is the configuration layer of Lightning's CLI, well kept and widely used. tyro and simple-parsing
derive option names from the fields' nesting and types, which would rename flags users know.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from typing import Any

from jsonargparse import ArgumentParser

from nndiff.config.settings import Range
from nndiff.errors import NndiffError


class _Wrong(argparse.ArgumentTypeError, ValueError):
    """A value refused: argparse shows its message as it is, jsonargparse's config files catch it."""


class Number:
    """A number in any notation YAML or a shell gives it ("1e-3", 1e-3, "nan": the range checks of
    settings.py then say what is allowed); integers where `integer` (200, "200", 1e3, but not 2.5 or
    True); None where `optional`; the `words` (e.g. "auto") as they are."""

    def __init__(self, integer: bool, words: tuple[str, ...] = (), optional: bool = False):
        self.integer, self.words, self.optional = integer, words, optional

    def __call__(self, text: Any) -> float | int | str | None:
        if self.optional and text in (None, "null", "None"):
            return None
        if text in self.words:
            return text
        wrong = _Wrong(f"expected {self!r}, got {text!r}")
        if isinstance(text, bool):
            raise wrong
        if self.integer and isinstance(text, int):
            return text
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise wrong from None
        if not self.integer:
            return value
        if not math.isfinite(value) or not value.is_integer():
            raise wrong
        return int(value)

    def __repr__(self) -> str:  # what --help shows as the option's type
        kind = "an integer" if self.integer else "a number"
        return " or ".join([kind, *(repr(w) for w in self.words), *(["null"] if self.optional else [])])


def _option_type(hint: Any, allowed: Range | None) -> dict[str, Any]:
    """argparse keywords for a field of type `hint`: numbers go through `Number`, strings, lists
    and paths are jsonargparse's to check from the hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is bool:
        return {"action": "store_true"}
    if typing.get_origin(hint) is list or any(typing.get_origin(a) is list for a in args):
        return {"nargs": "+", "type": str}
    if allowed is not None:
        return {"type": Number(allowed.integer, allowed.words, allowed.optional)}
    return {"type": hint}


def add_settings(parser: ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """One option per field of the dataclass `cls` (recursively), as the module docstring says."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key, default = prefix + f.name, getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            add_settings(parser, type(default), f"{key}.")
            continue
        names = [f"--{key}"]
        flag = f.metadata.get("flag")
        if flag and flag != names[0]:
            names.insert(0, flag)  # the short flag first: it is the one users know
        kwargs = {"dest": key, "default": default, "help": f.metadata.get("help")}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs.update(_option_type(hints[f.name], f.metadata.get("range")))
        parser.add_argument(*names, **kwargs)


def build(cls: type, values: dict[str, Any], where: str = ""):
    """The dataclass `cls` from the nested dict of its parsed options (fields absent keep their defaults)."""
    if not isinstance(values, dict):
        raise NndiffError(f"{where[:-1] or 'the settings'} must be a mapping of settings, got {values!r}")
    kwargs, defaults = {}, cls()
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, default = values[f.name], getattr(defaults, f.name)
        nested = dataclasses.is_dataclass(default)
        kwargs[f.name] = build(type(default), value or {}, f"{where}{f.name}.") if nested else value
    return cls(**kwargs)


def read_settings(cls: type, data: Any, where: str):
    """The dataclass `cls` from a mapping read from YAML (a run's config.yaml), checked by the same
    parser as the command line."""
    if not isinstance(data, dict):
        raise NndiffError(f"{where} must be a mapping of settings, got {type(data).__name__}")
    parser = ArgumentParser(exit_on_error=False)
    add_settings(parser, cls)
    try:
        namespace = parser.parse_object(data)
    except argparse.ArgumentError as e:
        raise NndiffError(f"{where}: {one_line_error(str(e))}") from None
    return build(cls, namespace.as_dict())


def one_line_error(message: str) -> str:
    """jsonargparse's message for a value it refused, as one line that names the option."""
    message = re.sub(r'Parser key "([^"]+)":\s*', lambda m: f"--{m.group(1)}: ", message)
    message = re.sub(r"Subcommand '[^']+' does not accept option '([^']+)'", r"unknown setting \1", message)
    message = re.sub(r"Option '([^']+)' is not accepted", r"unknown setting \1", message)
    message = re.sub(r"Unexpected config:.*", "expected a mapping of settings", message, flags=re.S)
    message = re.sub(
        r"--([\w.]+): '([^']*)' not among choices \(([^)]*)\)",
        lambda m: f"unknown {m.group(1)} {m.group(2)!r}; choose one of {m.group(3).replace(chr(39), '')}",
        message,
    )
    first = [line.strip() for line in message.splitlines() if line.strip()]
    text = " ".join(first)
    return re.sub(r"<class '(\w+)'>", r"\1", text)


def bound_yaml() -> None:
    """Make jsonargparse refuse YAML that expands beyond io.files.YAML_NODES values (a `--config`
    "billion laughs") before loading it; everything else it loads as before."""
    from jsonargparse import get_loader, set_loader

    from nndiff.io.files import check_yaml_size

    load = get_loader("yaml")
    if getattr(load, "bounded", False):
        return

    import yaml

    def bounded(text: str):
        try:
            check_yaml_size(text, "YAML")
        except NndiffError as e:  # as a YAML error: jsonargparse names the file and the CLI prints one line
            raise yaml.YAMLError(str(e)) from None
        return load(text)

    bounded.bounded = True
    set_loader("yaml", bounded, (yaml.YAMLError,))
