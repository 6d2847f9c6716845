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

    preds = evaluate_params(task, model, zoo.layout, zoo.params, splits={"val": val}, progress=False)["val"].predictions
    check = autoencoder_check(zoo, task, model, generator, val=val, snapshots=preds, steps=0)
    assert check.status == "pass" and check.measured.startswith("0.0% of the snapshots' variation")


def test_a_pca_run_whose_codec_record_is_lost_or_wrong_is_refused(pca_run, tmp_path):
    import shutil

    from nndiff.errors import NndiffError
    from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

    run = tmp_path / "run"
    shutil.copytree(pca_run, run)
    path = run / "autoencoder.safetensors"
    meta, tensors = load_metadata(path), load_tensors(path)
    _, config = read_run_config(run)
    for record, message in [
        (None, "does not record which codec it holds"),
        ({"class": "svd", "args": meta["codec"]["args"]}, "kind 'svd', which is not registered here"),
        ({"class": "pca", "args": {**meta["codec"]["args"], "dim": 10**12}}, "where 96 are generated"),
        ({"class": "pca", "args": {**meta["codec"]["args"], "count": 5}},
         r"tensor components is torch.float32 \[23, 96\] where the module has"),
        ({"class": "pca", "args": {**meta["codec"]["args"], "count": "all"}}, "cannot be rebuilt"),
    ]:
        save_tensors(path, tensors, {"stage": meta["stage"], **({"codec": record} if record else {})})
        with pytest.raises(NndiffError, match=message):
            ParamGenerator.load(run, config)
    config.autoencoder.kind = "conv"
    save_tensors(path, tensors, meta)
    with pytest.raises(NndiffError, match="holds a pca codec where config.yaml asks for conv"):
        ParamGenerator.load(run, config)


def test_pca_settings_are_checked():
    from nndiff.errors import NndiffError

    with pytest.raises(NndiffError, match="unknown autoencoder.kind 'svd'; choose one of auto, conv, pca"):
        TrainConfig.from_dict({"autoencoder": {"kind": "svd"}})
    with pytest.raises(NndiffError, match=r"autoencoder.components \(--ae-components\) must be an integer >= 0"):
        TrainConfig.from_dict({"autoencoder": {"components": -1}})
    with pytest.raises(NndiffError, match="trains none"):
        TrainConfig.from_dict({"autoencoder": {"kind": "pca", "output_weight": 10.0}})


def test_the_held_back_rows_reach_neither_the_normalizer_nor_the_components():
    """NaN in the held-back rows: a normalizer or components that read one of them would hold NaN,
    and the codec judged on them must be the one of the other rows alone."""
    from nndiff.training.codec import principal_on_held_back

    class Rows:
        def __init__(self, params):
            self.params = params

        def __len__(self):
            return len(self.params)

    x, _ = _zoo()
    held = torch.tensor([5, 11, 29])
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[held] = False
    x[held] = float("nan")
    norm = Normalizer.fit(x, None, "element", rows=keep.nonzero().squeeze(1))
    assert torch.isfinite(norm.mean).all() and torch.isfinite(norm.std).all()
    (codec, _), point = principal_on_held_back(Rows(x), norm, None, held, count=0, device="cpu")
    assert point is None and torch.isfinite(codec.components).all() and torch.isfinite(codec.mean).all()
    alone, _ = PrincipalCodec.fit(x[keep], norm)
    torch.testing.assert_close(codec.mean, alone.mean)
    torch.testing.assert_close(codec.components.abs(), alone.components.abs(), atol=1e-4, rtol=1e-4)


def test_pca_fitted_on_some_rows_is_the_pca_of_those_rows():
    x, norm = _zoo()
    rows = torch.arange(0, 30, 2)
    sub, _ = PrincipalCodec.fit(x, norm, 0, rows=rows)
    alone, _ = PrincipalCodec.fit(x[rows], norm)
    assert torch.allclose(sub.components, alone.components, atol=1e-5) and torch.allclose(sub.mean, alone.mean)


def _recorded(tmp_path, fresh: bool):
    """A zoo recorded without a task: bn2 of a digits CNN, 30 snapshots (3 held back by the budget).
    `fresh`: every snapshot an independent draw in all 64 values, so the held-back ones point where the
    training ones never went; else a walk along 4 fixed directions, which the training rows span."""
    from nndiff import Recorder
    from nndiff.tasks.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    g = torch.Generator().manual_seed(1)
    directions = torch.randn(4, 64, generator=g)
    rec = Recorder(tmp_path / "zoo", model, ["bn2.*"], k=30)
    for step in range(1, 31):
        v = torch.randn(64, generator=g) if fresh else torch.randn(4, generator=g) @ directions
        with torch.no_grad():
            model.bn2.weight.copy_(1 + 0.1 * v[:32])
            model.bn2.bias.copy_(0.1 * v[32:])
        rec.record(model, step)
    return tmp_path / "zoo"


