"""Recording a zoo from a user's own loop (nndiff.Recorder) and the examples/own_loop.py example."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nndiff import NndiffError, Recorder
from nndiff.cli.main import main
from nndiff.tasks.digits import DigitsCNN

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_loop.py"
SPEC = f"{EXAMPLE}:make_task"


def files(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()} if d.exists() else {}


def step(model: DigitsCNN, seed: int) -> None:
    """One change of the selection only (bn2), as a training step would make."""
    with torch.no_grad():
        model.bn2.weight.add_(torch.randn(model.bn2.weight.shape, generator=torch.Generator().manual_seed(seed)))


def taskless_zoo(out: Path, k: int) -> None:
    """k snapshots of a digits CNN's bn2 recorded without a task, each one step() further."""
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    rec = Recorder(out, model, ["bn2.*"], k=k)
    for s in range(1, k + 1):
        step(model, s)
        rec.record(model, s)


def test_a_recording_becomes_a_zoo_that_train_reads(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    rec = Recorder(tmp_path / "zoo", model, ["bn2.*"], k=4, task="digits-cnn", heldout=2)
    for s in range(1, 5):
        step(model, s)
        assert rec.record(model, s, val_score=0.5 + s / 10)
    assert not rec.record(model, 4)  # a step recorded already: skipped
    assert not (tmp_path / "zoo" / "manifest.json").exists()  # the held-out rows are still to come
    for s in range(1, 3):
        step(model, 10 + s)
        assert rec.record(model, s, heldout=True)
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert manifest["count"] == 4 and len(manifest["heldout"]) == 2 and not (tmp_path / "zoo" / ".recording").exists()
    assert [s["val_score"] for s in manifest["snapshots"]] == pytest.approx([0.6, 0.7, 0.8, 0.9])
    params = load_file(tmp_path / "zoo" / "params.safetensors")
    assert torch.equal(params["heldout"][1], torch.cat([model.bn2.weight.detach(), model.bn2.bias.detach()]))
    assert all(0 <= s["test_acc"] <= 100 for s in manifest["snapshots"])
    from nndiff.zoo.format import Zoo

    assert len(Zoo.load(tmp_path / "zoo")) == 4


def _recording(tmp_path):
    """A recording of one snapshot (reopened and resumed when it is there: the same seeded model)."""
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    rec = Recorder(tmp_path / "zoo", model, ["bn2.*"], k=5, task="digits-cnn")
    step(model, 1)
    rec.record(model, 1)
    return model, rec


BAD = [
    ("a selection that matches nothing",
     lambda t: Recorder(t / "zoo", DigitsCNN(), ["nothing.*"], k=5, task="digits-cnn"), "matches no parameter"),
    ("selected shapes that change", lambda t: _recording(t)[1].record(DigitsCNN(width=8).eval(), 2),
     "has shape [32] but the model's has [16]"),
    ("reopened on another model's recording",
     lambda t: (_recording(t), Recorder(t / "zoo", DigitsCNN(), ["bn1.*"], k=5, task="digits-cnn")),
     "holds a recording of another model or selection (layout, select differ)"),
    ("a NaN validation score", lambda t: _recording(t)[1].record(_recording(t)[0], 2, val_score=float("nan")),
     "val_score must be a finite number"),
    ("a validation score that is no number", lambda t: _recording(t)[1].record(_recording(t)[0], 2, val_score="high"),
     "val_score must be a finite number"),
    ("a frozen part that moved", lambda t: (lambda m, r: (m.head.bias.data.add_(1), r.record(m, 2)))(*_recording(t)),
     "head.bias changed since the first snapshot"),
    ("NaN in the selection", lambda t: (lambda m, r: (m.bn2.bias.data.fill_(float("nan")), r.record(m, 2)))(
        *_recording(t)), "holds NaN or Inf at step 2"),
    ("a held-out snapshot without held-out rows", lambda t: (lambda m, r: r.record(m, 2, heldout=True))(*_recording(t)),
     "heldout=True needs a recorder opened with heldout=H"),
]


@pytest.mark.parametrize("what,act,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_recorder_input_is_one_line_and_changes_nothing(tmp_path, what, act, needle):
    if what != "a selection that matches nothing":
        _recording(tmp_path)
    before = files(tmp_path / "zoo")
    with pytest.raises(NndiffError) as e:
        act(tmp_path)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert files(tmp_path / "zoo") == before


DRIVER = """
import os, signal, sys
from pathlib import Path
import importlib.util
import nndiff
spec = importlib.util.spec_from_file_location("own_loop", {example!r})
own = importlib.util.module_from_spec(spec); spec.loader.exec_module(own)
kill_at = int(sys.argv[2])
record = nndiff.Recorder.record
def counting(self, *a, **k):
    written = record(self, *a, **k)
    if written and kill_at and self.recorded == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return written
nndiff.Recorder.record = counting
if os.environ.get("WORLD_SIZE"):  # under torchrun: every rank runs the same loop, rank 0 writes
    import torch.distributed as dist
    dist.init_process_group("gloo")
own.main(Path(sys.argv[1]), k=30, heldout=10)
"""


@pytest.fixture(scope="module")
def own_zoo(tmp_path_factory):
    """examples/own_loop.py recorded whole, and once killed (SIGKILL) mid-way and run again."""
    root = tmp_path_factory.mktemp("own")
    driver = root / "driver.py"
    driver.write_text(DRIVER.format(example=str(EXAMPLE)))
    # one thread, as torchrun gives each of its processes: float sums then agree to the last bit
    env = {**os.environ, "OWN_LOOP_DATA": str(root / "data"), "OMP_NUM_THREADS": "1"}

    def run(out, kill_at):
        return subprocess.run([sys.executable, str(driver), str(out), str(kill_at)], env=env, capture_output=True,
                              text=True, timeout=600)

    assert run(root / "whole", 0).returncode == 0
    killed = run(root / "killed", 23)
    assert killed.returncode == -9 and not (root / "killed" / "zoo" / "manifest.json").exists()
    assert run(root / "killed", 0).returncode == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(driver), str(root / "torchrun"), "0"], env={**env, "CUDA_VISIBLE_DEVICES": ""},
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    return root


@pytest.mark.parametrize("other", ["killed", "torchrun"])
def test_a_killed_or_two_process_recording_gives_the_same_zoo(own_zoo, other):
    """Killed with SIGKILL at its 23rd snapshot and run again, or run by 2 processes under torchrun
    (each running the loop, rank 0 writing): the zoo of one uninterrupted process, bit for bit."""
    whole, again = (load_file(own_zoo / d / "zoo" / "params.safetensors") for d in ("whole", other))
    assert torch.equal(whole["params"], again["params"]) and torch.equal(whole["heldout"], again["heldout"])
    assert whole["params"].shape == (30, 64) and whole["heldout"].shape == (10, 64)


def test_the_own_loop_zoo_goes_through_train_generate_evaluate_report(own_zoo, monkeypatch, capsys):
    """The example records without a task: train and generate need the zoo alone; evaluate and report
    take the user's evaluation (the model and val/test Datasets) as --task, and refuse in one line
    without it."""
    monkeypatch.setenv("OWN_LOOP_DATA", str(own_zoo / "data"))
    zoo, run = own_zoo / "whole" / "zoo", own_zoo / "run"
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert manifest["task"] is None and not any("val_acc" in s for s in manifest["snapshots"])
    assert main(["--quiet", "train", "--zoo", str(zoo), "--out", str(run), "--ae-steps", "300",
                 "--diffusion-steps", "600"]) == 0
    assert main(["--quiet", "generate", "--run", str(run), "-n", "40"]) == 0
    capsys.readouterr()
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recorded without a task" in err and "--task" in err
    assert not (run / "metrics.json").exists()
    assert main(["--quiet", "doctor", "--run", str(zoo)]) == 2 and "recorded without a task" in capsys.readouterr().err
    task = ["--task", SPEC]
    assert main(["--quiet", "evaluate", "--run", str(run), *task]) == 0
    assert main(["--quiet", "report", "--run", str(run), *task]) == 0
    assert json.loads((zoo / "manifest.json").read_text()) == manifest  # the zoo is not rewritten
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == SPEC
    originals, generated = metrics["originals"]["test_acc"]["mean"], metrics["generated"]["test_acc"]["mean"]
    assert 50 < originals and generated > originals - 3, (generated, originals)


def test_training_without_a_task_judges_its_budgets_on_the_parameters(tmp_path):
    """A zoo recorded without a task trains under automatic budgets whose checks measure the
    parameters alone (variation missed, generated spread), never an accuracy."""
    from nndiff.generator.config import TrainConfig
    from nndiff.pipeline.stages import train_run
    from nndiff.tasks import forget_named_tasks

    forget_named_tasks()  # no task named in this process (an earlier command's --task would be used)
    taskless_zoo(tmp_path / "zoo", 20)
    config = TrainConfig()
    config.autoencoder.kind = "conv"  # the autoencoder's own budget (the automatic codec choice: test_principal.py)
    config.autoencoder.max_steps, config.diffusion.max_steps = 200, 200
    config.autoencoder.check_every = config.diffusion.check_every = 100
    stats = train_run(tmp_path / "zoo", tmp_path / "run", config, progress=False)
    ae, diff = stats["autoencoder"]["curve"], stats["diffusion"]["curve"]
    assert ae and diff and all(set(p) & {"val_acc", "gap"} == set() for p in ae + diff)
    assert all("unexplained" in p for p in ae) and all("spread" in p for p in diff)
    from nndiff.training.budget import summary_lines

    said = summary_lines(stats)
    assert all("chosen by the parameters' checks" in line and "validation" not in line for line in said), said


HOLDER = """
import sys, torch
from nndiff import Recorder
from nndiff.tasks.digits import DigitsCNN
torch.manual_seed(0)
model = DigitsCNN().eval()
rec = Recorder(sys.argv[1], model, ["bn2.*"], k=3)
for s in range(1, 4):
    with torch.no_grad():
        model.bn2.weight.add_(0.1 * s)
    rec.record(model, s)
    if s == 1:
        print("recording", flush=True)
        sys.stdin.readline()
"""


def test_a_second_process_recording_the_same_zoo_is_refused(tmp_path):
    """While one process records a zoo, another opening it is refused in one line and writes nothing;
    the zoo is then the first process's alone."""
    zoo = tmp_path / "zoo"
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(zoo)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "recording"
        before = files(zoo)
        model = DigitsCNN().eval()
        with pytest.raises(NndiffError, match="in use by another nndiff process") as e:
            Recorder(zoo, model, ["bn2.*"], k=3).record(model, 2)
        assert "\n" not in str(e.value) and files(zoo) == before
    finally:
        first.communicate("go\n", timeout=120)
    assert first.returncode == 0
    rows = load_file(zoo / "params.safetensors")["params"]
    weights = DigitsCNN().bn2.weight.detach()  # every DigitsCNN starts with the same BatchNorm weights
    expected = torch.stack([weights + 0.1 * sum(range(1, s + 1)) for s in range(1, 4)])
    assert torch.allclose(rows[:, : len(weights)], expected)


def test_a_finish_interrupted_completes_on_the_next_open(tmp_path, monkeypatch):
    """Killed while the last record() writes the zoo (here: the task's evaluation fails at the end),
    the recording is finished by the next Recorder opened on it, with the task it is given then."""
    from nndiff.zoo.format import Zoo

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    rec = Recorder(tmp_path / "zoo", model, ["bn2.*"], k=3, task="digits-cnn")
    for s in range(1, 3):
        step(model, s)
        rec.record(model, s)
    step(model, 3)
    with monkeypatch.context() as patched:
        patched.setattr(Zoo, "with_accuracies", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            rec.record(model, 3)
    assert not (tmp_path / "zoo" / "manifest.json").exists()
    rec._release()  # what the end of the killed process does
    Recorder(tmp_path / "zoo", model, ["bn2.*"], k=3, task="digits-cnn")  # reopening finishes it
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert manifest["count"] == 3 and all(0 <= s["test_acc"] <= 100 for s in manifest["snapshots"])
    rows = load_file(tmp_path / "zoo" / "params.safetensors")["params"]
    assert torch.equal(rows[2], torch.cat([model.bn2.weight.detach(), model.bn2.bias.detach()]))


def test_a_task_that_fails_at_the_end_can_be_corrected_on_reopening(tmp_path):
    """Every snapshot is kept when the task fails at the end; reopened with a working task, the zoo
    is written with it."""
    broken = tmp_path / "broken.py"
    broken.write_text("def make_task():\n    raise RuntimeError('no data here')\n")
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    rec = Recorder(tmp_path / "zoo", model, ["bn2.*"], k=2, task=f"{broken}:make_task")
    step(model, 1)
    rec.record(model, 1)
    step(model, 2)
    with pytest.raises(NndiffError, match="no data here"):
        rec.record(model, 2)
    rec._release()
    Recorder(tmp_path / "zoo", model, ["bn2.*"], k=2, task="digits-cnn")
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert manifest["task"] == "digits-cnn" and manifest["count"] == 2


def test_a_report_asked_with_another_task_measures_with_that_task(tmp_path, capsys):
    """A zoo recorded without a task, evaluated with task A, then reported with task B (A with half
    its test split): the report evaluates again with B, and metrics.json names the task it measured with."""
    taskless_zoo(tmp_path / "zoo", 12)
    body = "from nndiff.tasks.digits import digits_cnn\n\ndef make_task():\n    t = digits_cnn()\n{}    return t\n"
    (tmp_path / "a.py").write_text(body.format(""))
    (tmp_path / "b.py").write_text(body.format("    s = t.splits()\n    s['test'].x, s['test'].y = s['test'].x[:200], "
                                               "s['test'].y[:200]\n"))
    run = str(tmp_path / "run")
    assert main(["--quiet", "train", "--zoo", str(tmp_path / "zoo"), "--out", run, "--ae-steps", "30",
                 "--diffusion-steps", "30"]) == 0
    assert main(["--quiet", "generate", "--run", run, "-n", "4"]) == 0
    assert main(["--quiet", "evaluate", "--run", run, "--task", f"{tmp_path / 'a.py'}:make_task"]) == 0
    measured = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert measured["task"].endswith("a.py:make_task") and len(measured["task_fingerprint"]) == 16
    assert main(["--quiet", "report", "--run", run, "--task", f"{tmp_path / 'b.py'}:make_task"]) == 0
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["task"].endswith("b.py:make_task") and again["task_fingerprint"] != measured["task_fingerprint"]
    assert "b.py:make_task" in (tmp_path / "run" / "report" / "report.md").read_text()
