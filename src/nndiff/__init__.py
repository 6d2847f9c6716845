"""nndiff: generate neural network parameters with latent diffusion (p-diff), and evaluate them honestly.

zoo = nndiff.collect("mnist1d-cnn", nndiff.CollectConfig(k=200))
gen, stats = nndiff.fit(zoo, nndiff.TrainConfig())
params = gen.sample(100, seed=0)                     # [100, D] parameter vectors
metrics = nndiff.evaluate(nndiff.get_task("mnist1d-cnn"), zoo, params)

recorder = nndiff.Recorder("runs/mine/zoo", model, ["bn*"], k=200)   # task="my_task.py:make_task": evaluate now
recorder.record(model, step)                          # in your own loop, after optimizer steps

metrics = nndiff.run_family(nndiff.FamilyConfig(family="mnist1d-binary"), "runs/binary")  # unseen tasks
"""

from nndiff.errors import NndiffError
from nndiff.evaluation.metrics import compute_metrics
from nndiff.families.config import FamilyConfig
from nndiff.families.run import run_family
from nndiff.generator.config import TrainConfig
from nndiff.generator.registry import register_codec, register_generator
from nndiff.generator.sampler import ParamGenerator
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer
from nndiff.runtime.device import resolve_device
from nndiff.tasks import TASKS, get_task
from nndiff.training.fit import fit
from nndiff.zoo.collect import collect
from nndiff.zoo.config import CollectConfig
from nndiff.zoo.format import Zoo
from nndiff.zoo.recorder import Recorder

__version__ = "0.1.0"


def evaluate(task, zoo: Zoo, params, device: str = "auto", *, progress: bool = True) -> dict:
    """Metrics of generated parameter vectors [N, D] against the zoo's originals and weight average."""
    task = get_task(task) if isinstance(task, str) else task
    return compute_metrics(task, zoo, params, resolve_device(device), progress=progress)


__all__ = [
    "collect",
    "Recorder",
    "CollectConfig",
    "Zoo",
    "fit",
    "TrainConfig",
    "ParamGenerator",
    "evaluate",
    "get_task",
    "TASKS",
    "Layout",
    "Normalizer",
    "NndiffError",
    "run_family",
    "FamilyConfig",
    "register_codec",
    "register_generator",
]
