"""Families by name: a built-in one, or a user's `path/to/file.py:make_family` (or
`package.module:make_family`), a function returning a `Family`.

A run records its family. As with tasks, a recorded reference never runs code by itself: a user's
family runs only when the user names it in this process (`--family`) or sets NNDIFF_TRUST_TASK_CODE=1.
"""

from __future__ import annotations

import os

from nndiff.errors import NndiffError
from nndiff.families.builtin import FAMILIES
from nndiff.families.family import Family, check_family
from nndiff.tasks import TRUST_ENV, USER_SPEC, get_task, name_task, resolve_task_spec, user_function
from nndiff.tasks import _NAMED as NAMED


def get_family(spec: str) -> Family:
    """A built-in family by name, or a user's from the function the spec names (which the user thereby trusts)."""
    if spec in FAMILIES:
        family = FAMILIES[spec]()
    elif USER_SPEC.match(spec or ""):
        name_task(spec)
        factory = user_function(spec, "--family")
        try:
            family = check_family(factory(), f"{spec.rsplit(':', 1)[1]}() in {spec.rsplit(':', 1)[0]}")
        except NndiffError:
            raise
        except Exception as e:
            raise NndiffError(f"{spec} raised {type(e).__name__}: {e}") from e
        family.name = resolve_task_spec(spec)  # the run records where the family came from
        if ":" in family.base_task:
            name_task(family.base_task)  # the family's own task is part of the code the user named
    else:
        raise NndiffError(
            f"unknown family {spec!r}; built-in families: {', '.join(FAMILIES)}, "
            "or your own as path/to/file.py:make_family"
        )
    get_task(family.base_task)  # the trunk's task exists
    return family


def recorded_family(spec, where: str) -> Family:
    """The family a run records: a built-in, or a user's whose code the user named or trusts."""
    if isinstance(spec, str) and spec in FAMILIES:
        return get_family(spec)
    if not isinstance(spec, str) or not USER_SPEC.match(spec):
        raise NndiffError(f"{where} records family {spec!r}, which is no family nndiff knows; nothing was run")
    if resolve_task_spec(spec) not in NAMED and os.environ.get(TRUST_ENV) != "1":
        raise NndiffError(
            f"{where} records the family {spec}, whose code nndiff runs only when you name it: add "
            f"--family {spec} if you trust it (or set {TRUST_ENV}=1)"
        )
    return get_family(spec)
