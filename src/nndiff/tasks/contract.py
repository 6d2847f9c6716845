"""What nndiff requires of a user's task, checked before any work: its attributes (`check_task`),
what its splits and model give on one batch of each split (`check_task_data`), and a train split
where models are trained (`training_split`). Each problem is one line naming what is wrong."""

from __future__ import annotations

from nndiff.errors import NndiffError

REQUIRED = (
    "name",
    "make_model",
    "splits",
    "train_step",
    "evaluate",
    "default_select",
    "base_epochs",
    "base_lr",
    "batch_size",
    "collect_lr",
)


def user_error(e: BaseException) -> str:
    """An exception from a user's code as one line: its type, message and (for syntax errors) the line."""
    if isinstance(e, SyntaxError):
        return f"SyntaxError at line {e.lineno}: {e.msg}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def check_task(task, spec: str) -> None:
    """A user's task is checked like a zoo file: every attribute nndiff reads, with its type and range,
    and what make_model() returns, so a mistake is named now instead of surfacing mid-run."""
    from torch import nn

    from nndiff.config.settings import number

    missing = [a for a in REQUIRED if not hasattr(task, a)]
    if missing:
        raise NndiffError(
            f"the task from {spec} lacks {', '.join(missing)}; "
            "build it with nndiff.tasks.ClassificationTask (see examples/)"
        )
    where = f"the task from {spec}"
    if not isinstance(task.name, str) or not task.name:
        raise NndiffError(f"{where}: name must be a non-empty string (got {task.name!r})")
    select = task.default_select
    if (
        isinstance(select, str)
        or not isinstance(select, (list, tuple))
        or not select
        or not all(isinstance(p, str) for p in select)
    ):
        raise NndiffError(f"{where}: default_select must be a list of glob patterns such as ['bn1.*'] (got {select!r})")
    number(task.base_epochs, f"{where}: base_epochs", low=1, integer=True)
    number(task.batch_size, f"{where}: batch_size", low=1, integer=True)
    number(task.base_lr, f"{where}: base_lr", low=0, low_open=True)
    number(task.collect_lr, f"{where}: collect_lr", low=0, low_open=True)
    number(getattr(task, "collect_every", 1), f"{where}: collect_every", low=1, integer=True)
    for name in ("make_model", "splits", "train_step", "evaluate"):
        if not callable(getattr(task, name)):
            raise NndiffError(f"{where}: {name} must be a method or function")
    try:
        model = task.make_model()
    except Exception as e:
        raise NndiffError(f"{where}: make_model() raised {user_error(e)}") from e
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise NndiffError(
            f"{where}: make_model() must return a torch.nn.Module with parameters (got {type(model).__name__})"
        )


def check_task_data(task, where: str) -> None:
    """What a task's splits and model give, checked on one batch of each split: val and test present
    (train is needed only to train models: `training_split`), each non-empty, labels integer, the
    model's output [batch, classes] floating point, and every label
    below the number of classes. Each problem is one line naming what the task returned."""
    import torch

    from nndiff.tasks.base import batches

    try:
        splits = task.splits()
    except Exception as e:
        raise NndiffError(f"{where}: splits() raised {user_error(e)}") from e
    missing = [k for k in ("val", "test") if not isinstance(splits, dict) or k not in splits]
    if missing:
        got = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
        raise NndiffError(f"{where}: splits() must return val and test (and train, to train models); "
                          f"{', '.join(missing)} missing (got {got})")
    model = task.make_model().eval()
    for name in [k for k in ("train", "val", "test") if k in splits]:
        split = splits[name]
        x, y = getattr(split, "x", None), getattr(split, "y", None)
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            what = f"a {y.dtype} tensor of shape {list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise NndiffError(f"{where}: split {name!r} labels must be a 1-D integer tensor (got {what})")
        if len(y) == 0:
            raise NndiffError(f"{where}: split {name!r} is empty")
        first = next(iter(batches(x, 8)), None) if x is not None else None
        if not isinstance(first, torch.Tensor) or len(first) == 0:
            raise NndiffError(f"{where}: split {name!r} inputs must be a tensor (or stream) of {len(y)} examples")
        try:
            with torch.no_grad():
                out = model(first)
        except Exception as e:
            raise NndiffError(f"{where}: the model raised {user_error(e)} on a batch of split {name!r}") from e
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(first):
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NndiffError(f"{where}: the model must return [batch, classes] logits; on {len(first)} examples "
                              f"of split {name!r} it returned {shape}")
        if not out.is_floating_point():
            raise NndiffError(f"{where}: the model's output is {out.dtype}; it must be floating-point logits")
        classes = out.shape[1]
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise NndiffError(f"{where}: split {name!r} has labels from {low} to {high}, but the model has "
                              f"{classes} outputs (labels must be 0..{classes - 1})")


def training_split(task):
    """The task's train split, or one line saying that a task without one can only evaluate."""
    splits = task.splits()
    if "train" not in splits:
        raise NndiffError(f"task {task.name!r} gives no train split, so nndiff cannot train models for it "
                          "(it can evaluate a zoo you recorded); add a train split to collect or train a base")
    return splits["train"]
