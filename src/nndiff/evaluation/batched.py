"""Evaluating many parameter sets at once when only part of the network is generated.

The network is traced with torch.fx and split at the first operations that read a generated
parameter: everything before them (the frozen trunk) is computed once per batch of data, and only
the rest runs for all N parameter sets together, vectorized with torch.func.vmap over
functional_call. For the last two BatchNorm layers of a CNN that skips most of the FLOPs.
Models that fx cannot trace fall back to one forward pass per parameter set.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from nndiff.params.layout import Layout
from nndiff.tasks.base import batches


class TrunkAndHead:
    """A traced model split into a frozen trunk and a generated head.

    trunk(x) -> tuple of boundary activations; head(params, *boundary) -> the model's output for
    one parameter set (a dict of the generated parameters).
    """

    def __init__(self, model: nn.Module, layout: Layout):
        # Traced in eval mode: code that reads `self.training` (dropout, drop-path, `if self.training:`)
        # is frozen into the graph as it runs at evaluation time.
        was_training = model.training
        model.eval()
        try:
            gm = fx.symbolic_trace(model)
        finally:
            model.train(was_training)
        selected = set(layout.names)
        owners = {name.rsplit(".", 1)[0] if "." in name else "" for name in selected}
        live: set[fx.Node] = set()
        for node in gm.graph.nodes:
            # fx keeps torch.nn's own modules whole (a TransformerEncoderLayer is one call): a call of a
            # module that contains a generated parameter's owner reads that parameter too
            reads_param = (node.op == "get_attr" and node.target in selected) or (
                node.op == "call_module" and any(o == node.target or o.startswith(f"{node.target}.") for o in owners)
            )
            if reads_param or any(a in live for a in node.all_input_nodes):
                live.add(node)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        if output not in live:
            raise ValueError("the model's output does not depend on the generated parameters")
        boundary = [n for n in gm.graph.nodes if n not in live and n.op != "output" and any(u in live for u in n.users)]

        trunk = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in gm.graph.nodes:
            if node in live or node.op == "output":
                continue
            env[node] = trunk.node_copy(node, lambda n: env[n])
        trunk.output(tuple(env[n] for n in boundary))
        self.trunk = fx.GraphModule(gm, trunk)

        head = fx.Graph()
        env = {n: head.placeholder(f"boundary_{i}") for i, n in enumerate(boundary)}
        for node in gm.graph.nodes:
            if node not in live:
                continue
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.affine:
                # Eval-mode BatchNorm is one affine map per channel: fold it into a single fused
                # multiply-add, which vmap keeps as one pass over the activations.
                stats = [head.get_attr(f"{node.target}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
                env[node] = head.call_function(folded_batch_norm, (env[node.args[0]], *stats[:3]),
                                               {"running_var": stats[3], "eps": module.eps})
            elif _is_relu(node, module) and node.args[0] in live and len(node.args[0].users) == 1:
                # Its input is a head intermediate nothing else reads: rectify in place, saving an
                # allocation per model batch.
                env[node] = head.call_function(torch.relu_, (env[node.args[0]],))
            else:
                env[node] = head.node_copy(node, lambda n: env[n])
        self.head = fx.GraphModule(gm, head)
        self.module = gm  # shares parameters and buffers with the original model

    def head_for(self, params: dict[str, torch.Tensor], boundary: tuple) -> torch.Tensor:
        return functional_call(self.head, params, boundary)


def _is_relu(node: fx.Node, module: nn.Module | None) -> bool:
    if node.op == "call_module":
        return isinstance(module, nn.ReLU)
    return (
        node.op in ("call_function", "call_method")
        and node.target in (torch.relu, F.relu, "relu")
        and len(node.args) == 1
        and not node.kwargs
    )


def folded_batch_norm(x, weight, bias, running_mean, *, running_var, eps: float):
    scale = weight * torch.rsqrt(running_var + eps)
    shift = bias - running_mean * scale
    if x.ndim == 2:
        return torch.addcmul(shift, x, scale)
    # Broadcasting a per-channel factor along a short trailing axis (length 10 in mnist1d-cnn)
    # defeats vectorization: expand it to one factor per feature and run over the flat rows (8x faster).
    features = x.shape[1:]
    scale, shift = (v.view(-1, *(1,) * (x.ndim - 2)).expand(features).reshape(-1) for v in (scale, shift))
    return torch.addcmul(shift, x.flatten(1), scale).view(x.shape)


def trunk_and_head(model: nn.Module, layout: Layout) -> TrunkAndHead | None:
    try:
        return TrunkAndHead(model, layout)
    except Exception:  # fx cannot trace every model (data-dependent control flow, etc.)
        return None


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


@torch.no_grad()
def predict_batched(
    parts: TrunkAndHead,
    layout: Layout,
    params: torch.Tensor,
    x,
    *,
    data_batch: int = 1024,
    model_batch: int = 4,
) -> torch.Tensor:
    """[N, n] class predictions (argmax of the output) of N parameter sets on inputs x (a tensor, or a
    streamed split's images)."""
    if len(params) == 0:
        return torch.empty(0, len(x), dtype=torch.long, device=params.device)
    parts.module.eval()
    outputs = []
    for chunk in batches(x, data_batch):
        boundary = parts.trunk(chunk)
        cols = []
        for ms in _chunks(len(params), model_batch):
            stacked = {e.name: params[ms, e.offset : e.offset + e.numel].reshape(-1, *e.shape) for e in layout.entries}
            with (
                warnings.catch_warnings()
            ):  # ops without a batching rule run one model at a time inside vmap: still right
                warnings.filterwarnings("ignore", message="There is a performance drop")
                logits = vmap(parts.head_for, in_dims=(0, None))(stacked, boundary)
            cols.append(logits.argmax(-1))
        outputs.append(torch.cat(cols))
    return torch.cat(outputs, dim=1)
