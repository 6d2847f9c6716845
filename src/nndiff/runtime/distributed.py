"""torchrun: ranks, collectives, sharding of work, and the lock only rank 0 takes."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from nndiff.errors import NndiffError
from nndiff.runtime.device import resolve_device


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


TIMEOUT_ENV = "NNDIFF_DIST_TIMEOUT_MINUTES"


def process_group_timeout():
    """How long a rank waits in a collective for the others: 120 minutes unless $NNDIFF_DIST_TIMEOUT_MINUTES
    says otherwise. Ranks wait on each other where the work is uneven (rank 0 alone probes the
    learning rate and writes the results; runs are dealt out whole), which at ImageNet scale exceeds
    the backends' defaults (10 minutes with NCCL)."""
    import datetime
    import os

    value = os.environ.get(TIMEOUT_ENV, "120")
    try:
        minutes = float(value)
        assert minutes > 0
    except (ValueError, AssertionError):
        raise NndiffError(f"${TIMEOUT_ENV} must be a positive number of minutes (got {value!r})") from None
    return datetime.timedelta(minutes=minutes)


def init_distributed(device: str = "auto") -> bool:
    """Join the process group that torchrun describes in the environment: gloo when the work runs on
    the CPU, nccl with one GPU per process when it runs on CUDA (`device` as in resolve_device).

    Returns whether this process is one of several; a plain `nndiff` call stays single-process.
    """
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if resolve_device(device).type == "cuda":
            local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local >= gpus:
                per_node = os.environ.get("LOCAL_WORLD_SIZE", str(local + 1))
                raise NndiffError(
                    f"torchrun started {per_node} processes on this node, which has {gpus} GPU(s), and each process "
                    f"needs a GPU of its own: start at most {gpus} (--nproc_per_node {gpus}) or pass --device cpu"
                )
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", timeout=process_group_timeout())
        else:
            dist.init_process_group("gloo", timeout=process_group_timeout())
    return True


def check_ranks_agree(*modules: nn.Module) -> None:
    """Under torchrun every rank must end with the same weights: each step's gradients are averaged
    over the ranks. A rank that trained on its own batches alone (no all-reduce) would not."""
    if world_size() == 1:
        return
    digest = hashlib.sha256()
    for module in modules:
        for value in module.state_dict().values():
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digests = all_gather(digest.hexdigest())
    if len(set(digests)) > 1:
        raise NndiffError(
            f"the {len(digests)} processes ended training with different weights, so their gradients were "
            "not averaged; this is a bug, please report it (train with one process meanwhile)"
        )


def data_parallel(model: nn.Module) -> nn.Module:
    """DDP-wrapped under torchrun (gradients averaged over ranks), the model itself otherwise."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers on every rank. DDP sends them at the start of each forward pass, but in that
    pass every rank updates BatchNorm's running statistics from its own share of the batch: after the
    last step they differ by rank until this."""
    import torch.distributed as dist

    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    import torch.distributed as dist

    if world_size() > 1:
        dist.barrier()


def all_gather(obj):
    """Every rank's `obj`, in rank order (`[obj]` in a single process). Move tensors to the CPU first."""
    import torch.distributed as dist

    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank (the object itself in a single process)."""
    import torch.distributed as dist

    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int) -> slice:
    """This rank's contiguous share of n items (all of them in a single process)."""
    per, extra = divmod(n, world_size())
    r = rank()
    start = r * per + min(r, extra)
    return slice(start, start + per + (r < extra))


def main_lock(directory):
    """The directory lock, held by rank 0 alone: the other ranks work alongside it and never write."""
    import contextlib

    from nndiff.io.files import DirectoryLock

    return DirectoryLock(directory) if is_main() else contextlib.nullcontext()
