"""Tasks asked for by examples, the input-domain family, and families from a user's file."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nndiff.cli.main import main
from nndiff.families.builtin import domain_codes, transform_signal
from nndiff.families.data import load_data
from nndiff.families.heads import correct
from nndiff.families.registry import get_family
from nndiff.families.run import run_family
from nndiff.tasks import forget_named_tasks, get_task
from tests.checks import tiny_family


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("family") / "mnist1d-domains"
    return out, run_family(tiny_family("mnist1d-domains", 40), out, progress=False, log=lambda *_: None)


def examples(split, labels, per_class: int, seed: int = 0) -> dict:
    """per_class examples of each label value, drawn from a split (x) with the task's labels."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.nonzero(labels == c)[:, 0][torch.randperm(int((labels == c).sum()), generator=g)[:per_class]]
                     for c in range(int(labels.max()) + 1)])
    return {"x": split.x[idx].float().contiguous(), "y": labels[idx].contiguous()}


def head_accuracy(path, model, x, y) -> float:
    head = load_file(path)
    model.load_state_dict({**{k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, **head})
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean() * 100)


def test_a_binary_task_from_ten_examples_per_class(family_run, tmp_path):
    """`generate --examples`: 10 labelled examples per side of an unseen code give heads that, loaded
    into the whole model, solve that task far above chance (the classes are balanced: 5 and 5)."""
    from nndiff.tasks.digits import DigitsCNN

    out, m = family_run
    assert m["examples_generator"] == "regression_examples" and m["asked_by"] == "code"
    for name in ("regression_examples", "sgd_on_examples", "regression_examples_per_base_class"):
        assert len(m[name]["per_task"]) == m["tasks"]["heldout"], name
    run = tmp_path / "run"
    shutil.copytree(out, run)
    splits = get_task("digits-cnn").splits()
    code = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 0, 1])
    save_file(examples(splits["val"], code[splits["val"].y], 10), tmp_path / "ex.safetensors")
    shown = str(tmp_path / "ex.safetensors")
    assert main(["--quiet", "generate", "--run", str(run), "--examples", shown, "-n", "2"]) == 0
    info = json.loads((run / "generated" / "info.json").read_text())
    # the examples' generator is a regression: one model per task, not two copies of it
    assert info["examples_per_class"] == [10, 10] and info["count"] == 1
    assert sorted(p.name for p in (run / "generated").iterdir()) == ["000000.safetensors", "info.json"]
    model = DigitsCNN(classes=2)
    base = {k: v for k, v in load_file(run / "family" / "base.safetensors").items() if not k.startswith("head.")}
    model.load_state_dict({**model.state_dict(), **base})
    test = splits["test"]
    assert head_accuracy(run / "generated" / "000000.safetensors", model, test.x, code[test.y]) > 60  # chance: 50


def test_the_domain_family_is_judged_on_each_tasks_own_inputs(domain_run, tmp_path):
    """Input-domain family: each task's features are its own; the heads generated from a held-out
    task's examples, loaded into the whole model and run on that task's transformed test inputs,
    score what the feature-level evaluation says, and far above the zoo's mean."""
    from nndiff.tasks.mnist1d import Mnist1dCNN

    out, m = domain_run
    assert m["asked_by"] == "examples" and m["examples_generator"] == m["chosen_on_validation_tasks"]["generator"]
    assert m["regression"]["test_acc_mean"] > m["zoo_mean"]["test_acc_mean"] + 10
    family, config = get_family("mnist1d-domains"), tiny_family("mnist1d-domains", 40)
    manifest = json.loads((out / "family" / "manifest.json").read_text())
    code = torch.tensor([float(v) for v in manifest["codes"][manifest["tasks"]["heldout"][0]].split(",")])
    assert any(torch.allclose(code, c, atol=1e-3) for c in domain_codes())
    task = get_task("mnist1d-cnn")
    splits = task.splits()
    run = tmp_path / "run"
    shutil.copytree(out, run)
    shown = examples(splits["train"], splits["train"].y, 10)
    shown["x"] = transform_signal(code, shown["x"]).contiguous()
    save_file(shown, tmp_path / "ex.safetensors")
    assert main(["--quiet", "generate", "--run", str(run), "--examples", str(tmp_path / "ex.safetensors"), "-n", "1"]) \
        == 0
    model = Mnist1dCNN()
    model.load_state_dict(load_file(run / "family" / "base.safetensors"))
    test = splits["test"]
    n = family.samples["test"]
    seen_as = transform_signal(code, test.x[:n])
    whole = head_accuracy(run / "generated" / "000000.safetensors", model, seen_as, test.y[:n])
    _, feats, labels = load_data(family, config, run, code[None], progress=False)
    head = load_file(run / "generated" / "000000.safetensors")
    flat = torch.cat([head["head.weight"].reshape(-1), head["head.bias"]])[None]
    assert whole == pytest.approx(float(correct(flat, feats["test"][0], labels["test"][None], 10).float().mean() * 100),
                                  abs=0.05)
    assert whole > 40  # chance is 10


def _valid(tmp):
    splits = get_task("digits-cnn").splits()
    return examples(splits["val"], (splits["val"].y % 2), 10)


