"""Every bad input a user can give, as a table: exit 2, one line on stderr that names what to fix,
no traceback, and nothing that was there before changed (checksums of every file before and after).

Each row runs on its own copy of the tiny run, after a setup that plants the bad file if the row
needs one. The run's directory lock (.nndiff.lock, which filelock opens on every command) is
the one file a refused command may touch.
"""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nndiff.cli.main import main
from tests.checks import checksums

TASK_FILE = "from nndiff.tasks.digits import digits_cnn\n\ndef make_task():\n    t = digits_cnn()\n{}\n    return t\n"


def write(rel: str, text: str):
    return lambda run, tmp, mp: (tmp / rel).write_text(text)


def task_file(body: str):
    return write("task.py", TASK_FILE.format(body))


def config(text: str):
    return write("c.yaml", text)


def manifest(change):
    def setup(run, tmp, mp):
        path = run / "zoo" / "manifest.json"
        m = json.loads(path.read_text())
        change(m)
        path.write_text(json.dumps(m))
    return setup


def generated(change):
    def setup(run, tmp, mp):
        path = run / "generated" / "000000.safetensors"
        state = load_file(path)
        change(state)
        save_file(state, path)
    return setup


def normalizer(change):
    def setup(run, tmp, mp):
        from safetensors import safe_open

        path = run / "normalizer.safetensors"
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        state = load_file(path)
        meta = change(state, meta)
        save_file(state, path, metadata=meta)
    return setup


def _link_outside(run, tmp, mp):
    target = tmp / "elsewhere.safetensors"
    shutil.copy(run / "generated" / "000000.safetensors", target)
    (run / "generated" / "000000.safetensors").unlink()
    (run / "generated" / "000000.safetensors").symlink_to(target)


def _pickle(run, tmp, mp):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp / "base.pt")


def _reshaped_layout(m):
    # bn1.weight [16] claimed as [4, 4]: the same number of values, so the tensors fit; the model does not
    entry = next(e for e in m["layout"] if e["name"] == "bn1.weight")
    entry["shape"] = [4, entry["shape"][0] // 4]


def _val_acc(value):
    def change(m):
        m["snapshots"][0]["val_acc"] = value
        if value is None:
            del m["snapshots"][0]["val_acc"]
    return change


def run_json(rel: str, change):
    """Change a JSON file of the run in place (`change` mutates it, or returns its replacement)."""
    def setup(run, tmp, mp):
        path = run / rel
        data = json.loads(path.read_text())
        data = change(data) or data
        path.write_text(json.dumps(data))
    return setup


def raw(rel: str, change):
    """Rewrite a text file of the run: `change` maps its text to the new text."""
    def setup(run, tmp, mp):
        (run / rel).write_text(change((run / rel).read_text()))
    return setup


def retag(rel: str, stage: str = "0" * 16):
    """Mark one generator file as written by another training."""
    def setup(run, tmp, mp):
        from safetensors import safe_open

        with safe_open(run / rel, "pt") as f:
            meta = f.metadata()
        save_file(load_file(run / rel), run / rel, metadata={**meta, "stage": json.dumps(stage)})
    return setup


def tensors(rel: str, change):
    """Change the tensors of a safetensors file of the run, keeping its metadata."""
    def setup(run, tmp, mp):
        from safetensors import safe_open

        with safe_open(run / rel, "pt") as f:
            meta = f.metadata()
        state = load_file(run / rel)
        change(state)
        save_file(state, run / rel, metadata=meta)
    return setup


def _all_nan(state):
    for t in state.values():
        if t.is_floating_point():
            t.fill_(float("nan"))


def params_header(change, tail: bytes = b""):
    """Rewrite zoo/params.safetensors' JSON header: `change` maps the header (a dict) to the new
    header's text; `tail` is appended after the data."""
    def setup(run, tmp, mp):
        path = run / "zoo" / "params.safetensors"
        data = path.read_bytes()
        length = int.from_bytes(data[:8], "little")
        text = change(json.loads(data[8 : 8 + length])).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :] + tail)
    return setup


def _gap(h):
    h["heldout"]["data_offsets"] = [o + 8 for o in h["heldout"]["data_offsets"]]
    return json.dumps(h)


def _float_shape(h):
    h["params"]["shape"] = [float(n) for n in h["params"]["shape"]]
    return json.dumps(h)


