"""Checks several tests make of a finished run."""

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file

from nndiff.zoo.format import Zoo


def checksums(root: Path) -> dict[str, str]:
    """Every file below `root` (the directory lock aside, which any command may open) by its SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and p.name != ".nndiff.lock"}


def check_generated(run, count):
    """The generated files are models: exactly the zoo's layout of finite tensors each, different from
    each other and from every snapshot, and loadable over the base model."""
    zoo = Zoo.load(run / "zoo")
    files = sorted((run / "generated").glob("*.safetensors"))
    assert [f.name for f in files] == [f"{i:06d}.safetensors" for i in range(count)]
    rows = []
    for f in files:
        state = load_file(f)
        assert {k: tuple(v.shape) for k, v in state.items()} == {e.name: e.shape for e in zoo.layout.entries}
        assert all(torch.isfinite(v).all() for v in state.values())
        rows.append(zoo.layout.flatten(state))
    rows = torch.stack(rows)
    assert len(torch.unique(rows, dim=0)) == count
    assert not any(torch.equal(r, s) for r in rows for s in zoo.params)
    model = zoo.model(zoo.make_task())
    assert not model.load_state_dict(load_file(files[0]), strict=False).unexpected_keys
    return zoo, rows


def plain_accuracies(run, split):
    """Every generated file evaluated with plain safetensors + load_state_dict + task.evaluate."""
    task = Zoo.load(run / "zoo").make_task()
    model = task.make_model()
    model.load_state_dict(load_file(run / "zoo" / "base.safetensors"))
    accs = []
    for f in sorted((run / "generated").glob("*.safetensors")):
        model.load_state_dict(load_file(f), strict=False)
        accs.append(task.evaluate(model, task.splits()[split]).accuracy)
    return accs


def tiny_family(family: str = "digits-binary", tasks: int = 60):
    """A family run's settings small enough for the suite (a digits-binary run takes about 20 s)."""
    from nndiff.families.config import FamilyConfig

    config = FamilyConfig(family=family, tasks=tasks, steps=200, every=20, regression_steps=150,
                           tune_steps=50, base_epochs=3)
    config.diffusion.autoencoder.steps = config.diffusion.diffusion.steps = 50
    return config
