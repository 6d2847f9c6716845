"""The zoo: the on-disk format of a collection (collect.py writes it), loaded with every check
that evaluation and training rely on.

A zoo directory holds
    manifest.json        task, selection, layout, per-snapshot metadata (run, seed, step, accuracies),
                         the same for the held-out snapshots; a zoo recorded without a task (task null)
                         has no accuracies until a command is given one (`--task`)
    params.safetensors   {"params": [K, D], "heldout": [H, D]} the flattened selected parameters
    base.safetensors     the full base model state_dict (everything that is not generated)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.io.files import load_json, save_json
from nndiff.io.tensors import load_tensors, map_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.params.rows import finite_rows
from nndiff.tasks import ClassificationTask, get_task, named_task, recorded_task

ZOO_VERSION = 1


FILES = {"params": "params.safetensors", "base": "base.safetensors"}


@dataclass
class Zoo:
    task: str | None  # None: recorded without a task (zoo/recorder.py); evaluating needs the user to name one
    layout: Layout
    params: torch.Tensor  # [K, D]; memory-mapped from params.safetensors when loaded
    base_state: dict[str, torch.Tensor]
    snapshots: list[dict]  # per row of params: run, seed, step, val_acc, test_acc
    info: dict = field(default_factory=dict)  # select patterns, collection config, base metrics
    # Held-out originals: what a genuinely new model from the same collection process looks like.
    heldout: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    heldout_snapshots: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return self.params.shape[0]

    def make_task(self):
        """The task this zoo was collected on (vision tasks: reading the recorded data root). A user's
        task code runs only if the user named it (tasks.recorded_task): a zoo may come from anyone. A
        zoo recorded without a task uses the one the user names (`--task`)."""
        if self.task is None:
            spec = named_task()
            if spec is None:
                raise NndiffError(
                    "the zoo was recorded without a task, so nndiff cannot evaluate its models: name your "
                    "evaluation with --task path/to/file.py:make_task (the model and its val and test data)"
                )
            return get_task(spec)
        return recorded_task(self.task, self.info.get("data_root"), self.info.get("image_size"))

    def task_if_known(self):
        """The task, or None for a zoo recorded without one when the user named none."""
        return None if self.task is None and named_task() is None else self.make_task()

    def with_accuracies(self, task) -> "Zoo":
        """This zoo with every snapshot's (and the base model's) validation and test accuracy under
        `task`, measured now when the manifest has none (a zoo recorded without a task); nothing is written."""
        if all("val_acc" in r for r in self.snapshots + self.heldout_snapshots):
            return self
        from nndiff.evaluation.engine import evaluate_params

        model, splits = self.model(task), task.splits()
        rows = torch.cat([self.params, self.heldout.reshape(-1, self.layout.size)])
        evals = evaluate_params(task, model, self.layout, rows, splits={"val": splits["val"], "test": splits["test"]},
                                progress=False)
        records = [dict(r, val_acc=va, test_acc=te) for r, va, te in zip(
            self.snapshots + self.heldout_snapshots, evals["val"].accuracy.tolist(), evals["test"].accuracy.tolist())]
        k = len(self.snapshots)
        base = {"val_acc": task.evaluate(model, splits["val"]).accuracy,
                "test_acc": task.evaluate(model, splits["test"]).accuracy}
        return replace(self, snapshots=records[:k], heldout_snapshots=records[k:], info={**self.info, "base": base})

    def model(self, task: ClassificationTask) -> nn.Module:
        """A fresh model of the task holding the base weights, in eval mode."""
        model = load_base(task, self.base_state)
        self.layout.check_model(model)
        return model

    def save(self, directory: str | Path, params_in_place: bool = False) -> None:
        """Write the zoo into `directory`; `params_in_place`: its params file is there already (a
        collection wrote its rows straight to it)."""
        d = Path(directory)
        save_tensors(d / FILES["base"], self.base_state)
        if not params_in_place:
            heldout = self.heldout.reshape(-1, self.layout.size)
            save_tensors(d / FILES["params"], {"params": self.params, "heldout": heldout})
        manifest = {
            "format": "nndiff-zoo",
            "version": ZOO_VERSION,
            "task": self.task,
            "files": FILES,
            "count": len(self),
            "dim": self.layout.size,
            "layout": self.layout.to_json(),
            "snapshots": self.snapshots,
            "heldout": self.heldout_snapshots,
            **self.info,
        }
        save_json(d / "manifest.json", manifest)  # written last: its presence means the zoo is complete

    @classmethod
    def load(cls, directory: str | Path) -> "Zoo":
        d = Path(directory)
        if not d.is_dir():
            raise NndiffError(f"zoo directory {d} does not exist; create one with `nndiff collect --out {d}`")
        if not (d / "manifest.json").is_file():
            raise NndiffError(f"{d} is not a zoo (no manifest.json); create one with `nndiff collect --out {d}`")
        m = load_json(d / "manifest.json")
        if not isinstance(m, dict) or m.get("format") != "nndiff-zoo":
            raise NndiffError(f"{d / 'manifest.json'} is not an nndiff zoo manifest")
        try:
            return cls._from_manifest(d, m)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise NndiffError(
                f"{d / 'manifest.json'} is malformed ({type(e).__name__}: {e}); re-collect the zoo"
            ) from None

    @classmethod
    def _from_manifest(cls, d: Path, m: dict) -> "Zoo":
        files = {**FILES, **m.get("files", {})}
        paths = {key: _inside(d, files[key]) for key in FILES}
        task = m["task"]
        if task is not None and not isinstance(task, str):
            raise TypeError("task must be a string or null")
        layout = Layout.from_json(m.get("layout", []))
        for key in ("dim", "count"):
            if key in m and (isinstance(m[key], bool) or not isinstance(m[key], int) or m[key] < 0):
                raise NndiffError(f"{d / 'manifest.json'}: {key} must be a count, got {m[key]!r}; re-collect the zoo")
        if m.get("dim", layout.size) != layout.size:
            raise NndiffError(
                f"{d / 'manifest.json'}: dim {m['dim']}, but the layout's shapes add up to {layout.size} values; "
                "re-collect the zoo"
            )
        tensors = map_tensors(paths["params"])  # memory-mapped: a zoo need not fit in memory
        params = tensors.get("params")
        if params is None or params.ndim != 2 or params.shape[1] != layout.size:
            shape = None if params is None else list(params.shape)
            raise NndiffError(
                f"{paths['params']} holds params of shape {shape}, but the manifest's layout needs [K, {layout.size}]"
            )
        snapshots, heldout_snapshots = list(m.get("snapshots", [])), list(m.get("heldout", []))
        if len(snapshots) != params.shape[0] or m.get("count", len(snapshots)) != len(snapshots):
            raise NndiffError(
                f"{d}: manifest lists {len(snapshots)} snapshots (count {m.get('count')}) but {paths['params'].name} "
                f"holds {params.shape[0]}; re-collect the zoo"
            )
        heldout = tensors.get("heldout", torch.empty(0, layout.size))
        if heldout.ndim != 2 or heldout.shape[1] != layout.size or len(heldout_snapshots) != heldout.shape[0]:
            raise NndiffError(
                f"{d}: held-out snapshots of shape {list(heldout.shape)} do not match the manifest "
                f"({len(heldout_snapshots)} listed, layout size {layout.size})"
            )
        if not params.is_floating_point() or not heldout.is_floating_point():
            raise NndiffError(f"{paths['params']}: parameters must be floating point, got {params.dtype}")
        for name, rows in (("snapshot", params), ("held-out snapshot", heldout)):
            bad = int((~finite_rows(rows)).sum())
            if bad:
                raise NndiffError(f"{d}: {bad} {name}(s) contain NaN or Inf; re-collect with a smaller learning rate")
        for where, records in (("snapshots", snapshots), ("heldout", heldout_snapshots)):
            _check_records(d / "manifest.json", where, records, accuracies=task is not None)
        skip = {"format", "version", "task", "files", "count", "dim", "layout", "snapshots", "heldout"}
        info = {k: v for k, v in m.items() if k not in skip}
        base = load_tensors(paths["base"])
        for name, t in base.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise NndiffError(f"{paths['base']}: {name} holds NaN or Inf; re-collect the zoo")
        return cls(
            task,
            layout,
            params.float(),
            base,
            snapshots,
            info,
            heldout.float(),
            heldout_snapshots,
        )


def _check_records(manifest: Path, where: str, records: list, accuracies: bool = True) -> None:
    """Each snapshot's record carries the accuracies that evaluation and conditioning read (a zoo
    recorded without a task: none, or valid ones)."""
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise NndiffError(f"{manifest}: {where}[{i}] must be a mapping, got {type(r).__name__}; re-collect the zoo")
        for key in ("val_acc", "test_acc"):
            if key not in r and not accuracies:
                continue
            value = r.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise NndiffError(
                    f"{manifest}: {where}[{i}].{key} must be an accuracy in percent, got {value!r}; re-collect the zoo"
                )


def _inside(directory: Path, name) -> Path:
    """A file named in a manifest, which must stay inside the zoo directory (no '..', no absolute paths)."""
    if not isinstance(name, str) or not name:
        raise NndiffError(f"{directory / 'manifest.json'}: file name {name!r} is not a string")
    path = (directory / name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise NndiffError(
            f"{directory / 'manifest.json'} names {name!r}, which points outside the zoo directory; refusing to read it"
        )
    return path


def load_base(task: ClassificationTask, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh model of the task holding a base model's weights, in eval mode."""
    model = task.make_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:3]
        raise NndiffError(f"the base model does not fit task {task.name!r}: {' '.join(first)}") from None
    return model.eval()
