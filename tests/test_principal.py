"""The principal-component codec (--ae-kind pca): diffusion on the zoo's PCA coordinates."""

import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from nndiff.analysis.doctor import autoencoder_check
from nndiff.cli.main import main
from nndiff.generator.config import TrainConfig
from nndiff.generator.principal import PrincipalCodec
from nndiff.generator.sampler import ParamGenerator
from nndiff.params.normalizer import Normalizer
from nndiff.pipeline.rundir import read_run_config
from nndiff.zoo.format import Zoo

from .conftest import TINY_RUN


def _zoo(rows=30, dim=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    # correlated columns of different scales, like a zoo's
    x = torch.randn(rows, 8, generator=g) @ torch.randn(8, dim, generator=g) + 3 * torch.randn(dim, generator=g)
    return x * torch.linspace(0.1, 5, dim), Normalizer.fit(x * torch.linspace(0.1, 5, dim), None, "element")


def test_every_direction_reproduces_the_training_rows():
    x, norm = _zoo()
    codec, explained = PrincipalCodec.fit(x, norm)
    assert codec.latent_shape == (1, 29) and explained == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(codec.reconstruct(norm(x)), norm(x), rtol=1e-4, atol=1e-4)


def test_more_snapshots_than_parameters_keep_one_direction_per_parameter():
    x, norm = _zoo(rows=200, dim=12)
    codec, explained = PrincipalCodec.fit(x, norm)
    assert codec.latent_shape == (1, 12) and explained == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(codec.reconstruct(norm(x)), norm(x), rtol=1e-4, atol=1e-4)


def test_fewer_directions_are_scikit_learns_pca():
    """With 3 of the directions, encoding and decoding is scikit-learn's PCA of the normalized rows."""
    x, norm = _zoo()
    codec, explained = PrincipalCodec.fit(x, norm, count=3)
    ref = PCA(n_components=3, svd_solver="full").fit(norm(x).numpy())
    assert explained == pytest.approx(float(ref.explained_variance_ratio_.sum()), rel=1e-4)
    held = norm(_zoo(rows=5, seed=1)[0])
    expected = ref.inverse_transform(ref.transform(held.numpy()))
    np.testing.assert_allclose(codec.reconstruct(held).numpy(), expected, rtol=1e-3, atol=1e-3)
    # the coordinates are PCA's up to each direction's sign
    ours, theirs = codec.encode(held)[:, 0].numpy(), ref.transform(held.numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def pca_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pca") / "digits"
    assert main([*TINY_RUN, "--ae-kind", "pca", "--out", str(out)]) == 0
    return out


def test_a_pca_run_trains_no_autoencoder_and_loads_its_components(pca_run):
    stats = json.loads((pca_run / "train_stats.json").read_text())["autoencoder"]
    assert stats["kind"] == "pca" and stats["components"] == 23  # 24 snapshots span 23 directions
    zoo = Zoo.load(pca_run / "zoo")
    _, config = read_run_config(pca_run)
    generator = ParamGenerator.load(pca_run, config)
    assert isinstance(generator.autoencoder, PrincipalCodec)
    x = generator.normalizer(zoo.params)
    torch.testing.assert_close(generator.autoencoder.reconstruct(x), x, rtol=1e-3, atol=1e-3)
    # the health check sees the codec reproduce every snapshot
    task = zoo.make_task()
    model, val = zoo.model(task), task.splits()["val"]
    from nndiff.evaluation.engine import evaluate_params

    preds = evaluate_params(task, model, zoo.layout, zoo.params, {"val": val}, progress=False)["val"].predictions
    check = autoencoder_check(zoo, task, model, generator, val, preds, 0)
    assert check.status == "pass" and check.measured.startswith("0.0% of the snapshots' variation")


def test_a_pca_run_without_its_components_is_refused(pca_run, tmp_path):
    import shutil

    from nndiff.errors import NndiffError
    from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

    run = tmp_path / "run"
    shutil.copytree(pca_run, run)
    path = run / "autoencoder.safetensors"
    save_tensors(path, load_tensors(path), {"dim": 1, "stage": load_metadata(path)["stage"]})  # components lost
    _, config = read_run_config(run)
    with pytest.raises(NndiffError, match="principal components"):
        ParamGenerator.load(run, config)


def test_pca_settings_are_checked():
    from nndiff.errors import NndiffError

    with pytest.raises(NndiffError, match="unknown autoencoder.kind 'svd'; choose one of conv, pca"):
        TrainConfig.from_dict({"autoencoder": {"kind": "svd"}})
    with pytest.raises(NndiffError, match=r"autoencoder.components \(--ae-components\) must be an integer >= 0"):
        TrainConfig.from_dict({"autoencoder": {"components": -1}})
    with pytest.raises(NndiffError, match="trains none"):
        TrainConfig.from_dict({"autoencoder": {"kind": "pca", "output_weight": 10.0}})
