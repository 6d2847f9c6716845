"""Data-parallel training with torchrun: 2 CPU processes over gloo, as CI can run it."""

import json
import subprocess
import sys

import pytest

from nndiff.cli import main
from nndiff.zoo import CollectConfig, collect

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
            assert main(train) == 0
        else:
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "nndiff", *train], check=True, timeout=600)
        assert main(["--quiet", "generate", "--run", str(run), "-n", "50"]) == 0
        assert main(["--quiet", "evaluate", "--run", str(run)]) == 0
        runs[procs] = json.loads((run / "metrics.json").read_text())
        assert json.loads((run / "train_stats.json").read_text())["processes"] == procs
        assert not (run / ".progress").exists()
    one, two = runs[1]["generated"]["test_acc"], runs[2]["generated"]["test_acc"]
    assert abs(one["mean"] - two["mean"]) <= 1.0, (one, two)
    assert abs(two["mean"] - runs[2]["originals"]["test_acc"]["mean"]) <= 1.0


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "nndiff", "--quiet", "collect", "--task", "digits-cnn", "--out", str(tmp_path / "z")],
                            capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "only `train` runs data-parallel under torchrun; run `collect` as one process" in result.stderr
    assert not (tmp_path / "z").exists()