@pytest.mark.parametrize("fresh", [False, True])
def test_the_automatic_codec_keeps_pca_only_where_it_reconstructs_the_held_back_snapshots(tmp_path, fresh):
    """kind auto: principal components that reproduce the held-back snapshots are kept (refitted on
    every snapshot, as many directions) and no autoencoder is trained; where they miss most of those snapshots' variation the autoencoder is
    trained too and the codec that misses less is kept, as train_stats.json records."""
    from nndiff.pipeline.stages import train_run
    from nndiff.tasks import forget_named_tasks

    forget_named_tasks()
    config = TrainConfig()
    assert config.autoencoder.kind == "auto"
    config.autoencoder.components = 4  # a latent of 4 values, smaller than the autoencoder's 16
    config.autoencoder.max_steps, config.diffusion.max_steps = 100, 100
    config.autoencoder.check_every = config.diffusion.check_every = 50
    zoo_dir = _recorded(tmp_path, fresh)
    stats = train_run(zoo_dir, tmp_path / "run", config, progress=False)
    codec = stats["autoencoder"]["codec"]
    principal = codec["principal"]
    if not fresh:
        assert principal["passes"] and principal["unexplained"] < 0.01 and codec["kind"] == "pca"
        assert "autoencoder" not in codec and stats["autoencoder"]["kind"] == "pca"
    else:
        assert not principal["passes"] and principal["unexplained"] > 0.25
        trained = codec["autoencoder"]
        from nndiff.training.codec import choose

        assert codec["kind"] == choose(principal, trained, first=False)  # the rule, tested below
    generator = ParamGenerator.load(tmp_path / "run", read_run_config(tmp_path / "run")[1])
    assert isinstance(generator.autoencoder, PrincipalCodec) == (codec["kind"] == "pca")
    assert generator.sample(4, 0, "ddim", 5).shape == (4, 64)
    if codec["kind"] == "pca":  # judged without the held-back snapshots, then fitted on every one
        every, _ = PrincipalCodec.fit(Zoo.load(zoo_dir).params, generator.normalizer, 4)
        torch.testing.assert_close(generator.autoencoder.components.abs(), every.components.abs(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("principal,autoencoder,kept", [
    ({"unexplained": 0.30, "gap": 0.6}, {"unexplained": 0.10, "gap": 0.1}, "conv"),  # the autoencoder passes
    ({"unexplained": 0.10, "gap": 0.2}, {"unexplained": 0.05, "gap": 3.0}, "pca"),   # it fails, they pass
    ({"unexplained": 0.35, "gap": 0.6}, {"unexplained": 0.30, "gap": 12.0}, "pca"),  # both fail: 0.6 lost, not 12
    ({"unexplained": 0.30, "gap": 12.0}, {"unexplained": 0.35, "gap": 0.6}, "conv"),
    ({"unexplained": 0.40, "gap": 0.9}, {"unexplained": 0.30, "gap": 0.8}, "conv"),  # as much lost: less missed
    ({"unexplained": 0.30}, {"unexplained": 0.40}, "pca"),                           # no task: variation alone
    # measured on mnist1d-mlp (k=40, 3 epochs): an autoencoder that keeps the mean (accurate, 78% missed)
    ({"unexplained": 0.255, "gap": 3.32}, {"unexplained": 0.784, "gap": 0.135}, "pca"),
])
def test_the_codec_rule_weighs_the_accuracy_lost_and_the_variation_missed(principal, autoencoder, kept):
    from nndiff.training.codec import choose

    assert choose(principal, autoencoder, first=False) == kept
    assert choose(principal, autoencoder, first=True) == "pca"


def test_where_the_autoencoder_compresses_more_it_is_trained_as_before(tiny_run, tmp_path):
    """As on the default task (179 principal directions against a 48-value latent): the principal
    components pass but would give the diffusion model more values to learn than the autoencoder's
    latent (21 against 12 here), so the autoencoder is trained, and kept while it passes."""
    from nndiff.training.budget import held_back

    config = tmp_path / "c.yaml"
    config.write_text("autoencoder:\n  latent_channels: 2\n  max_steps: 100\n  check_every: 50\n"
                      "diffusion:\n  max_steps: 100\n  check_every: 50\n")
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(run), "--config", str(config)]) == 0
    stats = json.loads((run / "train_stats.json").read_text())
    codec = stats["autoencoder"]["codec"]
    assert codec["principal"]["passes"] and "autoencoder" in codec  # the autoencoder was trained
    trained, principal = codec["autoencoder"], codec["principal"]
    fails = trained["unexplained"] > 0.25 or trained.get("gap", 0) > 0.5
    assert codec["kind"] == ("pca" if fails and principal["unexplained"] < trained["unexplained"] else "conv")
    if codec["kind"] == "conv":
        assert stats["autoencoder"]["held_back_snapshots"] == len(held_back([0] * 24))
