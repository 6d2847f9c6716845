"""Task registry: a plain dict from name to a function that builds the task."""

from __future__ import annotations

from typing import Callable

from ..errors import NndiffError
from .base import ClassificationTask, Evaluation, Split
from .digits import digits_cnn
from .mnist1d import mnist1d_cnn

TASKS: dict[str, Callable[[], ClassificationTask]] = {
    "mnist1d-cnn": mnist1d_cnn,
    "digits-cnn": digits_cnn,
}
DEFAULT_TASK = "mnist1d-cnn"


def get_task(name: str) -> ClassificationTask:
    if name not in TASKS:
        raise NndiffError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "DEFAULT_TASK", "get_task", "ClassificationTask", "Evaluation", "Split"]
