"""A family run's settings, declared with `setting(...)` like every other configuration: each
field's default, help and range in one place, checked before any work (`validate`) and offered as
`nndiff run --family NAME --family_settings.FIELD VALUE`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from nndiff.config.settings import SEED_MAX, check_fields, setting
from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig


def _diffusion_defaults() -> TrainConfig:
    config = TrainConfig()
    config.autoencoder.steps, config.diffusion.steps = 1000, 1500
    return config


@dataclass
class FamilyConfig:
    family: str = setting("mnist1d-binary", "the family: a built-in one, or path/to/file.py:make_family")
    seed: int = setting(0, "random seed; the same seed gives the same result", low=0, high=SEED_MAX, integer=True)
    steps: int = setting(1000, "SGD steps per task from the common initialization", low=1, integer=True)
    lr: float = setting(0.5, "the heads' SGD learning rate", low=0, low_open=True)
    snapshots: int = setting(5, "heads kept per task: the last ones, `every` steps apart", low=1, integer=True)
    every: int = setting(100, "SGD steps between a task's kept heads", low=1, integer=True)
    n: int = setting(10, "models generated per held-out task by a generator that samples", low=1, high=10_000,
                     integer=True)
    regression_steps: int = setting(4000, "training steps of the regression from descriptor to head", low=1,
                                    integer=True)
    tune_steps: int = setting(3000, "steps of the regression tuned with the tasks' own loss", low=1, integer=True)
    shots: int = setting(10, "labelled examples per class that describe a task", low=1, integer=True)
    draws: int = setting(8, "example sets drawn per training task", low=1, integer=True)
    tasks: int = setting(0, "0: every task of the family; else this many, drawn by the seed (quick checks)", low=0,
                         integer=True)
    base_epochs: int = setting(0, "epochs of the trunk's training (0: the base task's own)", low=0, integer=True)
    diffusion: TrainConfig = field(default_factory=_diffusion_defaults)

    def validate(self) -> "FamilyConfig":
        check_fields(self, "family_settings")  # named as the options that set them
        self.diffusion.validate()
        if self.steps - (self.snapshots - 1) * self.every < 1:
            raise NndiffError(f"{self.snapshots} snapshots {self.every} steps apart need over "
                              f"{(self.snapshots - 1) * self.every} steps (got --steps {self.steps})")
        if self.tasks and self.tasks < 10:
            raise NndiffError(f"family_settings.tasks must be 0 (every task) or at least 10 (got {self.tasks})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trunk_settings(self) -> dict:
        """What the trunk depends on."""
        return {"seed": self.seed, "base_epochs": self.base_epochs}

    def heads_settings(self) -> dict:
        """What the zoo of heads depends on (the trunk's settings included)."""
        skip = ("n", "diffusion", "regression_steps", "tune_steps", "shots", "draws")
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def settings(self) -> dict:
        """Every setting, as a run records and claims them (JSON-safe)."""
        return json.loads(json.dumps(self.to_dict()))
