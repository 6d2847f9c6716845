"""Data-parallel training with torchrun: 2 CPU processes over gloo, as CI can run it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nndiff.cli import main
from nndiff.errors import NndiffError
from nndiff.runtime import init_distributed
from nndiff.zoo import CollectConfig, Zoo, collect

from .conftest import TINY_RUN

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nndiff"]
CPU_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a machine with GPUs


def torchrun(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(TORCHRUN + args, capture_output=True, text=True, timeout=600, env=CPU_ENV)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result

TRAIN = ["--ae-steps", "300", "--diffusion-steps", "600"]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "zoo"
    collect("digits-cnn", CollectConfig(k=60, heldout=0), progress=False).save(out)
    return out


def test_two_process_training_matches_one_process(zoo_dir, tmp_path):
    runs = {}
    for procs in (1, 2):
        run = tmp_path / f"r{procs}"
        train = ["--quiet", "train", "--zoo", str(zoo_dir), "--out", str(run), *TRAIN]
        if procs == 1:
            assert main(train + ["--device", "cpu"]) == 0
        else:
            torchrun(train)
        assert main(["--quiet", "generate", "--run", str(run), "-n", "50", "--device", "cpu"]) == 0
        assert main(["--quiet", "evaluate", "--run", str(run), "--device", "cpu"]) == 0
        runs[procs] = json.loads((run / "metrics.json").read_text())
        assert json.loads((run / "train_stats.json").read_text())["processes"] == procs
        assert not (run / ".progress").exists()
    one, two = runs[1]["generated"]["test_acc"], runs[2]["generated"]["test_acc"]
    assert abs(one["mean"] - two["mean"]) <= 1.0, (one, two)
    assert abs(two["mean"] - runs[2]["originals"]["test_acc"]["mean"]) <= 1.0


def test_sharded_collection_equals_one_process(tmp_path):
    """Rank 0 trains the base model, the runs are dealt out over the ranks, evaluation is shared:
    the zoo is the one a single process collects, bit for bit."""
    args = ["--quiet", "collect", "--task", "digits-cnn", "-k", "30", "--runs", "3", "--burn-in", "10", "--heldout", "8",
            "--epochs", "3"]
    torchrun(args + ["--out", str(tmp_path / "two")])
    # torchrun gives each worker one thread; so does the reference, or float sums differ in their last bits
    subprocess.run([sys.executable, "-m", "nndiff", *args, "--out", str(tmp_path / "one")], check=True,
                   env={**CPU_ENV, "OMP_NUM_THREADS": "1"})
    two, one = Zoo.load(tmp_path / "two"), Zoo.load(tmp_path / "one")
    assert torch.equal(two.params, one.params) and torch.equal(two.heldout, one.heldout)
    assert two.snapshots == one.snapshots and two.heldout_snapshots == one.heldout_snapshots
    assert not (tmp_path / "two" / ".progress").exists()


def test_the_whole_run_under_torchrun_with_sharded_evaluation(tmp_path):
    out = tmp_path / "run"
    result = torchrun(TINY_RUN + ["--out", str(out)])
    assert "generated" in result.stdout and result.stdout.count("weight average") == 1  # rank 0 alone prints
    sharded = json.loads((out / "metrics.json").read_text())
    assert (out / "report" / "report.md").is_file() and not (out / ".progress").exists()
    torchrun(["--quiet", "evaluate", "--run-dir", str(out)])  # evaluation alone, sharded
    assert json.loads((out / "metrics.json").read_text())["generated"] == sharded["generated"]
    assert main(["--quiet", "evaluate", "--run", str(out), "--device", "cpu"]) == 0  # one process evaluates everything itself
    single = json.loads((out / "metrics.json").read_text())
    assert sharded["generated"]["test_acc"] == single["generated"]["test_acc"]
    assert sharded["generated"]["count"] == 6


def test_data_parallel_training_resumes_after_sigkill(zoo_dir, tmp_path):
    args = ["--quiet", "train", "--zoo", str(zoo_dir), "--ae-steps", "300", "--diffusion-steps", "600"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(TORCHRUN + args + ["--out", str(killed)], start_new_session=True, env=CPU_ENV)
    deadline = time.time() + 300
    while not (killed / ".progress" / "diffusion.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)
    _kill_tree(proc.pid)  # torchrun and both workers, as if the machine went down
    proc.wait()
    one = subprocess.run([sys.executable, "-m", "nndiff", *args, "--out", str(killed)], capture_output=True, text=True, env=CPU_ENV)
    assert one.returncode == 2 and "another number of processes" in one.stderr  # saved by 2, refused to 1
    torchrun(args + ["--out", str(killed)])
    torchrun(args + ["--out", str(clean)])
    a = json.loads((killed / "train_stats.json").read_text())
    assert a["autoencoder"]["resumed_at_step"] == 300 and a["diffusion"]["resumed_at_step"] in (250, 500)
    for name in ("autoencoder.safetensors", "denoiser.safetensors"):
        x, y = load_file(killed / name), load_file(clean / name)
        assert all(torch.equal(x[k], y[k]) for k in x), name  # every rank's random stream was restored
    assert not (killed / ".progress").exists()


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while any(Path(f"/proc/{p}").exists() and p != pid for p in tree) and time.time() < deadline:
        time.sleep(0.05)  # until the workers are gone and their directory lock is free


def test_other_commands_refuse_to_run_under_torchrun(tiny_run):
    result = torchrun(["--quiet", "generate", "--run-dir", str(tiny_run), "-n", "3"], check=False)
    assert result.returncode != 0
    assert "`generate` runs as one process; under torchrun run one of run, collect, train, evaluate" in result.stderr


def test_more_processes_than_gpus_is_refused_before_joining(monkeypatch):
    """nccl cannot put two processes on one GPU: say so instead of failing inside the process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(NndiffError, match=r"2 processes on this node, which has 1 GPU\(s\).*--nproc_per_node 1.*--device cpu"):
        init_distributed("auto")
