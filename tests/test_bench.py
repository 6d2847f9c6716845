"""The benchmark script's logic (not its timings, which belong to bench/ itself)."""

import importlib.util
from pathlib import Path

import pytest
import torch

from nndiff.generator.sampler import ParamGenerator
from nndiff.pipeline.rundir import read_run_config
from nndiff.zoo.format import Zoo

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("nndiff_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hold_keeps_the_first_qualifying_rows_in_order(bench):
    batches = iter(torch.arange(40.0).reshape(4, 10, 1))
    held, made = bench.hold_qualifying(lambda: next(batches), lambda rows: rows[:, 0] % 3, threshold=2, count=7)
    assert held[:, 0].tolist() == [2, 5, 8, 11, 14, 17, 20]
    assert made == 30  # the third batch completes the seven


def test_hold_gives_up_instead_of_looping_forever(bench):
    held, made = bench.hold_qualifying(lambda: torch.zeros(4, 1), lambda rows: rows[:, 0], threshold=1, count=3, limit_factor=2)
    assert len(held) == 0 and made == 8


def test_vs_sgd_on_a_tiny_run(bench, tiny_run):
    zoo_dir, config = read_run_config(tiny_run)
    zoo = Zoo.load(zoo_dir)
    task = zoo.make_task()
    model = zoo.model(task).eval()
    splits = {k: task.splits()[k] for k in ("val", "test")}
    out = bench.bench_vs_sgd(ParamGenerator.load(tiny_run, config), task, zoo, model, splits, target_count=5)
    assert out["threshold_val_acc"] == pytest.approx(float(torch.tensor([s["val_acc"] for s in zoo.snapshots]).median()))
    for name in ("generation_ddim50", "generation_ddim10", "sgd_one_trajectory", "sgd_independent_runs"):
        m = out[name]
        assert m["models_held"] == 5 and m["models_made"] >= 5 and m["seconds"] > 0
        assert 0 <= m["test_acc_mean"] <= 100
    assert len(out["speedups"]) == 4
    for g in ("generation_ddim50", "generation_ddim10"):
        for m in ("sgd_one_trajectory", "sgd_independent_runs"):
            assert out["speedups"][f"{g} vs {m}"] == pytest.approx(out[m]["seconds"] / out[g]["seconds"])
    for name in ("generation_ddim10", "sgd_one_trajectory", "sgd_independent_runs"):
        m = out[name]
        lo, hi = m["test_acc_mean_ci95"]
        assert lo <= m["test_acc_mean"] <= hi
        diff = m["test_acc_minus_generation_ddim50"]["estimate"]
        assert diff == pytest.approx(m["test_acc_mean"] - out["generation_ddim50"]["test_acc_mean"])
    assert "| sgd_one_trajectory |" in bench.markdown({"machine": "m", "date": "d", "stages_s": {"train_autoencoder": 1, "train_diffusion": 1},
                                                       "peak_rss_mib": 1, "samplers": [], "vs_sgd": out,
                                                       "evaluation": {"models": 1, "samples": 1, "batched_s": 1, "loop_s": 1,
                                                                      "speedup": 1, "identical_predictions": True}})


def test_hold_qualifying_keeps_the_first_models_at_the_threshold_in_the_order_made(bench):
    batches = iter([torch.tensor([[1.0], [5.0], [3.0]]), torch.tensor([[6.0], [2.0], [7.0]])])
    held, made = bench.hold_qualifying(lambda: next(batches), lambda rows: rows[:, 0], 3.0, 3)
    assert held[:, 0].tolist() == [5.0, 3.0, 6.0] and made == 6
    never = bench.hold_qualifying(lambda: torch.zeros(4, 1), lambda rows: rows[:, 0], 1.0, 2, limit_factor=3)
    assert len(never[0]) == 0 and never[1] == 8  # gave up after limit_factor x count models


def test_the_defaults_table_reads_a_finished_run_and_names_a_failed_one(tiny_run):
    """bench/defaults.py on a run already on disk (its `nndiff run` replaced by a no-op): one row with
    the probe's lr, both budgets, the difference with its interval and the time against fixed budgets."""
    import json
    import subprocess

    spec = importlib.util.spec_from_file_location("nndiff_defaults", BENCH.parent / "defaults.py")
    defaults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(defaults)
    ok = type("Done", (), {"returncode": 0, "stderr": ""})
    failed = type("Done", (), {"returncode": 2, "stderr": "error: something clear\n"})
    real = subprocess.run
    try:
        subprocess.run = lambda *a, **k: ok
        row = defaults.run("digits-cnn", tiny_run)
        subprocess.run = lambda *a, **k: failed
        bad = defaults.run("x.py:make_task", tiny_run)
    finally:
        subprocess.run = real
    manifest = json.loads((tiny_run / "zoo" / "manifest.json").read_text())
    assert row["lr"] == manifest["collect"]["lr"] and row["ae_steps"] == 40 and row["diffusion_steps"] == 40
    # fixed budgets of 1,000 and 2,000 steps cost far more than this run's 40 and 40
    assert row["fixed_budgets_estimate_s"] > row["pipeline_s"]
    table = defaults.markdown([row, bad])
    assert "| digits-cnn |" in table and "failed: error: something clear" in table and "40 / 40" in table


def test_the_novelty_study_reads_a_report_and_grades_the_moonshot_on_its_intervals(tiny_run):
    """bench/novelty_v2.py: a row is read from a real run's report; the moonshot holds only when
    every condition holds, each judged on the interval it names, and the table says which failed."""
    import copy
    import json

    spec = importlib.util.spec_from_file_location("novelty_v2", BENCH.parent / "novelty_v2.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    novelty = json.loads((tiny_run / "report" / "novelty.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    r = study.row("digits-cnn", "runs1", novelty, metrics)
    assert r["generated"]["test_acc_mean"] == novelty["groups"]["generated"]["test_acc_mean"]
    assert r["minus_originals"]["estimate"] == metrics["comparisons"]["generated_minus_originals"]["estimate"]
    good = copy.deepcopy(r)
    good["generated"].update(test_acc_mean=good["originals_test_acc_mean"] + 1, replica_share=0.1,
                             gap_to_noise_curve_ci95=[0.1, 0.5])
    for key in ("minus_weight_average", "minus_gaussian"):
        good[key] = {"estimate": 0.5, "ci95": [0.1, 0.9]}
    good["minus_heldout"] = {"estimate": 0.0, "ci95": [-0.3, 0.3]}
    good["similarity_minus_heldout"] = {"estimate": 0.01, "ci95": [-0.001, 0.02]}  # reaches zero: no higher
    assert study.moonshot(good)["reached"]
    for key, bad in (("similarity_minus_heldout", {"estimate": 0.01, "ci95": [0.001, 0.02]}),
                     ("minus_weight_average", {"estimate": 0.5, "ci95": [-0.01, 0.9]}),
                     ("minus_heldout", {"estimate": -0.01, "ci95": [-0.3, 0.3]})):
        worse = copy.deepcopy(good)
        worse[key] = bad
        worse["moonshot"] = study.moonshot(worse)
        assert not worse["moonshot"]["reached"], key
        assert "not: " in study.table([worse])
    worse = copy.deepcopy(good)
    worse["generated"]["replica_share"] = 0.11
    assert not study.moonshot(worse)["at most 10% replicas"]


def test_novelty_study_shares_a_zoo_only_between_the_same_collection_options(tmp_path):
    """bench/novelty_v2.py links a finished zoo into an approach with the same collection options
    (bases10 -> bases10-pca), never into one collected otherwise (bases10-unaligned), and never a
    collection still in progress."""
    spec = importlib.util.spec_from_file_location("novelty_v2", BENCH.parent / "novelty_v2.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    zoo = tmp_path / "t" / "bases10" / "zoo"
    (zoo / ".progress").mkdir(parents=True)
    (zoo / "params.safetensors").write_bytes(b"rows")
    study._share_zoo("t", "bases10-pca", tmp_path)
    assert not (tmp_path / "t" / "bases10-pca" / "zoo").exists()  # no manifest yet: not finished
    (zoo / "manifest.json").write_text("{}")
    for approach in ("bases10-pca", "bases10-unaligned"):
        study._share_zoo("t", approach, tmp_path)
    shared = tmp_path / "t" / "bases10-pca" / "zoo"
    assert (shared / "params.safetensors").stat().st_ino == (zoo / "params.safetensors").stat().st_ino
    assert not (shared / ".progress").exists()
    assert not (tmp_path / "t" / "bases10-unaligned" / "zoo").exists()
