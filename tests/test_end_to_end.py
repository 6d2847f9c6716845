import json

import pytest
import torch
from safetensors.torch import load_file

from nndiff.cli import main
from nndiff.tasks import get_task
from nndiff.zoo import Zoo


def test_run_writes_every_file(tiny_run):
    for name in ("config.yaml", "autoencoder.safetensors", "denoiser.safetensors", "normalizer.safetensors",
                 "metrics.json", "train_stats.json", "zoo/manifest.json", "zoo/params.safetensors", "zoo/base.safetensors"):
        assert (tiny_run / name).is_file(), name
    assert len(list((tiny_run / "generated").glob("*.safetensors"))) == 6


def test_metrics_have_the_documented_shape(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["task"] == "digits-cnn"
    assert m["originals"]["count"] == 24 and m["generated"]["count"] == 6
    for group in ("originals", "generated"):
        acc = m[group]["test_acc"]
        assert set(acc) >= {"best", "mean", "median", "min"}
        assert 0 <= acc["min"] <= acc["median"] <= acc["best"] <= 100
        assert acc["min"] <= acc["mean"] <= acc["best"]
    sel = m["generated"]["selected_by_val"]
    assert set(sel) >= {"val_acc", "test_acc"}
    assert sel["val_acc"] == m["generated"]["val_acc"]["best"]  # chosen on validation, not test
    assert 0 <= m["ensemble"]["test_acc"] <= 100
    t = m["timings_s"]
    assert set(t) >= {"collect", "train_autoencoder", "train_diffusion", "generate", "evaluate", "total"}
    assert all(v >= 0 for v in t.values())


def test_generated_file_loads_without_nndiff(tiny_run):
    """base.safetensors + one generated file, plain safetensors and load_state_dict, reproduce the metrics."""
    m = json.loads((tiny_run / "metrics.json").read_text())
    index = m["generated"]["selected_by_val"]["index"]
    task = get_task("digits-cnn")
    model = task.make_model()
    model.load_state_dict(load_file(tiny_run / "zoo" / "base.safetensors"))
    result = model.load_state_dict(load_file(tiny_run / "generated" / f"{index:06d}.safetensors"), strict=False)
    assert not result.unexpected_keys
    acc = task.evaluate(model, task.splits()["test"]).accuracy
    assert abs(acc - m["generated"]["selected_by_val"]["test_acc"]) < 1e-9


def test_same_seed_gives_same_parameters(tiny_run, tmp_path):
    first = {f.name: load_file(f) for f in (tiny_run / "generated").glob("*.safetensors")}
    assert main(["--quiet", "generate", "--run", str(tiny_run), "-n", "6", "--steps", "10", "--seed", "0"]) == 0
    again = {f.name: load_file(f) for f in (tiny_run / "generated").glob("*.safetensors")}
    assert first.keys() == again.keys()
    for name in first:
        for key in first[name]:
            assert torch.equal(first[name][key], again[name][key])
    assert main(["--quiet", "generate", "--run", str(tiny_run), "-n", "6", "--steps", "10", "--seed", "1"]) == 0
    other = load_file(tiny_run / "generated" / "000000.safetensors")
    assert not torch.equal(other["bn1.weight"], first["000000.safetensors"]["bn1.weight"])
    # leave the run as the fixture made it
    assert main(["--quiet", "generate", "--run", str(tiny_run), "-n", "6", "--steps", "10", "--seed", "0"]) == 0


def test_zoo_manifest_records_each_snapshot(tiny_run):
    zoo = Zoo.load(tiny_run / "zoo")
    assert zoo.params.shape == (24, zoo.layout.size)
    assert zoo.info["select"] == ["bn1.*", "bn2.*"]
    for s in zoo.snapshots:
        assert {"run", "seed", "step", "val_acc", "test_acc"} <= set(s)
    # BatchNorm running statistics are not collected: they stay the base model's
    assert "bn1.running_mean" in zoo.base_state and "bn1.running_mean" not in zoo.layout.names


@pytest.mark.parametrize("task,size", [("mnist1d-mlp", 14_154), ("mnist1d-convnet", 6_378)])
def test_whole_network_generation_runs(tmp_path, task, size):
    """The whole-network tasks generate every parameter; the automatic token size makes that affordable."""
    out = tmp_path / task
    assert main(["--quiet", "run", "--task", task, "--out", str(out), "-k", "16", "--heldout", "4", "--burn-in", "10",
                 "--ae-steps", "20", "--diffusion-steps", "20", "-n", "4", "--steps", "5", "--no-report"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    zoo = Zoo.load(out / "zoo")
    assert zoo.layout.size == sum(p.numel() for p in get_task(task).make_model().parameters()) == size
    assert m["generated"]["count"] == 4 and m["originals"]["test_acc"]["mean"] > 50
    # the gentle whole-network protocol: lr 0.01, one snapshot every 10 steps
    assert zoo.info["collect"]["lr"] == 0.01 and [s["step"] for s in zoo.snapshots[:3]] == [20, 30, 40]
    assert "token_size: 0" in (out / "config.yaml").read_text()  # automatic, resolved the same way on load
