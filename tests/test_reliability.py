"""Atomic files, locks, safe loading, resume after SIGKILL, validation and fuzzing of the loaders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from nndiff import NndiffError
from nndiff.cli.main import main
from nndiff.io.checkpoint import flatten_state, unflatten_state
from nndiff.io.files import DirectoryLock, write_bytes_atomic
from nndiff.io.tensors import load_state_dict
from nndiff.zoo.format import Zoo
from tests.checks import plain_accuracies

NNDIFF = [sys.executable, "-m", "nndiff", "--quiet"]


# ---------------------------------------------------------------- atomic writes and locks

def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_bytes_atomic(path, b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(NndiffError, match="No space left on device"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_locked_directory_refuses_a_second_process_and_frees_on_sigkill(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from nndiff.io.files import DirectoryLock\n"
        f"with DirectoryLock({str(tmp_path)!r}):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(NndiffError, match="in use by another nndiff process"):
            with DirectoryLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with DirectoryLock(tmp_path):  # the kernel dropped the dead process's lock
        with DirectoryLock(tmp_path):  # and the lock is re-entrant within one process
            pass


# ---------------------------------------------------------------- safe loading

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates the marker file


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "base.pt"
    torch.save({"conv1.weight": _Evil(str(marker))}, evil)
    with pytest.raises(NndiffError, match="refused to load"):
        load_state_dict(evil)
    assert not marker.exists()
    code = main(["--quiet", "collect", "--task", "digits-cnn", "--base", str(evil), "-k", "2", "--out", str(tmp_path / "z")])
    assert code == 2 and not marker.exists()


def test_a_plain_pt_state_dict_loads(tmp_path):
    state = {"w": torch.arange(3.0), "b": torch.zeros(2)}
    torch.save(state, tmp_path / "m.pt")
    loaded = load_state_dict(tmp_path / "m.pt")
    assert loaded.keys() == state.keys() and torch.equal(loaded["w"], state["w"])


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_manifest_file_names_cannot_leave_the_zoo(tiny_run, tmp_path, name):
    import shutil

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_run / "zoo", zoo)
    m = json.loads((zoo / "manifest.json").read_text())
    m["files"]["params"] = name
    (zoo / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(NndiffError, match="points outside the zoo directory"):
        Zoo.load(zoo)


def test_nan_in_the_zoo_is_refused(tiny_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_run / "zoo", zoo)
    t = load_file(zoo / "params.safetensors")
    t["params"][3, 0] = float("nan")
    save_file(t, zoo / "params.safetensors")
    with pytest.raises(NndiffError, match="1 snapshot\\(s\\) contain NaN or Inf"):
        Zoo.load(zoo)


def test_nonfinite_generated_models_are_failures_in_every_mean(tiny_run, tmp_path, capsys):
    """One definition: a NaN/Inf model is not evaluated and counts as accuracy 0 in the metrics'
    mean, median and minimum, as in the health check, and the printed words say so."""
    import shutil

    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    accs = plain_accuracies(run, "test")
    f = run / "generated" / "000002.safetensors"
    t = load_file(f)
    t["bn2.bias"][0] = float("inf")
    save_file(t, f)
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    g = m["generated"]
    assert g["nonfinite"] == 1 and g["evaluated"] == 5 and g["count"] == 6
    with_failure = accs[:2] + [0.0] + accs[3:]
    assert g["test_acc"]["mean"] == pytest.approx(sum(with_failure) / 6, abs=1e-6)
    assert g["test_acc"]["min"] == 0.0 and g["selected_by_val"]["index"] != 2
    assert m["comparisons"]["test_acc_mean"]["generated"]["estimate"] == pytest.approx(sum(with_failure) / 6, abs=1e-6)
    assert "counted as failures (accuracy 0" in out


def test_a_set_of_only_nonfinite_models_is_evaluated_and_the_report_says_why_it_stops(tiny_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()
    for f in (run / "generated").glob("*.safetensors"):
        save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(f).items()}, f)
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0
    g = json.loads((run / "metrics.json").read_text())["generated"]
    assert g["nonfinite"] == 6 and g["test_acc"]["mean"] == 0.0 and g["selected_by_val"] is None
    capsys.readouterr()
    before = sorted(p.name for p in (run / "report").iterdir())
    assert main(["--quiet", "report", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "all 6 generated models contain NaN or Inf" in err
    assert sorted(p.name for p in (run / "report").iterdir()) == before


def test_unknown_option_values_exit_with_a_one_line_usage_error(capsys):
    assert main(["generate", "--run", "x", "--sampler", "euler"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nndiff: error: ") and err.count("\n") == 1, err
    assert "invalid choice: 'euler'" in err and "nndiff generate --help" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(NndiffError):
        main(["--debug", "evaluate", "--run", str(tmp_path / "nope")])
    with pytest.raises(NndiffError):  # after the command name too, as the README lists it
        main(["evaluate", "--run", str(tmp_path / "nope"), "--debug"])


def test_warnings_are_one_line_without_a_source_line(capsys, monkeypatch):
    import warnings

    import nndiff.cli.main

    def warn(command, args, quiet):
        warnings.warn("first line\nsecond \x1b[1mbold\x1b[0m", UserWarning)
        warnings.warn("from a library", RuntimeWarning)
        return 0

    monkeypatch.setattr(nndiff.cli.main, "dispatch", warn)
    assert main(["tasks"]) == 0
    assert capsys.readouterr().err == ("nndiff: warning: first line second bold\n"
                                       "nndiff: warning: RuntimeWarning: from a library\n")


def test_a_generated_set_moved_aside_by_a_crash_is_recovered_and_no_old_copy_stays(tiny_run, tmp_path):
    """exchange()'s fallback renames generated/ to generated.old for a moment; a crash there must not
    lose the set nor leave the copy behind on the next generate."""
    import shutil

    from nndiff.generator.generated import read_generated, write_generated

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    zoo = Zoo.load(run / "zoo")
    (run / "generated").rename(run / "generated.old")  # the state between the fallback's two renames
    new = zoo.params[:3]
    write_generated(run, new, zoo.layout, 0, sampler="ddim", steps=10)
    assert not (run / "generated.old").exists() and not (run / ".generated.tmp").exists()
    assert torch.equal(read_generated(run, zoo.layout), new)


# ---------------------------------------------------------------- resume after SIGKILL

def test_checkpoint_state_round_trips_an_optimizer():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, skeleton = flatten_state({"opt": opt.state_dict(), "step": 7})
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["step"] == 7
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    fresh.load_state_dict(back["opt"])
    assert fresh.param_groups[0]["lr"] == 0.1
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _kill_when(proc, path: Path, timeout: float = 600):
    """SIGKILL `proc` as soon as `path` exists (the stage has saved some progress)."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "the stage finished before it could be interrupted"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_collect_resumes_after_sigkill_with_no_missing_or_duplicated_snapshots(tmp_path):
    args = ["collect", "--task", "digits-cnn", "-k", "300", "--runs", "2", "--burn-in", "20", "--heldout", "0"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(NNDIFF + args + ["--out", str(killed)])
    _kill_when(proc, killed / ".progress" / "run0.safetensors")
    assert not (killed / "manifest.json").exists()
    subprocess.run(NNDIFF + args + ["--out", str(killed)], check=True)
    subprocess.run(NNDIFF + args + ["--out", str(clean)], check=True)
    resumed, uninterrupted = Zoo.load(killed), Zoo.load(clean)
    assert len(resumed) == 300
    steps = [(s["run"], s["step"]) for s in resumed.snapshots]
    assert steps == [(r, 21 + i) for r in (0, 1) for i in range(150)]
    assert resumed.info["resumed_at_steps"][0] > 0 and uninterrupted.info["resumed_at_steps"] == [0, 0]
    assert torch.equal(resumed.params, uninterrupted.params)  # resuming changed nothing
    assert not (killed / ".progress").exists()


def test_train_resumes_after_sigkill(tiny_run, tmp_path):
    args = ["train", "--zoo", str(tiny_run / "zoo"), "--ae-steps", "300", "--diffusion-steps", "600"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(NNDIFF + args + ["--out", str(killed)])
    _kill_when(proc, killed / ".progress" / "diffusion.safetensors")
    subprocess.run(NNDIFF + args + ["--out", str(killed)], check=True)
    subprocess.run(NNDIFF + args + ["--out", str(clean)], check=True)
    a = json.loads((killed / "train_stats.json").read_text())
    b = json.loads((clean / "train_stats.json").read_text())
    assert a["autoencoder"]["resumed_at_step"] == 300 and a["diffusion"]["resumed_at_step"] in (250, 500)
    assert b["diffusion"]["resumed_at_step"] == 0
    assert a["diffusion"]["final_loss"] == pytest.approx(b["diffusion"]["final_loss"], rel=1e-6)
    for name in ("autoencoder.safetensors", "denoiser.safetensors"):
        x, y = load_file(killed / name), load_file(clean / name)
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert not (killed / ".progress").exists()


def test_resume_refuses_other_settings(tiny_run, tmp_path):
    out = tmp_path / "r"
    from nndiff.runtime.stage import Stage

    Stage(out).save("config", {"something": "else"})
    code = main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(out), "--ae-steps", "5", "--diffusion-steps", "5"])
    assert code == 2
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(out), "--ae-steps", "5",
                 "--diffusion-steps", "5", "--fresh"]) == 0


