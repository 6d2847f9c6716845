"""Weight matching (align.py) and zoos of independent base models (collect --bases)."""

import pytest
import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.evaluation.engine import evaluate_params
from nndiff.tasks import get_task
from nndiff.tasks.mnist1d import Mnist1dConvNet, Mnist1dMLP
from nndiff.zoo.align import align, chain, match, permute
from nndiff.zoo.collect import collect, derived_seed
from nndiff.zoo.config import CollectConfig


def _state(model: nn.Module) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _random_perms(model, layers, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return [torch.randperm(params[l.weight].shape[0], generator=g) for l in layers[:-1]]


@pytest.mark.parametrize("make", [Mnist1dMLP, Mnist1dConvNet])
def test_a_permuted_network_computes_the_same_function(make):
    """Permuting hidden units, including the convnet's channels flattened into its classifier's
    inputs (a block of positions per channel), leaves the outputs as they were."""
    torch.manual_seed(0)
    model, x = make(), torch.randn(16, 1, 40)
    layers = chain(model, x)
    perms = _random_perms(model, layers)
    state = permute(_state(model), layers, perms)
    other = make()
    other.load_state_dict(state)
    assert not torch.equal(state[layers[0].weight], model.state_dict()[layers[0].weight])
    torch.testing.assert_close(other(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [Mnist1dMLP, Mnist1dConvNet])
def test_weight_matching_undoes_a_permutation(make):
    """A network matched to a permuted copy of itself finds the permutation back: the matched weights
    equal the copy's exactly."""
    torch.manual_seed(1)
    model = make()
    layers = chain(model, torch.randn(4, 1, 40))
    reference = permute(_state(model), layers, _random_perms(model, layers, seed=3))
    perms = match(reference, _state(model), layers)
    matched = permute(_state(model), layers, perms)
    for name, value in reference.items():
        assert torch.equal(matched[name], value), name


def test_align_moves_a_network_towards_the_reference_and_keeps_its_function():
    torch.manual_seed(2)
    reference, model, x = Mnist1dMLP(), Mnist1dMLP(), torch.randn(16, 1, 40)
    before = model(x).detach()
    moved = align(reference, model, chain(model, x))
    assert moved["distance_after"] < moved["distance_before"]
    assert moved["units_moved"] > 0
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


class _Residual(nn.Module):
    """Linear layers only, but a skip connection ties the hidden units to the inputs' order."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(40, 40), nn.Linear(40, 40), nn.Linear(40, 10)

    def forward(self, x):
        x = x.flatten(1)
        h = torch.relu(self.fc1(x)) + x
        return self.fc3(torch.relu(self.fc2(h)))


class _Normalized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(40, 16), nn.LayerNorm(16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("make, says", [(_Residual, "changes its outputs"), (_Normalized, "LayerNorm")])
def test_a_model_weight_matching_would_break_is_refused(make, says):
    with pytest.raises(NndiffError, match=says):
        chain(make(), torch.randn(8, 1, 40))


def _zoo(**settings):
    config = CollectConfig(k=6, runs=2, bases=2, heldout=2, burn_in=5, every=2, lr=0.01, base_epochs=2, **settings)
    return collect("mnist1d-mlp", config, progress=False)


def test_independent_base_models_are_aligned_before_collection():
    """--bases 2: run 0 starts from the first base model, run 1 from a second one trained from its own
    initialization, the held-out run from a third; weight matching permutes the later ones, so their
    snapshots compute the same functions as without it, in other coordinates closer to the first's."""
    aligned, unaligned = _zoo(), _zoo(align="none")
    assert [s["base"] for s in aligned.snapshots] == [0, 0, 0, 1, 1, 1]
    assert [s["base"] for s in aligned.heldout_snapshots] == [2, 2]
    assert [b["seed"] for b in aligned.info["bases"]] == [0, derived_seed(0, "base", 1), derived_seed(0, "base", 2)]
    assert [m["base"] for m in aligned.info["alignment"]] == [1, 2]
    assert unaligned.info["alignment"] == []
    # run 0 is the same; the others are permuted copies of the same trajectories
    assert torch.equal(aligned.params[:3], unaligned.params[:3])
    assert not torch.allclose(aligned.params[3:], unaligned.params[3:])
    task = get_task("mnist1d-mlp")
    val = task.splits()["val"]
    model = aligned.model(task)
    preds = [
        evaluate_params(task, model, aligned.layout, z, splits={"val": val}, progress=False)["val"].predictions
        for z in (torch.cat([aligned.params, aligned.heldout]), torch.cat([unaligned.params, unaligned.heldout]))
    ]
    assert float((preds[0] == preds[1]).float().mean()) > 0.999
    # the held-out run's base was matched to the first base model
    distance = [float((zoo.heldout - aligned.params[0]).norm(dim=1).mean()) for zoo in (aligned, unaligned)]
    assert distance[0] < distance[1]


@pytest.mark.parametrize(
    "task, settings, says",
    [
        ("mnist1d-mlp", {"runs": 1, "bases": 2}, "at least as many --runs"),
        ("mnist1d-mlp", {"runs": 2, "bases": 2, "select": ["fc3.*"]}, "whole network"),
        ("mnist1d-cnn", {"runs": 2, "bases": 2, "select": ["*"]}, "without buffers"),
    ],
)
def test_bases_that_cannot_be_collected_are_refused(task, settings, says):
    with pytest.raises(NndiffError, match=says):
        collect(task, CollectConfig(k=4, heldout=0, burn_in=2, lr=0.01, base_epochs=1, **settings), progress=False)
