"""How many threads to compute with: the cores this process may use, not the cores the machine has.

PyTorch already follows the CPU affinity (`taskset`, a scheduler's cpuset), but not a container's
CPU quota (cgroup v2 `cpu.max`, cgroup v1 `cpu.cfs_quota_us`): a job limited to 2 CPUs on a 64-core
machine would run 64 threads that take turns on 2 CPUs' worth of time, mostly waiting. The command
line lowers torch's thread count to the quota; OMP_NUM_THREADS, when set, is the user's choice and is
left alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def quota_cores(cpu_max: str | None = None, cfs: tuple[str, str] | None = None) -> int | None:
    """The CPUs' worth of time a cgroup quota allows, rounded up (None: no quota). `cpu_max`: the
    text of cgroup v2's cpu.max ("max 100000", "150000 100000"); `cfs`: cgroup v1's quota and period."""
    try:
        if cpu_max is not None:
            quota, period = cpu_max.split()[:2]
        elif cfs is not None:
            quota, period = cfs
        else:
            return None
        if quota.strip() in ("max", "-1"):
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None  # unreadable: as if there were none


def usable_cores() -> int:
    """The cores this process may use: its affinity, within its cgroup's quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = quota_cores(_read(CGROUP / "cpu.max"))
    if quota is None:
        v1 = _read(CGROUP / "cpu" / "cpu.cfs_quota_us"), _read(CGROUP / "cpu" / "cpu.cfs_period_us")
        quota = quota_cores(cfs=v1) if None not in v1 else None
    return min(cores, quota) if quota else cores


def follow_usable_cores() -> int:
    """Lower torch's thread count to the usable cores unless OMP_NUM_THREADS says otherwise; the
    count in use."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        wanted = usable_cores()
        if torch.get_num_threads() > wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