BAD_EXAMPLES = [
    ("a class missing", lambda t: {"x": _valid(t)["x"][:10], "y": _valid(t)["y"][:10]}, "has no example of class 1"),
    ("labels out of range", lambda t: {**_valid(t), "y": _valid(t)["y"] + 1}, "labels must lie in 0..1"),
    ("labels not integers", lambda t: {**_valid(t), "y": _valid(t)["y"].float()}, "y must be a 1-D integer tensor"),
    ("inputs of another shape", lambda t: {**_valid(t), "x": _valid(t)["x"][:, :, :4].contiguous()},
     "x must be 20 floating-point"),
    ("NaN inputs", lambda t: {**_valid(t), "x": _valid(t)["x"] * float("nan")}, "NaN or infinite"),
    ("other tensors", lambda t: {"images": _valid(t)["x"], "labels": _valid(t)["y"]}, "exactly the tensors x and y"),
    ("not safetensors", None, "examples.safetensors"),
]


@pytest.mark.parametrize("what,make,needle", BAD_EXAMPLES, ids=[b[0] for b in BAD_EXAMPLES])
def test_bad_examples_are_one_line_and_change_nothing(family_run, tmp_path, capsys, what, make, needle):
    out, _ = family_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    main(["--quiet", "generate", "--run", str(run), "--code", "0110100101"])  # a set already there
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    path = tmp_path / "examples.safetensors"
    if make is None:
        path.write_text("x,y\n0.1,1\n")
    else:
        save_file(make(tmp_path), path)
    capsys.readouterr()
    assert main(["--quiet", "generate", "--run", str(run), "--examples", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_domain_task_is_not_asked_for_by_code(domain_run, capsys):
    out, _ = domain_run
    assert main(["--quiet", "generate", "--run", str(out), "--code", "0110100101"]) == 2
    assert "asked for by examples" in capsys.readouterr().err


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
USER_FAMILY = (EXAMPLES / "tabular_family.py").read_text()


def test_a_family_from_a_users_file_runs_only_when_named(tmp_path, capsys, monkeypatch):
    path = tmp_path / "fam.py"
    path.write_text(USER_FAMILY + "\nopen(" + repr(str(tmp_path / "ran")) + ", 'w').close()\n")  # a marker
    shutil.copy(EXAMPLES / "tabular_mlp.py", tmp_path)
    spec = f"{path}:make_family"
    config = tiny_family(spec, 100)
    out = tmp_path / "run"
    m = run_family(config, out, progress=False, log=lambda *_: None)
    (tmp_path / "ran").unlink()
    assert m["family"] == spec and m["tasks"]["heldout"] == 20 and m["asked_by"] == "examples"
    chosen = m["chosen_on_validation_tasks"]["generator"]
    assert m["zoo_mean"][f"minus_{chosen}"]["ci95"][1] < 0  # the generator beats the zoo's mean, interval and all
    monkeypatch.delenv("NNDIFF_TRUST_TASK_CODE", raising=False)
    forget_named_tasks()
    import sys

    for name in [k for k in sys.modules if k.startswith("nndiff_user_code_")]:
        del sys.modules[name]
    val = get_task(f"{tmp_path / 'tabular_mlp.py'}:make_task").splits()["val"]
    shown = examples(val, val.y, 10)
    save_file(shown, tmp_path / "ex.safetensors")
    asked = ["--quiet", "generate", "--run", str(out), "--examples", str(tmp_path / "ex.safetensors")]
    assert main(asked) == 2
    assert f"--family {spec}" in capsys.readouterr().err and not (tmp_path / "ran").exists()
    assert main([*asked, "--family", spec]) == 0
    assert (tmp_path / "ran").exists() and (out / "generated" / "000000.safetensors").is_file()
    # the family's file edited since the run (another head): refused, nothing written
    shutil.rmtree(out / "generated")
    path.write_text(path.read_text().replace('head="out"', 'head="fc2"'))
    for name in [k for k in sys.modules if k.startswith("nndiff_user_code_")]:
        del sys.modules[name]
    assert main([*asked, "--family", spec]) == 2
    assert "changed since" in capsys.readouterr().err and not (out / "generated").exists()


@pytest.mark.parametrize("body,needle", [
    ("def make_family():\n    return 3\n", "must return nndiff.families.Family (got int)"),
    (USER_FAMILY.replace("codes=sensor_gains()", "codes=sensor_gains()[[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]]"),
     "two tasks have the same code"),
    (USER_FAMILY.replace("classes=4", "classes=1"), "classes must be an integer of at least 2"),
    (USER_FAMILY.replace('asked_by="examples"', 'asked_by="code"'), "needs binary codes"),
    (USER_FAMILY.replace("return x * code", "return x[:, :5]"), "transform(code, x) must keep the inputs' shape"),
])
def test_a_users_family_that_is_wrong_is_one_line(tmp_path, capsys, body, needle):
    shutil.copy(EXAMPLES / "tabular_mlp.py", tmp_path)
    path = tmp_path / "fam.py"
    path.write_text(body)
    assert main(["--quiet", "run", "--family", f"{path}:make_family", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
