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

from nndiff.cli.main import main
from nndiff.errors import NndiffError
from nndiff.runtime.distributed import init_distributed
from nndiff.zoo.format import Zoo

from .conftest import TINY_RUN, TRAIN_SHORT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nndiff"]
CPU_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a machine with GPUs


def torchrun(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(TORCHRUN + args, capture_output=True, text=True, timeout=600, env=CPU_ENV)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result

@pytest.fixture(scope="module")
def two_process_run(trained_run, tmp_path_factory):
    """trained_run's zoo and training settings, trained by 2 processes."""
    run = tmp_path_factory.mktemp("ddp") / "r2"
    torchrun(["--quiet", "train", "--zoo", str(trained_run / "zoo"), "--out", str(run), *TRAIN_SHORT])
    return run


def test_two_process_training_matches_one_process(trained_run, two_process_run):
    """The same zoo and settings trained by 2 processes: every rank ends with the same weights (the
    run checks it, see test_ranks_that_disagree_are_refused) and the models are as good as one
    process's (the ranks draw other random batches than a single process, so not bit-equal)."""
    run = two_process_run
    assert main(["--quiet", "generate", "--run", str(run), "-n", "50", "--device", "cpu"]) == 0
    assert main(["--quiet", "evaluate", "--run", str(run), "--device", "cpu"]) == 0
    two, one = json.loads((run / "metrics.json").read_text()), json.loads((trained_run / "metrics.json").read_text())
    assert json.loads((run / "train_stats.json").read_text())["processes"] == 2
    assert json.loads((trained_run / "train_stats.json").read_text())["processes"] == 1
    assert not (run / ".progress").exists()
    a, b = one["generated"]["test_acc"]["mean"], two["generated"]["test_acc"]["mean"]
    assert abs(a - b) <= 1.0, (a, b)
    assert abs(b - two["originals"]["test_acc"]["mean"]) <= 1.0
    # trained as far as one process: the losses and the spread of what they generate agree (a rank
    # that trained on nothing, or on everything twice, would show in these long before in accuracy)
    s1, s2 = (json.loads((r / "train_stats.json").read_text()) for r in (trained_run, run))
    assert 2 / 3 < s2["autoencoder"]["reconstruction_mse"] / s1["autoencoder"]["reconstruction_mse"] < 1.5
    assert 2 / 3 < s2["diffusion"]["final_loss"] / s1["diffusion"]["final_loss"] < 1.5
    from nndiff.analysis.distribution import spread_ratio
    from nndiff.generator.generated import read_generated
    from nndiff.zoo.format import Zoo

    layout = Zoo.load(trained_run / "zoo").layout
    ratio = spread_ratio(read_generated(run, layout), read_generated(trained_run, layout))["median"]
    assert 2 / 3 < ratio < 1.5, ratio


def _agree_worker(rank: int, port: int, same: bool, out) -> None:
    import torch.distributed as dist
    from torch import nn

    from nndiff.runtime.distributed import check_ranks_agree

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0 if same else rank)
    try:
        check_ranks_agree(nn.Linear(4, 3))
        out.put((rank, "agree"))
    except NndiffError as e:
        out.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("same", [True, False])
