"""A stage replaces its outputs as a whole or not at all, and a run whose files do not belong
together is refused: SIGKILL at many points of `train --fresh` and `report`, mixed and stale files,
and results that are never silently replaced by worse ones."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from nndiff.cli.main import main
from nndiff.io.tensors import load_metadata

# Runs nndiff, killing itself with SIGKILL right after the N-th os.replace (every atomic file write
# and every move into place is one), or right after the report's directory exchange (N = "exchange").
KILLER = """
import os, signal, sys
point, real = sys.argv[1], os.replace
count = [0]
def replace(*a, **k):
    real(*a, **k)
    count[0] += 1
    if point.isdigit() and count[0] == int(point):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
import nndiff.io.files as files
real_exchange = files.exchange
def exchange(a, b):
    real_exchange(a, b)
    if point == "exchange":
        os.kill(os.getpid(), signal.SIGKILL)
files.exchange = exchange
import atexit
atexit.register(lambda: sys.stderr.write(f"replaces={count[0]}\\n"))
from nndiff.cli.main import main
sys.exit(main(sys.argv[2:]))
"""
GENERATOR = ["autoencoder.safetensors", "denoiser.safetensors", "normalizer.safetensors", "train_stats.json",
             "trained_on.json", "config.yaml"]
TRAIN = ["--quiet", "train", "--out", "{run}", "--zoo", "{run}/zoo", "--ae-steps", "7", "--diffusion-steps", "7",
         "--fresh"]


def killed(point, args, run):
    return subprocess.run([sys.executable, "-c", KILLER, str(point), *(a.format(run=run) for a in args)],
                          capture_output=True, text=True, timeout=300)


def digests(run, names):
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in names if (run / n).is_file()}


def stages(run):
    ids = {n: load_metadata(run / n).get("stage") for n in GENERATOR[:3]}
    ids.update({n: json.loads((run / n).read_text()).get("stage") for n in GENERATOR[3:5]})
    return set(ids.values())


@pytest.fixture
def run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_train_killed_at_any_point_leaves_the_old_generator_or_the_new_one_whole(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = digests(run, GENERATOR)
    whole = killed("never", TRAIN, run)
    assert whole.returncode == 0, whole.stderr
    r = int(whole.stderr.split("replaces=")[1].split()[0])
    # the last 13 replaces: six files written into staging (r-12..r-7), the commit record (r-6), six moves (r-5..r)
    for point in (r - 13, r - 12, r - 7, r - 6, r - 5, r - 2, r):
        shutil.rmtree(run)
        shutil.copytree(tiny_run, run)
        result = killed(point, TRAIN, run)
        assert result.returncode == -signal.SIGKILL, (point, result.stderr)
        committed = (run / ".train.staging" / "COMMIT").exists()
        assert committed == (point >= r - 6), point
        if not committed:
            assert digests(run, GENERATOR) == old, point  # nothing was moved in before the commit record
        gen = subprocess.run([sys.executable, "-m", "nndiff", "--quiet", "generate", "--run", str(run), "-n", "2",
                              "--steps", "2"], capture_output=True, text=True, timeout=300)
        assert gen.returncode == 0, (point, gen.stderr)
        assert len(stages(run)) == 1 and not list(run.glob(".*.staging")), point
        if committed:
            assert "had written all its files: they are now in place" in gen.stderr, point
            assert not set(digests(run, GENERATOR).values()) & set(old.values()), point  # all new
        else:
            assert digests(run, GENERATOR) == old, point
            said = "left unfinished files; they were removed" in gen.stderr
            assert said == (point >= r - 12), (point, gen.stderr)


def test_report_killed_at_any_point_leaves_the_old_report_or_the_new_one_whole(run):
    report = ["--quiet", "report", "--run", "{run}", "--seed", "1"]
    names = sorted(p.name for p in (run / "report").iterdir())
    old = digests(run / "report", names)
    pristine = run.parent / "pristine"
    shutil.copytree(run, pristine)
    whole = killed("never", report, run)
    assert whole.returncode == 0, whole.stderr
    new = digests(run / "report", names)
    assert set(new) == set(old) and new["novelty.json"] != old["novelty.json"]  # seed 1: another analysis
    r = int(whole.stderr.split("replaces=")[1].split()[0])
    for point in (1, r // 2, r, "exchange"):
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        assert killed(point, report, run).returncode == -signal.SIGKILL, point
        assert digests(run / "report", names) == (new if point == "exchange" else old), point
        assert main(["--quiet", "report", "--run", str(run), "--seed", "1"]) == 0
        assert digests(run / "report", names) == new and not list(run.glob(".report*")), point
