"""Device choice and seeding, shared by every stage."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import NndiffError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise NndiffError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise NndiffError("--device cuda was asked for but PyTorch sees no CUDA device; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed the global RNGs (for module initialisation) and return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- data-parallel training (torchrun)


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


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
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return True


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

    from .storage import DirectoryLock

    return DirectoryLock(directory) if is_main() else contextlib.nullcontext()