def test_ranks_that_disagree_are_refused(same):
    """What a missing gradient all-reduce does (each rank keeps its own weights) is caught."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_agree_worker, args=(r, port, same, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    if same:
        assert results == {0: "agree", 1: "agree"}
    else:
        assert all("different weights" in v for v in results.values()), results


def test_sharded_collection_equals_one_process(tmp_path):
    """The runs are dealt out over the ranks, evaluation is shared: from the same base model the zoo is
    the one a single process collects, bit for bit. (A base model trained data-parallel differs from a
    single process's in the last bits of its gradient sums; it is tested below.)"""
    from safetensors.torch import save_file

    from nndiff.tasks import get_task

    torch.manual_seed(0)
    save_file(get_task("digits-cnn").make_model().state_dict(), tmp_path / "base.safetensors")
    args = ["--quiet", "collect", "--task", "digits-cnn", "-k", "30", "--runs", "3", "--burn-in", "10", "--heldout", "8",
            "--base", str(tmp_path / "base.safetensors")]
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
    rows = [line for line in result.stdout.splitlines() if line.startswith("weight average ")]
    assert "generated" in result.stdout and len(rows) == 1  # rank 0 alone prints the table
    sharded = json.loads((out / "metrics.json").read_text())
    assert (out / "report" / "report.md").is_file() and not (out / ".progress").exists()
    torchrun(["--quiet", "evaluate", "--run-dir", str(out)])  # evaluation alone, sharded
    assert json.loads((out / "metrics.json").read_text())["generated"] == sharded["generated"]
    assert main(["--quiet", "evaluate", "--run", str(out), "--device", "cpu"]) == 0  # one process evaluates everything itself
    single = json.loads((out / "metrics.json").read_text())
    assert sharded["generated"]["test_acc"] == single["generated"]["test_acc"]
    assert sharded["generated"]["count"] == 6


def test_data_parallel_training_resumes_after_sigkill(trained_run, two_process_run, tmp_path):
    args = ["--quiet", "train", "--zoo", str(trained_run / "zoo"), *TRAIN_SHORT]
    killed, clean = tmp_path / "killed", two_process_run  # clean: the same training, never interrupted
    proc = subprocess.Popen(TORCHRUN + args + ["--out", str(killed)], start_new_session=True, env=CPU_ENV)
    deadline = time.time() + 300
    while not (killed / ".progress" / "diffusion.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)
    _kill_tree(proc.pid)  # torchrun and both workers, as if the machine went down
    proc.wait()
    one = subprocess.run([sys.executable, "-m", "nndiff", *args, "--out", str(killed)], capture_output=True, text=True, env=CPU_ENV)
    assert one.returncode == 2 and "differing: the number of processes" in one.stderr  # saved by 2, refused to 1
    torchrun(args + ["--out", str(killed)])
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


def test_the_process_group_gets_an_explicit_timeout(monkeypatch):
    """120 minutes, or $NNDIFF_DIST_TIMEOUT_MINUTES, instead of the backend's default (10 minutes with
    NCCL, which a rank training alone at ImageNet scale outlasts); a bad value is a one-line error."""
    import datetime

    import torch.distributed as dist

    joined = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: joined.update(backend=backend, **kw))
    assert init_distributed("cpu") and joined == {"backend": "gloo", "timeout": datetime.timedelta(minutes=120)}
    monkeypatch.setenv("NNDIFF_DIST_TIMEOUT_MINUTES", "300")
    init_distributed("cpu")
    assert joined["timeout"] == datetime.timedelta(minutes=300)
    monkeypatch.setenv("NNDIFF_DIST_TIMEOUT_MINUTES", "soon")
    with pytest.raises(NndiffError, match="NNDIFF_DIST_TIMEOUT_MINUTES must be a positive number"):
        init_distributed("cpu")


def _vision_or_skip():
    if not os.environ.get("CI"):
        pytest.importorskip("torchvision")
        pytest.importorskip("timm")


def test_two_process_streamed_vision_collection_equals_one_process(tmp_path):
    """Image files streamed through DataLoader workers, the runs dealt out over 2 processes: the zoo is a
    single process's, bit for bit (same base model, given with --base)."""
    _vision_or_skip()
    from safetensors.torch import save_file

    from nndiff.tasks import get_task
    from tests.vision_fixtures import write_imagenet

    root = write_imagenet(tmp_path / "data")
    torch.manual_seed(0)
    save_file(get_task("imagenet-resnet18", str(root), 32).make_model().state_dict(), tmp_path / "base.safetensors")
    args = ["--quiet", "collect", "--task", "imagenet-resnet18", "--data-root", str(root), "--image-size", "32",
            "--base", str(tmp_path / "base.safetensors"), "-k", "6", "--runs", "2", "--burn-in", "3", "--heldout", "2",
            "--lr", "0.05"]
    torchrun(args + ["--out", str(tmp_path / "two")])
    subprocess.run([sys.executable, "-m", "nndiff", *args, "--out", str(tmp_path / "one")], check=True,
                   env={**CPU_ENV, "OMP_NUM_THREADS": "1"})
    two, one = Zoo.load(tmp_path / "two"), Zoo.load(tmp_path / "one")
    assert torch.equal(two.params, one.params) and torch.equal(two.heldout, one.heldout)
    assert two.snapshots == one.snapshots


BATCH_LOG = '''
import os
from nndiff.tasks.digits import digits_cnn

def make_task():
    task = digits_cnn()
    task.base_epochs = 2
    def train_step(model, x, y, opt):
        with open(os.path.join(os.environ["BATCH_LOG"], os.environ.get("RANK", "0")), "a") as f:
            f.write(f"{type(model).__name__} {len(x)}\\n")
        return type(task).train_step(task, model, x, y, opt)
    task.train_step = train_step
    return task
'''


def test_base_training_under_torchrun_is_data_parallel(tmp_path):
    """Both ranks train the base model, each on half of every batch with gradients averaged (DDP), and
    end with the same weights; the base model is not rank 0's alone while the others wait."""
    (tmp_path / "task.py").write_text(BATCH_LOG)
    logs = tmp_path / "logs"
    logs.mkdir()
    args = ["--quiet", "collect", "--task", f"{tmp_path / 'task.py'}:make_task", "-k", "4", "--burn-in", "2",
            "--heldout", "0", "--lr", "0.5", "--out", str(tmp_path / "zoo")]
    result = subprocess.run(TORCHRUN + args, capture_output=True, text=True, timeout=600,
                            env={**CPU_ENV, "BATCH_LOG": str(logs)})
    assert result.returncode == 0, result.stderr[-3000:]
    from nndiff.tasks.digits import digits_cnn

    task = digits_cnn()
    steps = 2 * (len(task.splits()["train"]) // task.batch_size)  # 2 epochs
    for r in ("0", "1"):
        lines = (logs / r).read_text().splitlines()
        base = [line for line in lines if line.startswith("DistributedDataParallel")]
        assert len(base) == steps and set(base) == {f"DistributedDataParallel {task.batch_size // 2}"}, (r, lines[:3])
