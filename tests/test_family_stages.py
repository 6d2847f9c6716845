"""A family run is a stage like any other: killed (SIGKILL) at any point and run again it equals an
uninterrupted run, `generate --code` never reads a mix of two runs, and `--fresh` starts over."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nndiff.cli.main import main
from nndiff.families.run import run_family
from tests.checks import tiny_family

ROOT = Path(__file__).resolve().parent.parent
# The tiny family run, killed with SIGKILL right after the N-th os.replace whose target is named NAME
# (every atomic write and every move into place is one), or on entering the N-th call of
# nndiff.families.run.NAME.
KILLER = """
import os, signal, sys
kind, name, nth, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = [0]
def tick():
    seen[0] += 1
    if seen[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
import nndiff.families.run as run
if kind == "replace":
    real = os.replace
    def replace(src, dst, *a, **k):
        real(src, dst, *a, **k)
        if os.path.basename(str(dst)) == name:
            tick()
    os.replace = replace
else:
    real = getattr(run, name)
    def called(*a, **k):
        tick()
        return real(*a, **k)
    setattr(run, name, called)
from tests.checks import tiny_family
run.run_family(tiny_family(), out, progress=False, log=lambda *_: None)
"""
SAME = ("trained", "regression", "regression_tuned", "diffusion", "retrieval_nearest", "zoo_mean")
POINTS = [
    ("replace", "trunk.safetensors", 2),  # the trunk: its progress saved after its second epoch
    ("replace", "heads.safetensors", 1),  # the heads: written, their manifest not yet
    ("call", "tune", 1),  # the generators: the plain regressions and the diffusion trained, the tuned one not
    ("call", "heldout_methods", 1),  # the evaluation on the held-out tasks
    ("replace", "report.md", 1),  # the report, after the results' commit
]


def same_results(a: dict, b: dict) -> None:
    assert a["chosen_on_validation_tasks"]["val_acc_mean"] == b["chosen_on_validation_tasks"]["val_acc_mean"]
    for name in SAME:
        assert a[name]["per_task"] == b[name]["per_task"], name


def killed(kind: str, name: str, nth: int, out: Path) -> None:
    result = subprocess.run([sys.executable, "-c", KILLER, kind, name, str(nth), str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == -signal.SIGKILL, (kind, name, result.stderr[-2000:])


def test_a_family_run_killed_at_each_stage_resumes_to_an_uninterrupted_run(family_run, tmp_path, capsys):
    """SIGKILL during the trunk, the heads, the generators, the evaluation and the report, each time
    followed by a rerun that is killed at the next point: the last rerun equals an uninterrupted run,
    and `generate --code` in between either refuses an unfinished run or labels the task right."""
    out = tmp_path / "run"
    manifest = json.loads((family_run[0] / "family" / "manifest.json").read_text())
    held_out_code = manifest["codes"][manifest["tasks"]["heldout"][0]]
    for point in POINTS:
        killed(*point, out)
        code = main(["--quiet", "generate", "--run", str(out), "--code", held_out_code])
        err = capsys.readouterr().err
        if (out / "metrics.json").is_file():
            assert code == 0, err
            assert json.loads((out / "generated" / "info.json").read_text())["seen"] == "unseen"
        else:
            assert code == 2 and "is not a finished family run" in err, err
    again = run_family(tiny_family(), out, progress=False, log=lambda *_: None)
    same_results(again, family_run[1])
    for rel in ("family/base.safetensors", "family/heads.safetensors", "regression_tuned.safetensors"):
        a, b = load_file(out / rel), load_file(family_run[0] / rel)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in b), rel
    assert not (out / ".progress").exists() and not list(out.glob(".*.staging"))


def test_a_family_run_killed_inside_its_commit_is_finished_by_the_next_command(family_run, tmp_path):
    """Killed in the middle of its commit (metrics.json moved in, the regressions not yet: the moves
    go in name order): `generate --code` finishes the moves under the lock and reads the generators
    and metrics of one run, not a mix."""
    out = tmp_path / "run"
    killed("replace", "metrics.json", 2, out)  # the 1st is the staged write, the 2nd its move into place
    assert list(out.glob(".family.staging"))
    assert main(["--quiet", "generate", "--run", str(out), "--code", "0110100101"]) == 0
    assert not list(out.glob(".*.staging"))
    same_results(json.loads((out / "metrics.json").read_text()), family_run[1])


def test_fresh_starts_over_and_other_settings_without_it_are_refused(family_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(family_run[0], out)
    other = tiny_family()
    other.seed = 1
    with pytest.raises(Exception, match="pass --fresh"):
        run_family(other, out, progress=False, log=lambda *_: None)
    trunk = (out / "family" / "base.safetensors").stat().st_ino
    (out / "generated").mkdir()
    (out / "generated" / "000000.safetensors").write_bytes(b"of the old run")
    m = run_family(other, out, progress=False, log=lambda *_: None, fresh=True)
    assert json.loads((out / "family.json").read_text())["settings"]["seed"] == 1
    assert (out / "family" / "base.safetensors").stat().st_ino != trunk  # trained again, not reused
    assert not (out / "generated").exists()  # nothing of the old run is left beside the new one
    split = json.loads((out / "family" / "manifest.json").read_text())["tasks"]
    old = json.loads((family_run[0] / "family" / "manifest.json").read_text())["tasks"]
    assert split != old and m["tasks"]["heldout"] == len(split["heldout"])
