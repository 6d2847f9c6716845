"""`--print_config`: a command's settings as YAML, to keep or share as a `--config` file.

A task or family that is code (`file.py:function`) is left out of it, with a warning: a config file
that names code is refused when read (nndiff runs code only when it is named on the command line),
so the printed file stays one that anyone can use, and the code is named beside it.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import yaml

CODE_OPTIONS = ("task", "family")


def _is_flag(word: str) -> bool:
    return word == "--print_config" or word.startswith("--print_config=")


def asked(words: list[str]) -> bool:
    return any(map(_is_flag, words))


def without_it(words: list[str]) -> list[str]:
    return [w for w in words if not _is_flag(w)]


def printed_config(words: list[str]) -> str:
    """The YAML jsonargparse prints for `words`, less any option naming code."""
    from nndiff.cli.parser import build_parser
    from nndiff.tasks import USER_SPEC

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):  # it prints, then exits
        build_parser().parse_args(words)
    settings = yaml.safe_load(out.getvalue())
    left_out = []
    for option in CODE_OPTIONS:
        value = settings.get(option)
        if isinstance(value, str) and USER_SPEC.match(value):
            settings[option] = None
            left_out.append(f"--{option} {value}")
    if left_out:
        warnings.warn(
            f"the printed settings leave out {' and '.join(left_out)}: a --config file that names code is refused, "
            "so name it on the command line beside --config"
        )
    return yaml.safe_dump(settings, sort_keys=False)
