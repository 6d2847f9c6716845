"""Weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin"): permute the hidden units of
a network so that its weights lie as close as possible to a reference network's, without changing
what it computes.

Two independently initialized networks learn the same features in different orders, so their
weight vectors differ mostly by a permutation; a zoo of several independent trainings is only
comparable coordinate by coordinate after each is permuted towards one reference. Weight matching
maximizes sum_l <W_l^ref, P_l W_l P_{l-1}^T> over the permutations P_l of the hidden units between
layers l and l+1, one P_l at a time (a linear assignment problem, scipy's Hungarian solver), until
a pass over all of them changes nothing.

Supported: a plain chain of Linear and Conv layers (weights and biases), elementwise activations
between them, and flattening of a convolution's channels x positions into a Linear layer's inputs.
`chain` finds the layers and checks, with a random permutation, that permuting really leaves the
network's outputs unchanged, so a model with residual connections, normalization layers or
attention is refused with a clear error instead of being silently broken. (The `rebasin` package
traced these models but permuted the convnet's flattened features wrongly: its permuted
mnist1d-convnet computed another function.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from nndiff.errors import NndiffError

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


MAX_PASSES = 100


@dataclass(frozen=True)
class Layer:
    weight: str  # parameter names in the model
    bias: str | None


def chain(model: nn.Module, inputs: torch.Tensor) -> list[Layer]:
    """The model's layers in order, if it is a chain weight matching can permute (see module docstring);
    `inputs`: a small batch to check on that a random permutation leaves its outputs unchanged."""
    layers = []
    for prefix, module in model.named_modules():
        direct = [n for n, _ in module.named_parameters(recurse=False)]
        if not direct:
            continue
        if not isinstance(module, LAYERS) or getattr(module, "groups", 1) != 1:
            raise NndiffError(
                f"weight matching permutes plain chains of Linear and Conv layers; {prefix or 'the model'} is a "
                f"{type(module).__name__}: collect with --align none"
            )
        name = f"{prefix}." if prefix else ""
        layers.append(Layer(name + "weight", name + "bias" if module.bias is not None else None))
    if len(layers) < 2:
        raise NndiffError("weight matching needs at least two layers, with hidden units between them")
    params = dict(model.named_parameters())
    for a, b in zip(layers, layers[1:]):
        out, into = params[a.weight].shape[0], params[b.weight].shape[1]
        if into % out:
            raise NndiffError(
                f"{b.weight} takes {into} inputs, not a whole multiple of {a.weight}'s {out} outputs: the "
                "model is not a chain weight matching can permute; collect with --align none"
            )
    if list(model.buffers()):
        raise NndiffError("weight matching needs a model without buffers (BatchNorm statistics); use --align none")
    _check_permutable(model, layers, inputs)
    return layers


def _check_permutable(model: nn.Module, layers: list[Layer], inputs: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    state = {n: p.detach() for n, p in model.named_parameters()}
    perms = [torch.randperm(state[l.weight].shape[0], generator=g) for l in layers[:-1]]
    permuted = _copy_with(model, permute(state, layers, perms))
    with torch.no_grad():
        before, after = model(inputs), permuted(inputs)
    if not torch.allclose(before, after, rtol=1e-4, atol=1e-4 * float(before.abs().max().clamp_min(1.0))):
        raise NndiffError(
            "permuting this model's hidden units changes its outputs (residual connections or reshapes between "
            "its layers?), so weight matching would break it; collect with --align none"
        )


def _copy_with(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    out = copy.deepcopy(model)
    out.load_state_dict(state, strict=False)
    return out


def _inputs_first(w: torch.Tensor, units: int) -> torch.Tensor:
    """A weight with its input dimension split into (units, rest) and moved first: [units, -1]."""
    w = w.reshape(w.shape[0], units, -1)  # a Linear after a flatten: channel-major blocks per unit
    return w.transpose(0, 1).reshape(units, -1)


def permute(state: dict[str, torch.Tensor], layers: list[Layer], perms: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The chain's weights with hidden layer i's units reordered by perms[i] (unit j of the result is
    unit perms[i][j] of `state`); the network computes the same function."""
    out = dict(state)
    for i, layer in enumerate(layers):
        w = state[layer.weight]
        if i > 0:  # inputs: the previous layer's units, each maybe a block of flattened positions
            units = len(perms[i - 1])
            w = w.reshape(w.shape[0], units, -1, *w.shape[2:])[:, perms[i - 1]].reshape(w.shape)
        if i < len(perms):
            w = w[perms[i]]
            if layer.bias is not None:
                out[layer.bias] = state[layer.bias][perms[i]]
        out[layer.weight] = w
    return out


def match(
    reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], layers: list[Layer], seed: int = 0
) -> list[torch.Tensor]:
    """The permutations of `other`'s hidden units that bring its weights closest to `reference`'s
    (coordinate ascent on the summed inner products, in a random order of layers per pass)."""
    ref = {k: v.detach().double() for k, v in reference.items()}
    oth = {k: v.detach().double() for k, v in other.items()}
    sizes = [ref[l.weight].shape[0] for l in layers[:-1]]
    perms = [torch.arange(n) for n in sizes]
    rng = np.random.default_rng(seed)
    for _ in range(MAX_PASSES):
        changed = False
        for i in rng.permutation(len(sizes)):
            gain = _gain(ref, oth, layers, perms, i=i)
            rows, cols = linear_sum_assignment(gain.numpy(), maximize=True)
            new = torch.as_tensor(cols[np.argsort(rows)])
            unit = torch.arange(len(new))
            # only a strict improvement is taken, so ties cannot make it cycle
            if float(gain[unit, new].sum()) > float(gain[unit, perms[i]].sum()) + 1e-9:
                perms[i], changed = new, True
        if not changed:
            break
    return perms


def _gain(ref, oth, layers: list[Layer], perms: list[torch.Tensor], *, i: int) -> torch.Tensor:
    """gain[j, k]: how much of the inner product unit k of `other` earns in position j of hidden layer i,
    the other layers' permutations held fixed."""
    units = len(perms[i])
    a, b = ref[layers[i].weight], oth[layers[i].weight]  # units are the outputs here
    if i > 0:
        prev = len(perms[i - 1])
        b = b.reshape(b.shape[0], prev, -1, *b.shape[2:])[:, perms[i - 1]].reshape(b.shape)
    gain = a.reshape(units, -1) @ b.reshape(units, -1).T
    if layers[i].bias is not None:
        gain += ref[layers[i].bias][:, None] * oth[layers[i].bias][None, :]
    a, b = ref[layers[i + 1].weight], oth[layers[i + 1].weight]  # units are the inputs here
    if i + 1 < len(perms):
        b = b[perms[i + 1]]
    return gain + _inputs_first(a, units) @ _inputs_first(b, units).T


def align(reference: nn.Module, model: nn.Module, layers: list[Layer], seed: int = 0) -> dict:
    """Permute `model`'s hidden units in place towards `reference` (weight matching); returns how far
    its weights were from the reference's before and after (Euclidean, all matched parameters)."""
    ref = {n: p.detach() for n, p in reference.named_parameters()}
    state = {n: p.detach() for n, p in model.named_parameters()}
    perms = match(ref, state, layers, seed)
    aligned = permute(state, layers, perms)
    names = [n for l in layers for n in (l.weight, l.bias) if n is not None]

    def distance(s: dict) -> float:
        return float(torch.sqrt(sum(((s[n].double() - ref[n].double()) ** 2).sum() for n in names)))

    before, after = distance(state), distance(aligned)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(aligned[n])
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms)
    return {"distance_before": before, "distance_after": after, "units_moved": moved}
