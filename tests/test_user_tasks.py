import json
from pathlib import Path

import pytest

from nndiff import NndiffError
from nndiff.cli.main import main
from nndiff.tasks import get_task
from tests.checks import check_generated

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "tabular_mlp.py") + ":make_task"


def test_run_on_the_documented_example(tmp_path):
    out = tmp_path / "tab"
    assert main(["--quiet", "run", "--task", EXAMPLE, "--out", str(out), "-k", "20", "--heldout", "5", "--burn-in", "10",
                 "--ae-steps", "30", "--diffusion-steps", "30", "-n", "5", "--steps", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == EXAMPLE  # the zoo records how to rebuild the task
    assert metrics["generated"]["count"] == 5 and metrics["originals"]["test_acc"]["mean"] > 60
    assert (out / "report" / "report.md").is_file()
    zoo, rows = check_generated(out, 5)
    assert zoo.layout.names == ["norm2.weight", "norm2.bias"]  # the example's default selection
    # the metrics are those of these files: the generated models' mean accuracy, evaluated by hand
    task = zoo.make_task()
    model = zoo.model(task)
    accs = []
    for row in rows:
        zoo.layout.write(model, row)
        accs.append(task.evaluate(model, task.splits()["test"]).accuracy)
    assert metrics["generated"]["test_acc"]["mean"] == pytest.approx(sum(accs) / 5, abs=1e-6)
    # later stages rebuild the task from the zoo, from any working directory, once the user names it
    assert main(["--quiet", "evaluate", "--run", str(out)]) == 2  # a recorded file is not run unasked
    assert main(["--quiet", "evaluate", "--run", str(out), "--task", EXAMPLE]) == 0


def test_inspect_shows_what_a_pattern_selects(capsys):
    assert main(["inspect", "--task", EXAMPLE, "--select", "norm2.*"]) == 0
    out = capsys.readouterr().out
    assert "norm2.weight" in out and "fc1.weight" in out
    assert "matches 2 tensors, 128 values" in out
    assert main(["inspect", "--task", "mnist1d-cnn"]) == 0
    assert "192 values" in capsys.readouterr().out


@pytest.mark.parametrize("spec,message", [
    ("examples/missing.py:make_task", "not found"),
    (EXAMPLE.replace("make_task", "nothing"), "has no function 'nothing'"),
    ("no_such_package.tasks:make", "cannot import module"),
    ("collections:OrderedDict", "lacks name, make_model"),  # callable, but what it returns is no task
])
def test_bad_task_specs(spec, message):
    with pytest.raises(NndiffError, match=message):
        get_task(spec)
