"""Bad input to family runs, as a table like test_bad_inputs.py's: exit 2, one line that names what
to fix, no traceback, and nothing that was there before changed (checksums before and after).

Each row runs on its own copies of the tiny family run ({fam}) and the tiny single-task run ({run}),
after a setup that plants the bad file where the row needs one.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nndiff.cli.main import main
from tests.checks import checksums

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
USER_FAMILY = (EXAMPLES / "tabular_family.py").read_text()
CODE = ["generate", "--run", "{fam}", "--code", "0110100101"]
SHOWN = ["generate", "--run", "{fam}", "--examples", "{tmp}/ex.safetensors"]
USER_RUN = ["run", "--family", "{tmp}/fam.py:make_family", "--out", "{tmp}/o"]
HELD: list[subprocess.Popen] = []  # processes a row started (holding a lock), stopped after it


def metrics_json(change):
    def setup(fam, tmp, mp):
        path = fam / "metrics.json"
        m = json.loads(path.read_text())
        m = change(m) or m
        path.write_text(json.dumps(m))
    return setup


def replace(target: str, source: str):
    return lambda fam, tmp, mp: shutil.copy(fam / source, fam / target)


def examples_file(fam, tmp, mp):
    from nndiff.tasks import get_task

    val = get_task("digits-cnn").splits()["val"]
    keep = torch.cat([torch.nonzero(val.y == c)[:10, 0] for c in range(10)])
    save_file({"x": val.x[keep].contiguous(), "y": torch.tensor([0, 1] * 5)[val.y[keep]].contiguous()},
              tmp / "ex.safetensors")


def examples_changed(change):
    """The valid examples file, its tensors {x, y} then changed by change(tensors) -> tensors."""
    def setup(fam, tmp, mp):
        examples_file(fam, tmp, mp)
        save_file({k: v.contiguous() for k, v in change(load_file(tmp / "ex.safetensors")).items()},
                  tmp / "ex.safetensors")
    return setup


def with_examples(then):
    def setup(fam, tmp, mp):
        examples_file(fam, tmp, mp)
        then(fam, tmp, mp)
    return setup


def trunk_of_another_run(fam, tmp, mp):
    state = load_file(fam / "family" / "base.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, fam / "family" / "base.safetensors")


def user_family(change=lambda text: text):
    def setup(fam, tmp, mp):
        shutil.copy(EXAMPLES / "tabular_mlp.py", tmp)
        (tmp / "fam.py").write_text(change(USER_FAMILY))
    return setup


def relabel(body: str):
    """The user family with a relabel (codes [T, C], labels [N]) -> [T, N] of this body."""
    def change(text):
        text = text.replace("        transform=through_sensors,", "        transform=through_sensors,\n        relabel=relabel,")
        return text + f"\n\ndef relabel(codes, labels):\n    {body}\n"
    return user_family(change)


def config_file(text: str):
    """A --config file naming code; that code, imported, would leave a marker (the checksums see it)."""
    def setup(fam, tmp, mp):
        marker = "\nopen(" + repr(str(tmp / "imported")) + ", 'w').close()\n"
        user_family(lambda t: t + marker)(fam, tmp, mp)
        (tmp / "tabular_mlp.py").write_text((tmp / "tabular_mlp.py").read_text() + marker)
        (tmp / "c.yaml").write_text(text.format(tmp=tmp))
    return setup


def generator_file(change, name: str | None = None):
    """The generator generate uses (`name`: make the run choose that one) rewritten by
    change(metadata, tensors), its digest recorded again: only the loader stands between it and use."""
    def setup(fam, tmp, mp):
        from nndiff.io.files import file_digest
        from nndiff.io.tensors import load_metadata, load_tensors, save_tensors

        metrics = json.loads((fam / "metrics.json").read_text())
        chosen = metrics["chosen_on_validation_tasks"]
        chosen["generator"] = name or chosen["generator"]
        path = fam / f"{chosen['generator']}.safetensors"
        meta, tensors = change(load_metadata(path), load_tensors(path))
        save_tensors(path, tensors, meta)
        metrics["files"][path.name] = file_digest(path)
        (fam / "metrics.json").write_text(json.dumps(metrics))
    return setup


def manifest(change):
    def setup(fam, tmp, mp):
        path = fam / "family" / "manifest.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return setup


def lock_held(fam, tmp, mp):
    holder = ("import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
              "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(fam / ".nndiff.lock")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    HELD.append(proc)
    assert proc.stdout.readline().strip() == "held"


CASES = [
    # generate -n and --seed on a family run
    ("family generate -n 0", [*CODE, "-n", "0"], None, "-n must be an integer in [1, 10000]"),
    ("family generate -n negative", [*CODE, "-n", "-3"], None, "-n must be an integer in [1, 10000]"),
    ("family generate -n huge", [*CODE, "-n", "100000000"], None, "-n must be an integer in [1, 10000]"),
    ("family generate seed negative", [*CODE, "--seed", "-1"], None, "--seed must be an integer"),
    # files that do not belong to the run
    ("family generator of another run", CODE, replace("regression_tuned.safetensors", "regression.safetensors"),
     "is not the file this run wrote"),
    ("family diffusion generator swapped in", CODE, replace("regression_tuned.safetensors", "diffusion.safetensors"),
     "is not the file this run wrote"),
    ("family trunk of another run", SHOWN, with_examples(trunk_of_another_run), "is not the file this run wrote"),
    ("family examples index changed", SHOWN, with_examples(replace("examples.safetensors", "regression.safetensors")),
     "is not the file this run wrote"),
    ("family generator missing", CODE, lambda fam, tmp, mp: (fam / "regression_tuned.safetensors").unlink(),
     "regression_tuned.safetensors is missing"),
    ("family metrics without file digests", CODE, metrics_json(lambda m: m.pop("files") and None),
     "malformed or older family run records"),
    ("family metrics a list", CODE, metrics_json(lambda m: [m]), "malformed or older family run records"),
    ("family record missing", CODE, lambda fam, tmp, mp: (fam / "family.json").unlink(), "is not a finished family run"),
    ("family record names an unknown family", CODE,
     lambda fam, tmp, mp: (fam / "family.json").write_text(json.dumps({"family": "nope"})), "no family nndiff knows"),
    ("family record names a file it does not trust", CODE,
     lambda fam, tmp, mp: (fam / "family.json").write_text(json.dumps({"family": f"{tmp}/fam.py:make_family"})),
     "whose code nndiff runs only when you name it"),
    ("family record of edited code", CODE,
     lambda fam, tmp, mp: (fam / "family.json").write_text(
         json.dumps({**json.loads((fam / "family.json").read_text()), "fingerprint": "0" * 16})),
     "changed since"),
    ("family heads of another run", CODE,
     lambda fam, tmp, mp: (fam / "family" / "manifest.json").write_text(
         json.dumps({**json.loads((fam / "family" / "manifest.json").read_text()), "key": "0" * 16})),
     "holds the heads of another run"),
    # --examples files
    ("family examples file missing", SHOWN, None, "ex.safetensors"),
    ("family examples pickled", SHOWN, lambda fam, tmp, mp: torch.save({"x": torch.zeros(2), "y": torch.zeros(2)},
                                                                     tmp / "ex.safetensors"), "ex.safetensors"),
    ("family examples labels float", SHOWN, examples_changed(lambda t: {**t, "y": t["y"].float()}),
     "y must be a 1-D integer tensor of labels"),
    ("family examples of another input shape", SHOWN, examples_changed(lambda t: {**t, "x": t["x"][:, :, :4]}),
     "x must be 100 floating-point examples of shape [1, 8, 8]"),
    ("family examples with NaN", SHOWN, examples_changed(lambda t: {**t, "x": t["x"] * float("nan")}),
     "x holds NaN or infinite values"),
    ("family examples of one class", SHOWN, examples_changed(lambda t: {**t, "y": t["y"] * 0}),
     "has no example of class 1"),
    ("family examples with an extra tensor", SHOWN, examples_changed(lambda t: {**t, "w": t["y"].clone()}),
     "must hold exactly the tensors x and y (it holds w, x, y)"),
    # generator files that pass the digest check but not the loader
    ("family generator of an unregistered kind", CODE, generator_file(lambda m, t: ({**m, "class": "my-gan"}, t)),
     "holds no generator of the kinds descriptor-regression, descriptor-diffusion (it says 'my-gan')"),
    ("family generator without its record", CODE,
     generator_file(lambda m, t: ({k: v for k, v in m.items() if k not in ("class", "args")}, t)),
     "holds no generator of the kinds"),
    ("family generator with malformed arguments", CODE,
     generator_file(lambda m, t: ({**m, "args": {**m["args"], "width": "wide"}}, t)),
     "width must be a whole number of at least 1, not 'wide'"),
    ("family generator recording a huge network", CODE,
     generator_file(lambda m, t: ({**m, "args": {**m["args"], "width": 10**9}}, t)),
     "tensor 0.weight is torch.float32"),
    ("family generator with a tensor cut short", CODE,
     generator_file(lambda m, t: (m, {k: v[:1] if k == "net.2.weight" else v for k, v in t.items()})),
     "tensor 2.weight is torch.float32 [1,"),
    ("family generator with an unknown codec", CODE,
     generator_file(lambda m, t: ({**m, "args": {**m["args"], "codec": {**m["args"]["codec"], "class": "vae"}}}, t),
                    "diffusion"), "a codec of kind 'vae', which is not registered here"),
    ("family generator with a codec of another size", CODE,
     generator_file(lambda m, t: ({**m, "args": {**m["args"], "codec": {"class": "conv", "args": {"dim": 3}}}}, t),
                    "diffusion"), "holds a codec of 3 values where"),
    # malformed family manifests
    ("family manifest not JSON", CODE, lambda fam, tmp, mp: (fam / "family" / "manifest.json").write_text("{"),
     "manifest.json"),
    ("family manifest tasks not a mapping", CODE, manifest(lambda m: {**m, "tasks": 5}),
     "malformed or older family run records"),
    ("family manifest codes not a list", CODE, manifest(lambda m: {**m, "codes": {"a": 1}}),
     "malformed or older family run records"),
    # single-task commands on a family run, and the other way round
    ("evaluate on a family run", ["evaluate", "--run", "{fam}"], None, "is a family run"),
    ("report on a family run", ["report", "--run", "{fam}"], None, "is a family run"),
    ("doctor on a family run", ["doctor", "--run", "{fam}"], None, "is a family run"),
    ("generate without a code on a family run", ["generate", "--run", "{fam}"], None, "is a family run"),
    ("train into a family run", ["train", "--zoo", "{run}/zoo", "--out", "{fam}"], None, "is a family run"),
    ("run a task into a family run", ["run", "--task", "digits-cnn", "--out", "{fam}"], None, "is a family run"),
    ("collect into a family run", ["collect", "--task", "digits-cnn", "--out", "{fam}"], None, "is a family run"),
    ("family run into a task's run", ["run", "--family", "digits-binary", "--out", "{run}"], None, "not a family run"),
    ("family run into a zoo", ["run", "--family", "digits-binary", "--out", "{run}/zoo"], None, "not a family run"),
    ("family code on a task's run", ["generate", "--run", "{run}", "--code", "0110100101"], None, "not a family run"),
    # a rerun that would mix two runs
    ("family rerun with other settings", ["run", "--family", "digits-binary", "--out", "{fam}"], None,
     "pass --fresh to start over"),
    ("family rerun of another family", ["run", "--family", "mnist1d-binary", "--out", "{fam}"], None,
     "holds a family run of family 'digits-binary'"),
    ("family run while another process runs it", ["run", "--family", "digits-binary", "--out", "{fam}"], lock_held,
     "in use by another nndiff process"),
    # the family's settings
    ("family tasks too few", ["run", "--family", "digits-binary", "--family_settings.tasks", "5", "--out", "{tmp}/o"],
     None, "family_settings.tasks must be 0 (every task) or at least 10"),
    ("family snapshots before the first step", ["run", "--family", "digits-binary", "--family_settings.every", "300",
                                                "--out", "{tmp}/o"], None, "5 snapshots 300 steps apart need over"),
    ("family lr zero", ["run", "--family", "digits-binary", "--family_settings.lr", "0", "--out", "{tmp}/o"], None,
     "family_settings.lr must be a positive finite number (got 0.0)"),
    ("family n zero", ["run", "--family", "digits-binary", "--family_settings.n", "0", "--out", "{tmp}/o"], None,
     "family_settings.n must be an integer in [1, 10000]"),
    # a user's family that breaks its contract, refused before the trunk is trained
    ("family head names no module", USER_RUN, user_family(lambda t: t.replace('head="out"', 'head="nothing"')),
     "head 'nothing' must name a linear layer with a bias"),
    ("family head names a normalization", USER_RUN, user_family(lambda t: t.replace('head="out"', 'head="norm2"')),
     "(it names a LayerNorm)"),
    ("family labels beyond its classes", USER_RUN, relabel("return (labels + codes[:, :1].long().abs()).expand(len(codes), -1)"),
     "outside the family's 4 classes"),
    ("family labels float", USER_RUN, relabel("return labels.float().expand(len(codes), -1)"),
     "must give [tasks, examples] integer labels"),
    ("family labels wrong only on the test split", USER_RUN,
     relabel("return (labels + (len(labels) == 2000) * 9).expand(len(codes), -1)"), "(test split)"),
    ("family labels wrong only for later tasks", USER_RUN,
     relabel("return labels.expand(len(codes), -1) + (codes[:, :1] < -1.9).long() * 7"), "outside the family's"),
    ("family factory exits", USER_RUN, user_family(lambda t: t.replace("    return Family(", "    raise SystemExit(4)\n    return Family(")),
     "called exit (4) instead of returning a family"),
    # code named only inside a --config file is data
    ("config names a family file", ["run", "--config", "{tmp}/c.yaml", "--out", "{tmp}/o"],
     config_file("family: {tmp}/fam.py:make_family\n"), "a --config file names the family"),
    ("config names a task file", ["run", "--config", "{tmp}/c.yaml", "--out", "{tmp}/o"],
     config_file("task: {tmp}/tabular_mlp.py:make_task\n"), "a --config file names the task"),
    ("config naming a task file printed", ["run", "--config", "{tmp}/c.yaml", "--print_config"],
     config_file("task: {tmp}/tabular_mlp.py:make_task\n"), "a --config file names the task"),
]


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,args,setup,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_family_input(name, args, setup, needle, family_run, tiny_run, tmp_path, capsys, monkeypatch):
    fam, run = tmp_path / "fam", tmp_path / "run"
    shutil.copytree(family_run[0], fam)
    shutil.copytree(tiny_run, run)
    monkeypatch.delenv("NNDIFF_TRUST_TASK_CODE", raising=False)
    try:
        if setup:
            setup(fam, tmp_path, monkeypatch)
        monkeypatch.chdir(tmp_path)
        before = checksums(tmp_path)
        code = main(["--quiet", *(a.format(fam=fam, run=run, tmp=tmp_path) for a in args)])
    finally:
        for proc in HELD:
            proc.kill()
            proc.wait()
        HELD.clear()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("nndiff: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err, err
    assert checksums(tmp_path) == before  # nothing lost, nothing half-written
    assert not (tmp_path / "o").exists()  # a refused run creates nothing
