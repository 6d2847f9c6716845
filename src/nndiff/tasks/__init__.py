"""Task registry: a plain dict from name to a function that builds the task, plus user tasks.

A task is any object with the attributes of `ClassificationTask` (see base.py): name,
make_model(), splits() -> {"train", "val", "test"}, train_step(model, x, y, optimizer),
evaluate(model, split), default_select, and the training settings. Users pass their own as
`path/to/file.py:make_task` or `package.module:make_task`, a function that returns one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from ..errors import NndiffError
from .base import ClassificationTask, Evaluation, Split
from .digits import digits_cnn
from .mnist1d import mnist1d_cnn, mnist1d_convnet, mnist1d_mlp
from .vision import ARCHITECTURES, DATASETS, VISION_TASKS, make_vision_task, split_name

TASKS: dict[str, Callable[[], ClassificationTask]] = {
    "mnist1d-cnn": mnist1d_cnn,
    "digits-cnn": digits_cnn,
    "mnist1d-mlp": mnist1d_mlp,
    "mnist1d-convnet": mnist1d_convnet,
}
DEFAULT_TASK = "mnist1d-cnn"
REQUIRED = ("name", "make_model", "splits", "train_step", "evaluate", "default_select", "base_epochs", "base_lr",
            "batch_size", "collect_lr")


def resolve_task_spec(spec: str) -> str:
    """The spec as it should be recorded: built-in names as they are, file paths made absolute."""
    if spec in TASKS or ":" not in spec:
        return spec  # built-in (vision tasks record their data root in the zoo separately)
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{func}"
    return spec


def get_task(spec: str, data_root: str | None = None):
    """A built-in task by name, or a user task from 'file.py:function' / 'package.module:function'.

    `data_root` is where the vision tasks read their dataset (default: $NNDIFF_DATA_ROOT).
    """
    if spec in TASKS:
        return TASKS[spec]()
    vision = split_name(spec)
    if vision:
        return make_vision_task(*vision, data_root)
    if ":" not in spec:
        raise NndiffError(f"unknown task {spec!r}; built-in tasks: {', '.join(TASKS)}, and the vision tasks "
                          f"DATASET-ARCH ({', '.join(DATASETS)} x {', '.join(ARCHITECTURES)}); "
                          "or give your own as path/to/file.py:make_task or package.module:make_task")
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise NndiffError(f"task file {path} not found (from --task {spec})")
        module_name = f"nndiff_user_task_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise NndiffError(f"cannot import module {target!r} for --task {spec}: {e}") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise NndiffError(f"{target} has no function {func!r} (from --task {spec})")
    task = factory()
    missing = [a for a in REQUIRED if not hasattr(task, a)]
    if missing:
        raise NndiffError(f"the task from {spec} lacks {', '.join(missing)}; "
                          "build it with nndiff.tasks.ClassificationTask (see examples/)")
    return task


__all__ = ["TASKS", "VISION_TASKS", "DEFAULT_TASK", "get_task", "resolve_task_spec", "ClassificationTask", "Evaluation", "Split"]
