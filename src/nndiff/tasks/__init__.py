"""Task registry: a plain dict from name to a function that builds the task, plus user tasks.

A task is any object with the attributes of `ClassificationTask` (see base.py): name,
make_model(), splits() -> {"train", "val", "test"}, train_step(model, x, y, optimizer),
evaluate(model, split), default_select, and the training settings. Users pass their own as
`path/to/file.py:make_task` or `package.module:make_task`, a function that returns one.

A zoo records its task, and a zoo can come from anyone: a recorded task is a reference, never an
instruction. Built-in names resolve from the registry; a user's file or module is imported only when
the user named it in this process (`--task`, or `get_task` called with it) or set NNDIFF_TRUST_TASK_CODE=1.
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
from nndiff.tasks.base import ClassificationTask, Evaluation, Split
from nndiff.tasks.contract import check_task, check_task_data, training_split, user_error
from nndiff.tasks.digits import digits_cnn
from nndiff.tasks.mnist1d import mnist1d_cnn, mnist1d_convnet, mnist1d_mlp, mnist1d_mlp1m, mnist1d_mlp100k
from nndiff.tasks.vision import ARCHITECTURES, DATASETS, VISION_TASKS, make_vision_task, parse_vision_name

TASKS: dict[str, Callable[[], ClassificationTask]] = {
    "mnist1d-cnn": mnist1d_cnn,
    "digits-cnn": digits_cnn,
    "mnist1d-mlp": mnist1d_mlp,
    "mnist1d-convnet": mnist1d_convnet,
    "mnist1d-mlp100k": mnist1d_mlp100k,
    "mnist1d-mlp1m": mnist1d_mlp1m,
}
DEFAULT_TASK = "mnist1d-cnn"


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


def recorded_task(spec, data_root: str | None = None, image_size: int | None = None, where: str = "the zoo"):
    """The task a zoo or run records. A built-in resolves from the registry; a user's code runs only
    when the user named it or trusts recorded code (TRUST_ENV); anything else is refused before
    anything is imported."""
    if isinstance(spec, str) and (spec in TASKS or parse_vision_name(spec)):
        return get_task(spec, data_root, image_size)
    if not isinstance(spec, str) or not USER_SPEC.match(spec):
        raise NndiffError(
            f"{where} records task {spec!r}, which is neither a built-in task nor file.py:function or "
            "package.module:function; nothing was run"
        )
    if spec not in _NAMED and os.environ.get(TRUST_ENV) != "1":
        raise NndiffError(
            f"{where} records the task {spec}, whose code nndiff runs only when you name it: add "
            f"--task {spec} if you trust it (or set {TRUST_ENV}=1)"
        )
    return get_task(spec, data_root, image_size)


def resolve_task_spec(spec: str) -> str:
    """The spec as it should be recorded: built-in names as they are, file paths made absolute."""
    if spec in TASKS or ":" not in spec:
        return spec  # built-in (vision tasks record their data root in the zoo separately)
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{func}"
    return spec


def get_task(spec: str, data_root: str | None = None, image_size: int | None = None, check_data: bool = True):
    """A built-in task by name, or a user task from 'file.py:function' / 'package.module:function'.

    `data_root` is where the vision tasks read their dataset (default: $NNDIFF_DATA_ROOT), `image_size`
    the side of their images (default: the dataset's). A user's task is checked on one batch of each
    split (`check_data`), before any work starts.
    """
    vision = parse_vision_name(spec)
    if image_size is not None and not vision:
        raise NndiffError(f"--image-size is for the vision tasks; task {spec!r} decides its own inputs")
    if spec in TASKS:
        return TASKS[spec]()
    if vision:
        return make_vision_task(*vision, data_root, image_size)
    if ":" not in spec:
        raise NndiffError(
            f"unknown task {spec!r}; built-in tasks: {', '.join(TASKS)}, and the vision tasks "
            f"DATASET-ARCH ({', '.join(DATASETS)} x {', '.join(ARCHITECTURES)}); "
            "or give your own as path/to/file.py:make_task or package.module:make_task"
        )
    name_task(spec)  # asked for by name: the user's own
    factory = user_function(spec, "--task")
    try:
        task = factory()
    except SystemExit as e:
        target, func = spec.rsplit(":", 1)
        raise NndiffError(f"{func}() in {target} called exit ({e.code!r}) instead of returning a task") from None
    except Exception as e:
        target, func = spec.rsplit(":", 1)
        raise NndiffError(f"{func}() in {target} raised {user_error(e)}") from e
    check_task(task, spec)
    if check_data:
        check_task_data(task, f"the task from {spec}")
    return task


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


__all__ = [
    "TASKS",
    "VISION_TASKS",
    "DEFAULT_TASK",
    "get_task",
    "resolve_task_spec",
    "ClassificationTask",
    "Evaluation",
    "Split",
    "check_task",
    "check_task_data",
    "training_split",
    "user_error",
]
