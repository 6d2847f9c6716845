"""Threads follow the cores the process may use: a cgroup CPU quota lowers torch's thread count
(PyTorch follows the affinity by itself), and OMP_NUM_THREADS, when a user sets it, wins."""

import pytest
import torch

from nndiff.runtime import threads


@pytest.mark.parametrize("cpu_max,cfs,cores", [
    ("max 100000", None, None),           # cgroup v2, no quota
    ("150000 100000", None, 2),           # 1.5 CPUs' worth: two threads share it
    ("50000 100000", None, 1),
    ("300000 100000", None, 3),
    (None, ("-1", "100000"), None),       # cgroup v1, no quota
    (None, ("200000", "100000"), 2),
    ("garbage", None, None),              # unreadable: as if there were none
    ("100000 0", None, None),
    (None, None, None),
])
def test_a_quota_is_read_as_the_cpus_it_allows(cpu_max, cfs, cores):
    assert threads.quota_cores(cpu_max, cfs) == cores


def test_the_thread_count_is_lowered_to_the_usable_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "usable_cores", lambda: 1)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.follow_usable_cores() == 2  # the user's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert threads.follow_usable_cores() == 1
        monkeypatch.setattr(threads, "usable_cores", lambda: 4)
        assert threads.follow_usable_cores() == 1  # never raised above what torch chose
    finally:
        torch.set_num_threads(before)


def test_usable_cores_reads_the_quota_files_within_the_affinity(tmp_path, monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "CGROUP", tmp_path)  # no quota files: the affinity alone
    assert threads.usable_cores() == cores
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # cgroup v2: one CPU's worth
    assert threads.usable_cores() == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.usable_cores() == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{100000 * (cores + 4)}\n")  # more than the affinity
    assert threads.usable_cores() == cores


def test_every_command_follows_them(monkeypatch, capsys):
    from nndiff.cli.main import main

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "usable_cores", lambda: 1)
        assert main(["tasks"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