def _duplicate_layout_entry(m):
    first = dict(m["layout"][0])
    m["layout"].append({**first, "offset": m["dim"]})


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def patch(target: str, error: OSError):
    """Make a system call fail as the operating system would (a read-only directory, a full disk)."""
    def fail(*a, **k):
        raise error
    return lambda run, tmp, mp: mp.setattr(target, fail)


MODEL_TASK = """import torch
from nndiff.tasks.digits import digits_cnn

class Wrap(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {}

def make_task():
    t = digits_cnn()
    make = t.make_model
    t.make_model = lambda: Wrap(make())
    return t
"""


COLLECT = ["collect", "--task", "digits-cnn", "-k", "4", "--heldout", "2", "--out", "{tmp}/zoo"]
TRAIN = ["train", "--zoo", "{run}/zoo", "--out", "{tmp}/r", "--ae-steps", "2", "--diffusion-steps", "2"]
TRAIN_CONFIG = [*TRAIN, "--config", "{tmp}/c.yaml"]
GENERATE = ["generate", "--run", "{run}", "-n", "2", "--steps", "2"]
RUN = ["run", "--task", "digits-cnn", "-k", "4", "--heldout", "2", "--out", "{tmp}/o"]
INSPECT = ["inspect", "--task", "{tmp}/task.py:make_task"]
TASK_COLLECT = [*COLLECT[:2], "{tmp}/task.py:make_task", *COLLECT[3:]]
EVALUATE = ["evaluate", "--run", "{run}"]
REPORT = ["report", "--run", "{run}"]
ZOO_CHANGED = tensors("zoo/params.safetensors", lambda s: s["params"][0].add_(1.0))
DISK_FULL = patch("os.fsync", OSError(28, "No space left on device"))
BIG = "123456789012345678901234"

