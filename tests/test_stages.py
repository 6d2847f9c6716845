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
real_exchange = getattr(files, "exchange", None)
def exchange(a, b):
    real_exchange(a, b)
    if point == "exchange":
        os.kill(os.getpid(), signal.SIGKILL)
if real_exchange is not None:
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


def test_train_killed_at_any_point_leaves_the_old_generator_or_the_new_one_whole(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = digests(run, GENERATOR)
    whole = killed("never", TRAIN, run)
    assert whole.returncode == 0, whole.stderr
    r = int(whole.stderr.split("replaces=")[1].split()[0])
    # the last 13 replaces: six files written into staging (r-12..r-7), the commit record (r-6), six moves (r-5..r);
    # killed after the last checkpoint, the first staged file, the commit record, the first and the last move
    for point in (r - 13, r - 12, r - 6, r - 5, r):
        shutil.rmtree(run)
        shutil.copytree(tiny_run, run)
        result = killed(point, TRAIN, run)
        assert result.returncode == -signal.SIGKILL, (point, result.stderr)
        committed = (run / ".train.staging" / "COMMIT").exists()
        assert committed == (point >= r - 6), point
        if not committed:
            assert digests(run, GENERATOR) == old, point  # nothing was moved in before the commit record
        capsys.readouterr()
        assert main(["--quiet", "generate", "--run", str(run), "-n", "2", "--steps", "2"]) == 0, point
        said = capsys.readouterr().err
        assert len(stages(run)) == 1 and not list(run.glob(".*.staging")), point
        if committed:
            assert "had written all its files: they are now in place" in said, point
            assert not set(digests(run, GENERATOR).values()) & set(old.values()), point  # all new
        else:
            assert digests(run, GENERATOR) == old, point
            assert ("left unfinished files; they were removed" in said) == (point >= r - 12), (point, said)


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
    for point in (1, r, "exchange"):
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        assert killed(point, report, run).returncode == -signal.SIGKILL, point
        assert digests(run / "report", names) == (new if point == "exchange" else old), point
        assert main(["--quiet", "report", "--run", str(run), "--seed", "1"]) == 0
        assert digests(run / "report", names) == new and not list(run.glob(".report*")), point


def test_a_partly_nonfinite_set_is_written_with_a_warning(run, monkeypatch, capsys):
    from nndiff.generator.sampler import ParamGenerator

    sample = ParamGenerator.sample

    def one_nan(self, n, *a, **k):
        x = sample(self, n, *a, **k)
        x[1, 0] = float("nan")
        return x

    monkeypatch.setattr(ParamGenerator, "sample", one_nan)
    assert main(["--quiet", "generate", "--run", str(run), "-n", "4", "--steps", "2"]) == 0
    out, err = capsys.readouterr()
    assert "nndiff: warning: 1 of 4 sampled models (25%) contain NaN or Inf" in err
    assert "replaced the 6 models (seed 0, 10 steps)" in out and "removed metrics.json and report" in out
    assert len(list((run / "generated").glob("*.safetensors"))) == 4


def test_run_again_keeps_what_it_does_not_rewrite_and_says_what_it_replaces(run, capsys):
    from tests.conftest import TINY_RUN

    report = digests(run / "report", ["report.md", "novelty.json"])
    again = [*TINY_RUN, "--out", str(run), "--no-report"]
    assert main(again) == 0
    out = capsys.readouterr().out
    assert "holds the 6 models this generator samples with these settings" in out  # nothing regenerated
    assert digests(run / "report", ["report.md", "novelty.json"]) == report
    assert main([*again, "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert "replaced the 6 models (seed 0, 10 steps)" in out and "report/ still describes them" in out
    assert digests(run / "report", ["report.md", "novelty.json"]) == report  # kept, and said to be about the old set
    assert json.loads((run / "metrics.json").read_text())["generated"]["count"] == 4


def test_retraining_says_the_generated_set_is_the_previous_generators(run, capsys):
    assert main(["--quiet", "train", "--zoo", str(run / "zoo"), "--out", str(run), "--ae-steps", "3",
                 "--diffusion-steps", "3", "--fresh"]) == 0
    assert "holds models of the previous generator" in capsys.readouterr().err
    assert main(["--quiet", "doctor", "--run", str(run)]) in (0, 1)
    assert "SKIP  generator" in capsys.readouterr().out
    assert main(["--quiet", "generate", "--run", str(run), "-n", "2", "--steps", "2"]) == 0
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0


def test_a_full_standard_output_is_one_line():
    result = subprocess.run(f"{sys.executable} -m nndiff tasks > /dev/full", shell=True, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr


def test_an_unwritable_cache_costs_time_not_the_run(tmp_path, monkeypatch):
    from nndiff.tasks.mnist1d import load_mnist1d

    (tmp_path / "cache").write_text("a file where the cache directory should be")
    monkeypatch.setenv("NNDIFF_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="the MNIST-1D data is not cached: cannot write"):
        splits = load_mnist1d(40, 10, 10)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [40, 10, 10]


def test_one_snapshot_gives_messages_not_nan(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["--quiet", "run", "--task", "digits-cnn", "-k", "1", "--heldout", "0", "--burn-in", "5",
                 "--ae-steps", "3", "--diffusion-steps", "3", "-n", "3", "--steps", "2", "--out", str(out)]) == 0
    verdict = json.loads((out / "report" / "novelty.json").read_text())["verdict"]
    assert any("single training snapshot" in line for line in verdict)
    assert not any("nan" in line for line in verdict), verdict
    capsys.readouterr()
    assert main(["--quiet", "doctor", "--run", str(out)]) == 1
    doctor = capsys.readouterr().out
    assert "a single snapshot" in doctor and "nan" not in doctor, doctor


def test_a_yaml_bomb_is_refused_with_little_memory(tmp_path):
    """The refusal reads the text's structure, never the expansion: the process grows by under
    100 MB (its time is measured in bench/yaml_bomb.py)."""
    from tests.test_trust import _bomb

    (tmp_path / "bomb.yaml").write_text(_bomb())
    code = (
        "import resource, sys\n"
        "from nndiff.errors import NndiffError\n"
        "from nndiff.io.files import load_yaml\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    load_yaml(sys.argv[1])\nexcept NndiffError as e:\n    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bomb.yaml")], capture_output=True, text=True,
                            timeout=120)
    message, grown_mb = result.stdout.splitlines()
    assert "expands to more than 100,000 values" in message
    assert int(grown_mb) < 100