# ---------------------------------------------------------------- fuzzing the loaders

def _fuzz_zoo(tmp_path_factory, tiny_run, target: str, data: bytes):
    import shutil

    zoo = tmp_path_factory.mktemp("fuzz") / "zoo"
    shutil.copytree(tiny_run / "zoo", zoo)
    (zoo / target).write_bytes(data)
    try:
        Zoo.load(zoo)
    except NndiffError:
        pass  # the only error a user may see


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("target", ["manifest.json", "params.safetensors", "base.safetensors"])
def test_mutated_zoo_files_give_only_our_error(tmp_path_factory, tiny_run, target, data):
    original = (tiny_run / "zoo" / target).read_bytes()
    kind = data.draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=512))
    elif kind == "truncate":
        blob = original[: data.draw(st.integers(0, len(original)))]
    elif kind == "flip":
        buf = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            # most of the structure of these files is in their first bytes (the safetensors header, the JSON keys)
            i = data.draw(st.integers(0, min(len(buf) - 1, 4096)))
            buf[i] = data.draw(st.integers(0, 255))
        blob = bytes(buf)
    else:
        cut = data.draw(st.integers(0, min(len(original), 4096)))
        blob = original[:cut] + data.draw(st.binary(max_size=64)) + original[cut:]
    _fuzz_zoo(tmp_path_factory, tiny_run, target, blob)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                             lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12),
       key=st.sampled_from(["layout", "snapshots", "heldout", "files", "task", "format"]))
