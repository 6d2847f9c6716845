"""A zoo or run from someone else never runs code the user did not name: the task a manifest records
is a reference, not an instruction."""

import json
import shutil

import pytest

from nndiff.cli.main import main

EVIL = """from pathlib import Path
Path({marker!r}).write_text("ran")
from nndiff.tasks.digits import digits_cnn

def make_task():
    return digits_cnn()
"""


def _recording(tiny_run, tmp_path, task: str):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    manifest = run / "zoo" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["task"] = task
    manifest.write_text(json.dumps(m))
    return run


@pytest.mark.parametrize("command", ["evaluate", "report", "doctor", "train"])
def test_a_zoo_naming_a_file_does_not_run_it(tiny_run, tmp_path, capsys, command):
    marker = tmp_path / "marker"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    spec = f"{tmp_path / 'evil.py'}:make_task"
    run = _recording(tiny_run, tmp_path, spec)
    args = ["--zoo", str(run / "zoo"), "--out", str(tmp_path / "new")] if command == "train" else ["--run", str(run)]
    assert main(["--quiet", command, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--task {spec}" in err and "NNDIFF_TRUST_TASK_CODE" in err
    assert not marker.exists()


def test_naming_the_recorded_task_or_trusting_recorded_code_runs_it(tiny_run, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    spec = f"{tmp_path / 'evil.py'}:make_task"
    run = _recording(tiny_run, tmp_path, spec)
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 2 and not marker.exists()
    monkeypatch.setenv("NNDIFF_TRUST_TASK_CODE", "1")  # every recorded task trusted, by choice
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0 and marker.exists()
    monkeypatch.delenv("NNDIFF_TRUST_TASK_CODE")
    # the permission lasts one command: the next one that does not name the task is refused again
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 2
    assert main(["--quiet", "evaluate", "--run", str(run), "--task", spec]) == 0


@pytest.mark.parametrize("task", ["os:abort", "builtins:exec", "not a task", "../x.py:make_task;rm", ["digits-cnn"]])
def test_other_recorded_tasks_are_refused_before_anything_is_imported(tiny_run, tmp_path, capsys, task):
    run = _recording(tiny_run, tmp_path, task)
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 2  # the process is alive to say so
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("nothing was run" in err or "--task" in err or "malformed" in err)


def _bomb() -> str:
    """A "billion laughs": 9 aliases of 9 aliases, nine levels deep (9^9 values once expanded)."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_is_refused_before_it_expands(tiny_run, tmp_path, capsys):
    """In --config and in a run's config.yaml: one line, exit 2 (expanding it would take minutes and
    gigabytes, so a test that finished at all shows it was not expanded)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(tmp_path / "o"), "--config", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expands to more than 100,000 values" in err and str(bomb) in err
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text(_bomb())
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.yaml: YAML expands to more than 100,000 values" in err


def test_yaml_with_a_few_aliases_and_deep_nesting():
    from nndiff.errors import NndiffError
    from nndiff.io.files import check_yaml_size

    check_yaml_size("a: &n {x: 1, y: [1, 2]}\nb: *n\nc: *n\n", "ok.yaml")  # ordinary aliases are fine
    check_yaml_size("a: &s [*s]\n", "self.yaml")  # a node that contains itself is counted once
    with pytest.raises(NndiffError, match="nested too deeply"):
        check_yaml_size("[" * 20_000 + "]" * 20_000, "deep.yaml")
