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

import hashlib
from pathlib import Path
from typing import Callable

from nndiff.errors import NndiffError
from nndiff.tasks.base import ClassificationTask, Evaluation, Split
from nndiff.tasks.contract import check_task, check_task_data, training_split, user_error
from nndiff.tasks.usercode import (
    TRUST_ENV,
    USER_SPEC,
    forget_named_tasks,
    name_task,
    named_task,
    resolve_task_spec,
    trusted,
    user_function,
)
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
    if not trusted(spec):
        raise NndiffError(
            f"{where} records the task {spec}, whose code nndiff runs only when you name it: add "
            f"--task {spec} if you trust it (or set {TRUST_ENV}=1)"
        )
    return get_task(spec, data_root, image_size)


def task_fingerprint(spec: str) -> str:
    """What identifies a task: its spec as recorded and, for a task in a file, the file's bytes (a
    task edited in place measures something else)."""
    spec = resolve_task_spec(spec)
    digest = hashlib.sha256(spec.encode())
    target = spec.rsplit(":", 1)[0]
    if ":" in spec and target.endswith(".py") and Path(target).is_file():
        digest.update(Path(target).read_bytes())
    return digest.hexdigest()[:16]


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


__all__ = [
    "TASKS",
    "TRUST_ENV",
    "USER_SPEC",
    "forget_named_tasks",
    "name_task",
    "named_task",
    "resolve_task_spec",
    "task_fingerprint",
    "trusted",
    "user_function",
    "VISION_TASKS",
    "DEFAULT_TASK",
    "get_task",
    "ClassificationTask",
    "Evaluation",
    "Split",
    "check_task",
    "check_task_data",
    "training_split",
    "user_error",
]