def test_structurally_wrong_manifests_give_only_our_error(tmp_path_factory, tiny_run, manifest, key):
    m = json.loads((tiny_run / "zoo" / "manifest.json").read_text())
    m[key] = manifest
    _fuzz_zoo(tmp_path_factory, tiny_run, "manifest.json", json.dumps(m).encode())


def _reordered_zoo(tiny_run, out: Path) -> Path:
    """The tiny zoo with its snapshots in reverse order: the same count and layout, other contents."""
    zoo = Zoo.load(tiny_run / "zoo")
    zoo.params, zoo.snapshots = zoo.params.flip(0), zoo.snapshots[::-1]
    zoo.save(out)
    return out


def test_training_progress_of_another_zoo_is_refused(tiny_run, tmp_path, capsys):
    """Killed while training on zoo A, `train --zoo B` into the same directory must not resume from
    A's autoencoder; the progress stays, and A resumes from it."""
    out = tmp_path / "r"
    args = ["train", "--ae-steps", "300", "--diffusion-steps", "200", "--out", str(out)]
    proc = subprocess.Popen(NNDIFF + args + ["--zoo", str(tiny_run / "zoo")])
    _kill_when(proc, out / ".progress" / "autoencoder.safetensors")
    before = {p.name: p.read_bytes() for p in (out / ".progress").iterdir()}
    code = main(["--quiet", *args, "--zoo", str(_reordered_zoo(tiny_run, tmp_path / "zoo_b"))])
    err = capsys.readouterr().err
    assert code == 2 and "other settings (differing: zoo)" in err and "--fresh" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (out / ".progress").iterdir()} == before  # nothing lost
    assert main(["--quiet", *args, "--zoo", str(tiny_run / "zoo")]) == 0
    assert json.loads((out / "train_stats.json").read_text())["autoencoder"]["resumed_at_step"] in (250, 300)


def test_a_rerun_reuses_finished_stages_and_refuses_other_settings(tiny_run, tmp_path, capsys):
    import shutil

    from .conftest import TINY_RUN

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    files = ("zoo/params.safetensors", "zoo/manifest.json", "autoencoder.safetensors", "denoiser.safetensors")
    stamps = {f: (run / f).stat().st_mtime_ns for f in files}
    assert main(TINY_RUN + ["--out", str(run)]) == 0  # the same command: nothing is collected or trained again
    assert {f: (run / f).stat().st_mtime_ns for f in files} == stamps
    capsys.readouterr()
    for change, what in ((["--lr", "0.3"], "zoo collected with other settings"), (["--latent-noise", "0.2"], "trained on other settings")):
        assert main(TINY_RUN + ["--out", str(run), *change]) == 2
        err = capsys.readouterr().err
        assert what in err and "--fresh" in err, err
        assert {f: (run / f).stat().st_mtime_ns for f in files} == stamps
    assert main(["--quiet", "train", "--zoo", str(_reordered_zoo(tiny_run, tmp_path / "zoo_b")), "--out", str(run)]) == 2
    assert "trained on another zoo" in capsys.readouterr().err


@pytest.mark.parametrize("umask,mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """A zoo shared on a multi-user machine: files get what open() would give them, not mkstemp's 0600."""
    import os

    from nndiff.io.files import save_json
    from nndiff.io.tensors import save_tensors

    old = os.umask(umask)
    try:
        save_json(tmp_path / "a.json", {})
        save_tensors(tmp_path / "b.safetensors", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(mode)}
