"""Families by name: a built-in one, or a user's `path/to/file.py:make_family` (or
`package.module:make_family`), a function returning a `Family`.

A run records its family. As with tasks, a recorded reference never runs code by itself: a user's
family runs only when the user names it in this process (`--family`) or sets NNDIFF_TRUST_TASK_CODE=1.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.families.builtin import FAMILIES
from nndiff.families.family import Family, check_family
from nndiff.tasks import get_task
from nndiff.tasks.usercode import TRUST_ENV, USER_SPEC, name_task, resolve_task_spec, trusted, user_function


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
        except SystemExit as e:
            raise NndiffError(f"{spec} called exit ({e.code!r}) instead of returning a family") from None
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
    if not trusted(spec):
        raise NndiffError(
            f"{where} records the family {spec}, whose code nndiff runs only when you name it: add "
            f"--family {spec} if you trust it (or set {TRUST_ENV}=1)"
        )
    return get_family(spec)


def fingerprint(family: Family) -> str:
    """What identifies a family's code and data: its fields, its codes, and the source files that
    define it (its factory's, its relabel's and transform's, its base task's when that is a file), so
    a family edited in place is a new family whose trunk and heads are not reused."""
    digest = hashlib.sha256()
    fields = [family.name, family.base_task, family.head, family.classes, family.asked_by, family.samples,
              list(family.codes.shape), str(family.codes.dtype)]
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    digest.update(family.codes.contiguous().numpy().tobytes())
    sources = {_source(fn) for fn in (family.relabel, family.transform) if fn is not None}
    for spec in (family.name, family.base_task):
        target = spec.rsplit(":", 1)[0] if isinstance(spec, str) and ":" in spec else None
        if target is not None and target.endswith(".py"):
            sources.add(str(Path(target).resolve()))
        elif target is not None and target in sys.modules:
            sources.add(_source(sys.modules[target]))
    if family.name in FAMILIES:
        sources.add(_source(FAMILIES[family.name]))
    for path in sorted(s for s in sources if s):
        try:
            digest.update(path.encode() + b"\0" + Path(path).read_bytes())
        except OSError:
            digest.update(path.encode())
    return digest.hexdigest()[:16]


def _source(obj) -> str | None:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None
