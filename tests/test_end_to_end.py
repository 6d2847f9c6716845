import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nndiff.cli.main import main
from nndiff.tasks import get_task
from nndiff.zoo.format import Zoo
from tests.checks import check_generated, plain_accuracies


def test_run_writes_every_file(tiny_run):
    for name in ("config.yaml", "autoencoder.safetensors", "denoiser.safetensors", "normalizer.safetensors",
                 "metrics.json", "train_stats.json", "zoo/manifest.json", "zoo/params.safetensors", "zoo/base.safetensors",
                 "trained_on.json", "generated/info.json", "report/report.md", "report/novelty.json"):
        assert (tiny_run / name).is_file(), name
    assert len(list((tiny_run / "report").glob("*.png"))) >= 5
    check_generated(tiny_run, 6)
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["generated"]["evaluated"] == 6 and m["generated"]["nonfinite"] == 0


def test_metrics_have_the_documented_shape(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["task"] == "digits-cnn"
    assert m["originals"]["count"] == 24 and m["generated"]["count"] == 6
    for group in ("originals", "generated"):
        acc = m[group]["test_acc"]
        assert set(acc) >= {"best", "mean", "median", "min"}
        assert 0 <= acc["min"] <= acc["median"] <= acc["best"] <= 100
        assert acc["min"] <= acc["mean"] <= acc["best"]
    assert 0 <= m["weight_average"]["test_acc"] <= 100
    t = m["timings_s"]
    assert set(t) >= {"collect", "train_autoencoder", "train_diffusion", "generate", "evaluate", "total"}
    # the total is the wall time of the whole run, which contains every stage
    assert t["total"] >= t["train_autoencoder"] + t["train_diffusion"] + t["evaluate"] > 0
    for name in ("generated_minus_originals", "generated_minus_weight_average"):
        lo, hi = m["comparisons"][name]["ci95"]
        assert lo <= m["comparisons"][name]["estimate"] <= hi and hi - lo > 0


def test_the_selected_model_is_the_file_with_the_best_validation_accuracy(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    val = plain_accuracies(tiny_run, "val")
    best = max(range(len(val)), key=lambda i: (val[i], -i))
    assert m["generated"]["selected_by_val"]["index"] == best
    assert m["generated"]["selected_by_val"]["val_acc"] == pytest.approx(val[best], abs=1e-9)


def test_a_nan_model_before_the_selected_one_still_selects_the_right_file(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    val = plain_accuracies(run, "val")
    best = max(range(len(val)), key=lambda i: (val[i], -i))
    first = run / "generated" / "000000.safetensors"
    state = load_file(first)
    save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, first)  # file 0 is broken
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    g = m["generated"]
    rest = max(range(1, len(val)), key=lambda i: (val[i], -i))
    assert g["selected_by_val"]["index"] == rest and (best == 0 or rest == best)
    assert g["count"] == 6 and g["evaluated"] == 5 and g["nonfinite"] == 1
    assert g["oracle_within_1pt_of_best_original"] <= 5 / 6  # the NaN model counts as a failure


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
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    first = {f.name: load_file(f) for f in (run / "generated").glob("*.safetensors")}
    assert main(["--quiet", "generate", "--run", str(run), "-n", "6", "--steps", "10", "--seed", "0"]) == 0
    again = {f.name: load_file(f) for f in (run / "generated").glob("*.safetensors")}
    assert first.keys() == again.keys()
    for name in first:
        for key in first[name]:
            assert torch.equal(first[name][key], again[name][key])
    assert main(["--quiet", "generate", "--run", str(run), "-n", "6", "--steps", "10", "--seed", "1"]) == 0
    other = load_file(run / "generated" / "000000.safetensors")
    assert not torch.equal(other["bn1.weight"], first["000000.safetensors"]["bn1.weight"])


def test_generate_removes_the_evaluation_of_the_previous_models(tiny_run, tmp_path):
    """metrics.json and report/ described the old set: `generate` removes them, and `report`
    re-evaluates whenever metrics.json is about other models than generated/ holds."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = json.loads((run / "metrics.json").read_text())
    assert main(["--quiet", "generate", "--run", str(run), "-n", "6", "--steps", "10", "--seed", "1"]) == 0
    assert not (run / "metrics.json").exists() and not (run / "report").exists()
    assert not list(run.glob(".generated*"))  # nothing left over from replacing generated/
    assert main(["--quiet", "report", "--run", str(run)]) == 0  # evaluates first
    new = json.loads((run / "metrics.json").read_text())
    assert new["generated"]["fingerprint"] != old["generated"]["fingerprint"]
    novelty = json.loads((run / "report" / "novelty.json").read_text())
    assert novelty["fingerprint"] == new["generated"]["fingerprint"]
    assert novelty["groups"]["generated"]["test_acc_mean"] == pytest.approx(new["generated"]["test_acc"]["mean"], abs=1e-9)
    # a stale metrics.json put back by hand is not trusted either
    (run / "metrics.json").write_text(json.dumps(old))
    assert main(["--quiet", "report", "--run", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["generated"]["fingerprint"] == new["generated"]["fingerprint"]


def test_replacing_generated_is_one_atomic_exchange(tmp_path, monkeypatch):
    """On Linux the swap is a single renameat2(RENAME_EXCHANGE): no rename that would leave a moment
    without the target directory."""
    import sys
    from pathlib import Path

    from nndiff.io.files import exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "new").write_text("new")
    (b / "old").write_text("old")
    if sys.platform.startswith("linux"):
        monkeypatch.setattr(Path, "rename", lambda *_: pytest.fail("two-step rename used"))
    exchange(a, b)
    assert [p.name for p in b.iterdir()] == ["new"] and [p.name for p in a.iterdir()] == ["old"]


def test_zoo_manifest_records_each_snapshot(tiny_run):
    zoo = Zoo.load(tiny_run / "zoo")
    assert zoo.params.shape == (24, zoo.layout.size)
    assert zoo.info["select"] == ["bn1.*", "bn2.*"]
    for s in zoo.snapshots:
        assert {"run", "seed", "step", "val_acc", "test_acc"} <= set(s)
    # BatchNorm running statistics are not collected: they stay the base model's
    assert "bn1.running_mean" in zoo.base_state and "bn1.running_mean" not in zoo.layout.names


def test_zoo_diversity_is_measured_on_validation_not_test(tiny_run):
    from nndiff.evaluation.engine import evaluate_params
    from nndiff.evaluation.metrics import mean_offdiagonal, pairwise_iou

    zoo = Zoo.load(tiny_run / "zoo")
    task = zoo.make_task()
    splits = task.splits()
    ev = evaluate_params(task, zoo.model(task), zoo.layout, zoo.params, splits={"val": splits["val"], "test": splits["test"]}, progress=False)
    val = mean_offdiagonal(pairwise_iou(ev["val"].predictions, splits["val"].y))
    test = mean_offdiagonal(pairwise_iou(ev["test"].predictions, splits["test"].y))
    assert val != test
    assert zoo.info["mean_pairwise_iou_val"] == pytest.approx(val, abs=1e-12)
    assert "mean_pairwise_iou" not in zoo.info


@pytest.mark.parametrize("task,size", [("mnist1d-mlp", 14_154), ("mnist1d-convnet", 6_378), ("mnist1d-mlp1m", 969_354)])
def test_whole_network_generation_runs(tmp_path, task, size):
    """The whole-network tasks generate every parameter; the automatic token size makes that affordable."""
    out = tmp_path / task
    short = ["--epochs", "2"] if size > 100_000 else []  # the 1M MLP's base model costs a minute at its 20 epochs
    assert main(["--quiet", "run", "--task", task, "--out", str(out), "-k", "16", "--heldout", "4", "--burn-in", "10",
                 "--lr", str(get_task(task).collect_lr), "--ae-steps", "20", "--diffusion-steps", "20", "-n", "4", "--steps", "5",
                 "--no-report", *short]) == 0
    m = json.loads((out / "metrics.json").read_text())
    zoo = Zoo.load(out / "zoo")
    assert zoo.layout.size == sum(p.numel() for p in get_task(task).make_model().parameters()) == size
    assert m["generated"]["count"] == 4 and m["originals"]["test_acc"]["mean"] > 50
    # the gentle whole-network protocol: lr 0.01 (the probe's starting point), one snapshot every 10 steps
    assert get_task(task).collect_lr == 0.01 and [s["step"] for s in zoo.snapshots[:3]] == [20, 30, 40]
    assert "token_size: 0" in (out / "config.yaml").read_text()  # automatic, resolved the same way on load
    _, rows = check_generated(out, 4)  # every parameter of the network, finite, four different models
    assert m["generated"]["evaluated"] == 4 and 0 <= m["generated"]["test_acc"]["min"] <= 100


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, capfd):
    """Bars in a log file are carriage-return noise: they are shown on a terminal only."""
    assert main(["collect", "--task", "digits-cnn", "-k", "4", "--burn-in", "2", "--heldout", "0", "--epochs", "1",
                 "--out", str(tmp_path / "z")]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "it/s" not in err, err[-500:]