CASES = [
    # numbers on the command line, checked before any work
    ("k zero", [*COLLECT, "-k", "0"], None, "-k must be an integer >= 1"),
    ("k negative", [*COLLECT, "-k", "-3"], None, "-k must be an integer >= 1"),
    ("runs zero", [*COLLECT, "--runs", "0"], None, "--runs must be an integer >= 1"),
    ("more runs than snapshots", [*COLLECT, "--runs", "5"], None, "need k >= runs"),
    ("lr negative", [*COLLECT, "--lr", "-1"], None, "--lr must be a positive finite number"),
    ("lr zero", [*COLLECT, "--lr", "0"], None, "--lr must be a positive"),
    ("lr nan", [*COLLECT, "--lr", "nan"], None, "--lr must be"),
    ("lr inf", [*COLLECT, "--lr", "inf"], None, "--lr must be"),
    ("burn-in -5", [*COLLECT, "--burn-in", "-5"], None, "--burn-in must be an integer >= 0"),
    ("burn-in -20", [*COLLECT, "--burn-in", "-20"], None, "--burn-in must be an integer >= 0"),
    ("every zero", [*COLLECT, "--every", "0"], None, "--every must be an integer >= 1"),
    ("heldout negative", [*COLLECT, "--heldout", "-1"], None, "--heldout must be an integer >= 0"),
    ("epochs zero", [*COLLECT, "--epochs", "0"], None, "--epochs must be an integer >= 1"),
    ("seed 24 digits", [*COLLECT, "--seed", BIG], None, "--seed must be an integer in [0, 4294967295]"),
    ("seed negative", [*COLLECT, "--seed", "-1"], None, "--seed must be an integer in [0"),
    ("latent noise nan", [*TRAIN, "--latent-noise", "nan"], None, "autoencoder.latent_noise (--latent-noise) must be"),
    ("latent noise negative", [*TRAIN, "--latent-noise", "-0.1"], None, "--latent-noise) must be a finite number >= 0"),
    ("input noise inf", [*TRAIN, "--input-noise", "inf"], None, "--input-noise) must be"),
    ("ae steps zero", [*TRAIN, "--ae-steps", "0"], None, "autoencoder.steps (--ae-steps) must be an integer >= 1"),
    ("diffusion steps negative", [*TRAIN, "--diffusion-steps", "-1"], None, "--diffusion-steps) must be"),
    ("train seed 24 digits", [*TRAIN, "--seed", BIG], None, "--seed must be an integer in"),
    ("guidance nan", [*GENERATE, "--guidance", "nan"], None, "--guidance must be a finite number >= 0"),
    ("guidance inf", [*GENERATE, "--guidance", "inf", "--target-acc", "90"], None, "--guidance must be"),
    ("guidance negative", [*GENERATE, "--guidance", "-1", "--target-acc", "90"], None, "--guidance must be"),
    ("target-acc nan", [*GENERATE, "--target-acc", "nan"], None, "--target-acc must be a finite number in [0, 100]"),
    ("target-acc above 100", [*GENERATE, "--target-acc", "150"], None, "--target-acc must be"),
    ("n zero", [*GENERATE, "-n", "0"], None, "-n must be an integer >= 1"),
    ("sampling steps zero", [*GENERATE, "--steps", "0"], None, "--steps must be an integer >= 1"),
    ("sampling steps beyond the schedule", [*GENERATE, "--steps", "5000"], None, "--steps must be between 1 and 1000"),
    ("generate seed negative", [*GENERATE, "--seed", "-1"], None, "--seed must be"),
    ("report seed 24 digits", ["report", "--run", "{run}", "--seed", BIG], None, "--seed must be"),
    ("sweep values zero", ["sweep", "--ablation", "k", "--values", "0", "--out", "{tmp}/s"], None, "--values must be an integer >= 1"),
    # `nndiff run` refuses before it collects anything
    ("run guidance nan", [*RUN, "--guidance", "nan", "--target-acc", "90"], None, "--guidance must be"),
    ("run latent noise nan", [*RUN, "--latent-noise", "nan"], None, "--latent-noise) must be"),
    ("run lr negative", [*RUN, "--lr", "-1"], None, "--lr must be"),
    ("run target-acc without a condition", [*RUN, "--target-acc", "90"], None, "add --condition val_acc"),
    # config.yaml fields, in any YAML notation
    ("yaml lr .nan", TRAIN_CONFIG, config("autoencoder:\n  lr: .nan\n"), "autoencoder.lr must be a positive finite number"),
    ("yaml ema_decay 5", TRAIN_CONFIG, config("diffusion:\n  ema_decay: 5\n"), "diffusion.ema_decay must be a finite number in [0, 1)"),
    ("yaml seed 24 digits", TRAIN_CONFIG, config(f"seed: {BIG}\n"), "--seed must be an integer in"),
    ("yaml fractional steps", TRAIN_CONFIG, config("autoencoder:\n  steps: 10.5\n"), "--autoencoder.steps: expected an integer or 'auto', got 10.5"),
    ("yaml word for a number", TRAIN_CONFIG, config("autoencoder:\n  lr: fast\n"), "--autoencoder.lr: expected a number, got 'fast'"),
    ("yaml bool for a number", TRAIN_CONFIG, config("autoencoder:\n  steps: true\n"), "--autoencoder.steps: expected an integer or 'auto', got True"),
    ("yaml betas reversed", TRAIN_CONFIG, config("diffusion:\n  beta_start: 0.1\n  beta_end: 0.01\n"), "beta_start must be below"),
    ("yaml channels not a multiple of 8", TRAIN_CONFIG, config("denoiser:\n  channels: 12\n"), "multiple of 8"),
    ("yaml unknown key", TRAIN_CONFIG, config("autoencoder:\n  chanels: 3\n"), "unknown setting autoencoder.chanels"),
    ("yaml syntax error", TRAIN_CONFIG, config("autoencoder: [1,\n"), "c.yaml"),
    ("yaml list", TRAIN_CONFIG, config("- 1\n- 2\n"), "expected a mapping"),
    # task files: the user's code fails, or returns the wrong thing
    ("task syntax error", INSPECT, write("task.py", "def make_task(:\n"), "SyntaxError at line 1"),
    ("task import fails", INSPECT, write("task.py", "import not_a_module_xyz\n"), "ModuleNotFoundError"),
    ("task factory raises", INSPECT, write("task.py", "def make_task():\n    raise RuntimeError('boom')\n"), "raised RuntimeError: boom"),
    ("make_model returns None", INSPECT, task_file("    t.make_model = lambda: None"), "make_model() must return a torch.nn.Module"),
    ("make_model raises", INSPECT, task_file("    t.make_model = lambda: 1 / 0"), "make_model() raised ZeroDivisionError"),
    ("default_select a string", INSPECT, task_file("    t.default_select = 'bn1.*'"), "default_select must be a list of glob patterns"),
    ("task base_lr nan", INSPECT, task_file("    t.base_lr = float('nan')"), "base_lr must be"),
    ("task batch_size zero", INSPECT, task_file("    t.batch_size = 0"), "batch_size must be an integer >= 1"),
    ("task file in collect", [*COLLECT[:2], "{tmp}/task.py:make_task", *COLLECT[3:]], task_file("    t.collect_lr = -1"),
     "collect_lr must be"),
    # output directories that cannot be one
    ("train out is a file", [*TRAIN[:4], "{tmp}/file", *TRAIN[5:]], write("file", "x"), "is a file, not a directory"),
    ("collect out is a file", [*COLLECT[:-1], "{tmp}/file"], write("file", "x"), "is a file, not a directory"),
    ("run out under a file", [*RUN[:-1], "{tmp}/file/sub"], write("file", "x"), "is a file, not a directory"),
    # files we read: keys, types, shapes, links
    ("snapshot without val_acc", ["evaluate", "--run", "{run}"], manifest(_val_acc(None)), "snapshots[0].val_acc must be an accuracy"),
    ("snapshot val_acc a string", ["evaluate", "--run", "{run}"], manifest(_val_acc("high")), "snapshots[0].val_acc must be an accuracy"),
    ("layout of another shape", TRAIN, manifest(_reshaped_layout), "bn1.weight' has shape [4, 4]"),
    ("normalizer without metadata", GENERATE, normalizer(lambda s, m: {"stage": m["stage"]}), "lacks its layout metadata"),
    ("normalizer without a key", GENERATE, normalizer(lambda s, m: (s.pop("params.std"), m)[1]), "lacks params.mean or params.std"),
    ("normalizer nan", GENERATE, normalizer(lambda s, m: (s["latent.std"].fill_(float("nan")), m)[1]), "latent.std holds NaN"),
    ("pickled base", [*COLLECT, "--base", "{tmp}/base.pt"], _pickle, "never unpickles code"),
    ("generated int dtype", ["evaluate", "--run", "{run}"], generated(lambda s: s.update({"bn1.weight": s["bn1.weight"].int()})),
     "bn1.weight has dtype int32"),
    ("generated bool dtype", ["evaluate", "--run", "{run}"], generated(lambda s: s.update({"bn1.bias": s["bn1.bias"] > 0})),
     "bn1.bias has dtype bool"),
    ("generated extra key", ["evaluate", "--run", "{run}"], generated(lambda s: s.update({"fc.weight": torch.zeros(2)})),
     "fc.weight that are not in the run's layout"),
    ("generated link outside the run", ["evaluate", "--run", "{run}"], _link_outside, "is a link"),
    # a zoo or run names code: nothing runs that the user did not name
    ("manifest task a module function", EVALUATE, manifest(lambda m: m.update(task="os:abort")),
     "records the task os:abort, whose code nndiff runs only when you name it"),
    ("manifest task a file", ["doctor", "--run", "{run}"],
     lambda run, tmp, mp: (write("evil.py", "open('marker', 'w')\ndef make():\n    pass\n")(run, tmp, mp),
                           manifest(lambda m: m.update(task=str(tmp / "evil.py") + ":make"))(run, tmp, mp)),
     "evil.py:make, whose code nndiff runs only when you name it"),
    ("manifest task not a reference", EVALUATE, manifest(lambda m: m.update(task="__import__('os')")),
     "neither a built-in task nor file.py:function"),
    # a run whose files do not belong together
    ("autoencoder of another training", GENERATE, retag("autoencoder.safetensors"), "holds files of different trainings"),
    ("normalizer of another training", EVALUATE, retag("normalizer.safetensors"), "holds files of different trainings"),
    ("train_stats of another training", REPORT, run_json("train_stats.json", lambda d: d.update(stage="0" * 16)),
     "holds files of different trainings"),
    ("config.yaml edited after training", GENERATE, raw("config.yaml", lambda t: t.replace("seed: 0", "seed: 7")),
     "config.yaml was changed after the generator was trained"),
    ("generated by an earlier generator", EVALUATE, run_json("generated/info.json", lambda d: d.update(generator="0" * 16)),
     "sampled from an earlier generator"),
    ("report on an earlier generator's set", REPORT, run_json("generated/info.json", lambda d: d.update(generator="1" * 16)),
     "sampled from an earlier generator"),
    # results are never replaced by worse ones
    ("denoiser of NaN", GENERATE, tensors("denoiser.safetensors", _all_nan), "all 2 sampled models contain NaN or Inf"),
    ("base model with NaN", EVALUATE, tensors("zoo/base.safetensors", lambda s: s["conv1.weight"].fill_(float("nan"))),
     "conv1.weight holds NaN or Inf"),
    ("zoo changed under the run, evaluate", EVALUATE, ZOO_CHANGED, "no longer holds the snapshots"),
    ("zoo changed under the run, report", REPORT, ZOO_CHANGED, "no longer holds the snapshots"),
    ("zoo changed under the run, doctor", ["doctor", "--run", "{run}"], ZOO_CHANGED, "no longer holds the snapshots"),
    ("zoo changed under the run, generate", GENERATE, ZOO_CHANGED, "no longer holds the snapshots"),
    # every file's contract
    ("layout names a tensor twice", EVALUATE, manifest(_duplicate_layout_entry), "'bn1.weight' appears twice in the layout"),
    ("manifest dim wrong", EVALUATE, manifest(lambda m: m.update(dim=5)), "dim 5, but the layout's shapes add up to 96"),
    ("manifest count wrong", EVALUATE, manifest(lambda m: m.update(count=3)), "(count 3) but params.safetensors holds 24"),
    ("manifest dim a string", EVALUATE, manifest(lambda m: m.update(dim="96")), "dim must be a count"),
    ("manifest key twice", EVALUATE, raw("zoo/manifest.json", lambda t: t.replace("{", '{"task": "digits-cnn", ', 1)),
     "the key 'task' appears twice in one object"),
    ("manifest nested 40 deep", EVALUATE, raw("zoo/manifest.json", lambda t: t.replace("{", '{"x": ' + _deep(40) + ", ", 1)),
     "JSON nested more than 32 levels deep"),
    ("manifest nested 100000 deep", EVALUATE,
     raw("zoo/manifest.json", lambda t: t.replace("{", '{"x": ' + _deep(100_000) + ", ", 1)), "nested"),
    ("manifest too large", EVALUATE, lambda run, tmp, mp: mp.setattr("nndiff.io.files.TEXT_BYTES", 1000),
     "more than any JSON file nndiff reads"),
    ("params header names a tensor twice", EVALUATE,
     params_header(lambda h: json.dumps(h)[:-1] + ', "params": ' + json.dumps(h["params"]) + "}"), "a tensor named twice"),
    ("params header leaves a gap", EVALUATE, params_header(_gap, tail=b"\0" * 8), "leaves a gap"),
    ("params header float shape", EVALUATE, params_header(_float_shape), "tensor 'params'"),
    ("params header metadata a number", EVALUATE, params_header(lambda h: json.dumps({**h, "__metadata__": {"a": 1}})),
     "metadata must map names to strings"),
    ("params file with bytes after the data", EVALUATE, params_header(json.dumps, tail=b"\0" * 16),
     "do not fill the file exactly"),
    ("train_stats a list", EVALUATE, run_json("train_stats.json", lambda d: [d]), "train_stats.json: the file must be a JSON object"),
    ("train_stats timing a word", EVALUATE, run_json("train_stats.json", lambda d: d["timings_s"].update(x="fast")),
     "timings_s.x must be a number, got 'fast'"),
    ("train_stats steps a string", ["doctor", "--run", "{run}"],
     run_json("train_stats.json", lambda d: d["autoencoder"].update(steps="40")), "autoencoder.steps must be an integer"),
    ("generated info count a string", EVALUATE, run_json("generated/info.json", lambda d: d.update(count="6")),
     "count must be an integer"),
    ("trained_on without its zoo", EVALUATE, run_json("trained_on.json", lambda d: d.pop("zoo") and None), "zoo is missing"),
    # the task's contract, checked on one batch before any work
    ("task labels out of range", TASK_COLLECT, task_file("    s = t.splits()\n    s['val'].y = s['val'].y + 5"),
     "split 'val' has labels from 5 to 14, but the model has 10 outputs"),
    ("task labels float", TASK_COLLECT, task_file("    s = t.splits()\n    s['test'].y = s['test'].y.float()"),
     "split 'test' labels must be a 1-D integer tensor"),
    ("task split missing", TASK_COLLECT,
     task_file("    load = t.load_data\n    t.load_data = lambda: {k: v for k, v in load().items() if k != 'test'}"),
     "splits() must return val and test (and train, to train models); test missing"),
    ("task without a train split collects", TASK_COLLECT,
     task_file("    load = t.load_data\n    t.load_data = lambda: {k: v for k, v in load().items() if k != 'train'}"),
     "gives no train split, so nndiff cannot train models for it"),
    ("task split empty", TASK_COLLECT, task_file("    s = t.splits()\n    s['val'].x, s['val'].y = s['val'].x[:0], s['val'].y[:0]"),
     "split 'val' is empty"),
    ("task splits raise", TASK_COLLECT, task_file("    t.load_data = lambda: 1 / 0"), "splits() raised ZeroDivisionError"),
    ("task splits a list", TASK_COLLECT, task_file("    t.load_data = lambda: []"), "val, test missing (got list)"),
    ("task model returns one number per example", TASK_COLLECT, write("task.py", MODEL_TASK.format("self.inner(x).sum(1)")),
     "must return [batch, classes] logits; on 8 examples of split 'train' it returned [8]"),
    ("task model returns classes", TASK_COLLECT, write("task.py", MODEL_TASK.format("self.inner(x).argmax(1, keepdim=True)")),
     "must be floating-point logits"),
    ("task model fails on a batch", TASK_COLLECT, write("task.py", MODEL_TASK.format("x.view(3, 7)")),
     "the model raised RuntimeError"),
    ("task module parses arguments", INSPECT, write("task.py", "import argparse\nargparse.ArgumentParser().parse_args(['--x'])\n"),
     "exited while being imported (exit code 2)"),
    ("task module exits", INSPECT, write("task.py", "import sys\nsys.exit(3)\n"), "exited while being imported (exit code 3)"),
    ("task factory exits", INSPECT, write("task.py", "import sys\ndef make_task():\n    sys.exit('bye')\n"),
     "called exit ('bye') instead of returning a task"),
    # the system refuses
    ("run directory read-only", EVALUATE, patch("tempfile.mkstemp", PermissionError(13, "Permission denied")),
     "metrics.json (Permission denied)"),
    ("disk full while evaluating", EVALUATE, DISK_FULL, "metrics.json (No space left on device)"),
    ("disk full while generating", GENERATE, DISK_FULL, "No space left on device"),
    ("disk full while reporting", REPORT, DISK_FULL, "No space left on device"),
    ("disk full while training over a run", [*TRAIN[:4], "{run}", *TRAIN[5:], "--fresh"], DISK_FULL,
     "No space left on device"),
    # an explicit --task that is not the zoo's would be ignored
    ("evaluate with another task than the zoo's", [*EVALUATE, "--task", "mnist1d-cnn"], None,
     "records the task digits-cnn; --task mnist1d-cnn names another"),
    ("train with another task than the zoo's", ["train", "--zoo", "{run}/zoo", "--out", "{tmp}/t", "--task",
                                                "mnist1d-cnn"], None, "--task mnist1d-cnn names another"),
    # degenerate requests
    ("sweep over more layers than the model has", ["sweep", "--task", "digits-cnn", "--ablation", "layers", "--values", "9",
                                                  "--out", "{tmp}/s"], None, "the last 9 normalization layers, but task"),
]


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 120
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,args,setup,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, args, setup, needle, tiny_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    if setup:
        setup(run, tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)  # a pickle that ran would leave ./pwned here
    before = checksums(tmp_path)
    code = main(["--quiet", *(a.format(run=run, tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("nndiff: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    for never in ("Traceback", "weights_only", "\x1b"):
        assert never not in err, err
    assert checksums(tmp_path) == before  # nothing lost, nothing half-written


def test_yaml_numbers_in_any_notation_are_read(tmp_path):
    """PyYAML reads `1e-3` as a string; it is a number like any other here."""
    from nndiff.generator.config import TrainConfig
    from nndiff.io.files import load_yaml

    (tmp_path / "c.yaml").write_text("autoencoder:\n  lr: 1e-3\n  steps: 1e3\ndiffusion:\n  lr: 2.5E-4\n  ema_decay: '0.99'\n")
    config = TrainConfig.from_dict(load_yaml(tmp_path / "c.yaml"))
    assert (config.autoencoder.lr, config.autoencoder.steps, config.diffusion.lr) == (1e-3, 1000, 2.5e-4)
    assert config.diffusion.ema_decay == 0.99 and isinstance(config.autoencoder.steps, int)
