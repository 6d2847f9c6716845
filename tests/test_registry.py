"""Codecs and generators are saved with a class tag and their constructor's arguments and loaded by
that tag: a user's own codec or generator, registered like a task, travels through the same files."""

import pytest
import torch
from torch import nn

from nndiff import register_codec, register_generator
from nndiff.errors import NndiffError
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser
from nndiff.generator.registry import CODEC_CLASSES, load_generator, save_generator
from nndiff.generator.sampler import ParamGenerator
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer


@register_codec("test-halves")
class Halves(nn.Module):
    """A user's codec: the parameters' two halves as two latent channels, scaled by a learned factor."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim, self.sizes = dim, [dim]
        self.scale = nn.Parameter(torch.ones(1))

    def arguments(self) -> dict:
        return {"dim": self.dim}

    @classmethod
    def from_arguments(cls, args: dict) -> "Halves":
        return cls(args["dim"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (2, self.dim // 2)

    def encode(self, x, noise=0.0):
        return x.view(len(x), 2, -1) * self.scale

    def decode(self, z):
        return z.flatten(1) / self.scale


@register_generator("test-constant")
class Constant:
    """A user's generator: one stored row, repeated."""

    def __init__(self, row: torch.Tensor, label: str):
        self.row, self.label = row, label

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self.row.repeat(n, 1)

    def arguments(self) -> dict:
        return {"label": self.label}

    def tensors(self) -> dict:
        return {"row": self.row}

    @classmethod
    def from_saved(cls, args: dict, tensors: dict) -> "Constant":
        return cls(tensors["row"], args["label"])


def unit(n: int) -> Normalizer:
    return Normalizer(torch.zeros(n), torch.ones(n))


def test_a_users_codec_travels_through_a_runs_files(tmp_path):
    torch.manual_seed(0)
    config = TrainConfig()
    layout = Layout.from_shapes([("a", (4,)), ("b", (4,))])
    codec = Halves(8)
    codec.scale.data.fill_(2.0)
    den = Denoiser(codec.latent_shape, config.denoiser).eval()
    ParamGenerator(layout, config, unit(8), unit(8), codec, den).save(tmp_path)
    loaded = ParamGenerator.load(tmp_path, config)
    assert isinstance(loaded.autoencoder, Halves) and float(loaded.autoencoder.scale.detach()) == 2.0
    torch.testing.assert_close(loaded.sample(3, seed=1), ParamGenerator(layout, config, unit(8), unit(8), codec,
                                                                        den).sample(3, seed=1))
    config.autoencoder.kind = "pca"  # a run whose settings name another kind of codec
    with pytest.raises(NndiffError, match="holds a test-halves codec where config.yaml asks for pca"):
        ParamGenerator.load(tmp_path, config)


def test_a_users_generator_saves_and_loads_by_its_tag(tmp_path):
    save_generator(tmp_path / "g.safetensors", Constant(torch.arange(5.0), "five"))
    loaded = load_generator(tmp_path / "g.safetensors")
    assert isinstance(loaded, Constant) and loaded.label == "five"
    assert torch.equal(loaded.sample(2), torch.arange(5.0).repeat(2, 1))
    with pytest.raises(NndiffError, match="holds no generator of the kinds descriptor-regression"):
        load_generator(tmp_path / "g.safetensors", ("descriptor-regression",))


def test_a_taken_name_is_refused_and_the_file_names_no_code(tmp_path):
    with pytest.raises(NndiffError, match="the codec name 'conv' is taken by Autoencoder"):
        register_codec("conv")(Halves)
    assert CODEC_CLASSES["conv"].__name__ == "Autoencoder"

    class Unregistered(Constant):  # inherits a tag, but saved under it it would load as Constant
        pass

    with pytest.raises(NndiffError, match="Unregistered is no registered generator"):
        save_generator(tmp_path / "u.safetensors", Unregistered(torch.zeros(1), "u"))
    from nndiff.io.tensors import save_tensors

    marker = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    save_tensors(tmp_path / "g.safetensors", {"row": torch.zeros(1)}, {"class": "evil:Constant", "args": {}})
    with pytest.raises(NndiffError, match="kind 'evil:Constant', which is not registered here"):
        load_generator(tmp_path / "g.safetensors")
    assert not marker.exists()


def test_a_runs_generator_as_one_file_samples_the_same_models(tiny_run, tmp_path):
    """The run directory's three files and the one-file form (save_generator) hold one generator."""
    from nndiff.pipeline.rundir import read_run_config

    generator = ParamGenerator.load(tiny_run, read_run_config(tiny_run)[1])
    save_generator(tmp_path / "generator.safetensors", generator)
    again = load_generator(tmp_path / "generator.safetensors", ("latent-diffusion",))
    assert isinstance(again, ParamGenerator) and again.layout.to_json() == generator.layout.to_json()
    assert torch.equal(again.sample(3, seed=5, steps=4), generator.sample(3, seed=5, steps=4))
    from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

    meta, tensors = load_metadata(tmp_path / "generator.safetensors"), load_tensors(tmp_path / "generator.safetensors")
    save_tensors(tmp_path / "cut.safetensors", {k: v for k, v in tensors.items() if k != "latent.std"}, meta)
    with pytest.raises(NndiffError, match="its statistics lacks latent.mean or latent.std"):
        load_generator(tmp_path / "cut.safetensors")
