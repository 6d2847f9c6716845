"""The trust rule for user code, and its loader.

A zoo, a run or a config file records tasks and families as references (`path/to/file.py:function`
or `package.module:function`), never as instructions: a user's file or module is imported only when
the user named it in this process (`--task`, `--family`, or `get_task` called with it) or set
NNDIFF_TRUST_TASK_CODE=1. `trusted(spec)` says whether it may run; `user_function(spec, option)`
imports it and returns the function it names, with any failure of the user's code said in one line.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import sys
from pathlib import Path
from typing import Callable

from nndiff.errors import NndiffError
from nndiff.tasks.contract import user_error

TRUST_ENV = "NNDIFF_TRUST_TASK_CODE"  # "1": run the code a zoo or run records as its task
USER_SPEC = re.compile(r"^(?:[^:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")
_NAMED: set[str] = set()  # user task specs named in this process, as recorded (resolve_task_spec)


def name_task(spec: str) -> None:
    """The user names this task: a zoo recording it may run its code in this process."""
    _NAMED.add(resolve_task_spec(spec))


def named_task() -> str | None:
    """The task the user named in this process (`--task`), if exactly one: the evaluation of a zoo
    recorded without a task."""
    return next(iter(_NAMED)) if len(_NAMED) == 1 else None


def forget_named_tasks() -> None:
    """Each command starts with no task named (the CLI calls this; one process may run several)."""
    _NAMED.clear()


def trusted(spec: str) -> bool:
    """Whether the user's code that `spec` names may run in this process: named, or all trusted."""
    return resolve_task_spec(spec) in _NAMED or os.environ.get(TRUST_ENV) == "1"


def resolve_task_spec(spec: str) -> str:
    """The spec as it should be recorded: built-in names as they are, file paths made absolute."""
    if ":" not in spec:
        return spec  # built-in (vision tasks record their data root in the zoo separately)
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{func}"
    return spec


def user_function(spec: str, option: str) -> Callable:
    """The function a user's spec names (path/to/file.py:function or package.module:function),
    importing its file or module once; `option` (--task, --family) names where it came from."""
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise NndiffError(f"file {path} not found (from {option} {spec})")
        module_name = f"nndiff_user_code_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            try:
                with _held_stderr():
                    module_spec.loader.exec_module(module)
            except SystemExit as e:
                raise NndiffError(f"file {path} (from {option} {spec}) {_exited(e)}") from None
            except Exception as e:  # the user's code: its error, named with the file (--debug shows the traceback)
                raise NndiffError(f"file {path} (from {option} {spec}) failed to load: {user_error(e)}") from e
            sys.modules[module_name] = module
    else:
        try:
            with _held_stderr():
                module = importlib.import_module(target)
        except ImportError as e:
            raise NndiffError(f"cannot import module {target!r} for {option} {spec}: {e}") from None
        except SystemExit as e:
            raise NndiffError(f"module {target!r} (from {option} {spec}) {_exited(e)}") from None
        except Exception as e:
            raise NndiffError(f"module {target!r} (from {option} {spec}) failed to load: {user_error(e)}") from e
    factory = getattr(module, func, None)
    if not callable(factory):
        raise NndiffError(f"{target} has no function {func!r} (from {option} {spec})")
    return factory


@contextlib.contextmanager
def _held_stderr():
    """What a user's module writes to stderr while it is imported, passed on unless it exits (an
    argument parser's usage text would otherwise precede the one-line error)."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except SystemExit:
        raise
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    sys.stderr.write(held.getvalue())


def _exited(e: SystemExit) -> str:
    return (f"exited while being imported (exit code {e.code!r}): code that parses command-line arguments or "
            "exits belongs under `if __name__ == '__main__':`")
