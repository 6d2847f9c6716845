import json

import pytest
import torch

from nndiff.analysis.baselines import LABELS, NOISE_AMPLITUDES, make_baselines, noise_name
from nndiff.analysis.distribution import nearest_distances
from nndiff.analysis.novelty import analyze, noise_curve_gap
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer


def test_nearest_distances_by_hand():
    originals = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    x = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    torch.testing.assert_close(nearest_distances(x, originals), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # leave-one-out among the originals themselves: 0->1 is 5, 1->0 is 5, 2->1 is sqrt(49 + 16)
    torch.testing.assert_close(nearest_distances(originals, originals, exclude_self=True),
                               torch.tensor([5.0, 5.0, 65**0.5], dtype=torch.float64))


def test_noise_curve_gap_interpolates_and_flags_the_outside():
    curve = [{"max_similarity_mean": 1.0, "test_acc_mean": 98.0}, {"max_similarity_mean": 0.8, "test_acc_mean": 97.0},
             {"max_similarity_mean": 0.6, "test_acc_mean": 90.0}]
    gap, inside = noise_curve_gap(curve, 0.9, 98.0)
    assert inside and gap == pytest.approx(0.5)  # the curve is at 97.5 there
    gap, inside = noise_curve_gap(curve, 0.7, 93.0)
    assert inside and gap == pytest.approx(-0.5)
    gap, inside = noise_curve_gap(curve, 0.5, 91.0)
    assert not inside and gap == pytest.approx(1.0)


def test_baselines_have_the_right_shapes_and_statistics():
    g = torch.Generator().manual_seed(0)
    k, d, n = 200, 6, 4000
    originals = torch.randn(k, d, generator=g) * torch.tensor([0.1, 1, 2, 5, 10, 0.01]) + torch.arange(d)
    heldout = torch.randn(30, d, generator=g)
    layout = Layout.from_shapes([("w", [d])])
    norm = Normalizer.fit(originals, layout, "element")
    b = {name: make() for name, make in make_baselines(originals, heldout, norm, n, seed=1).items()}
    assert set(b) == {noise_name(a) for a in NOISE_AMPLITUDES} | {"weight_average", "gaussian", "heldout"}
    for name, v in b.items():
        assert v.shape == ((30, d) if name == "heldout" else (n, d)), name
    # the per-dimension Gaussian matches the originals' mean and std within sampling error
    mean, std = originals.mean(0), originals.std(0)
    torch.testing.assert_close(b["gaussian"].mean(0), mean, atol=float(4 * std.max() / n**0.5), rtol=0)
    torch.testing.assert_close(b["gaussian"].std(0) / std, torch.ones(d), atol=0.05, rtol=0)
    # noise of amplitude a in normalized space, added to resampled originals (per-element variance 1
    # there): each element's variance is 1 + a^2, which fails for too little noise as for too much
    for a in NOISE_AMPLITUDES:
        std = norm(b[noise_name(a)]).std(0)
        torch.testing.assert_close(std, torch.full((d,), (1 + a * a) ** 0.5), rtol=0.06, atol=0)
    # averages of 16 originals shrink the spread by about 4 (sampling without replacement: a bit more)
    spread = norm(b["weight_average"]).std(0)
    assert ((spread > 0.2) & (spread < 0.3)).all(), spread


def test_baseline_groups_shrink_only_for_networks_too_large_to_evaluate_often():
    from nndiff.analysis.baselines import MIN_BASELINE, baseline_count

    assert baseline_count(100, 14_154, 10_000) == 100  # the whole-network MLP: as many as generated
    assert baseline_count(100, 969_354, 10_000) == 51  # 1M parameters: 5e11 multiply-adds per group
    assert baseline_count(100, 50_000_000, 10_000) == MIN_BASELINE
    assert baseline_count(6, 50_000_000, 10_000) == 6


def test_report_from_a_tiny_run(tiny_run):
    report = tiny_run / "report"
    for name in ("report.md", "novelty.json", "accuracy.png", "novelty_plane.png", "gaps.png", "pca.png", "nearest_distance.png"):
        assert (report / name).is_file(), name
        assert (report / name).stat().st_size > 0
    novelty = json.loads((report / "novelty.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    groups = novelty["groups"]
    assert set(groups) >= {"originals", "generated", "weight_average", "gaussian", "heldout"}
    assert groups["generated"]["count"] == metrics["generated"]["count"] == 6
    assert groups["heldout"]["count"] == 6 == novelty["baseline_models"]
    # the same models evaluated twice give the same numbers in both files
    assert groups["generated"]["test_acc_mean"] == pytest.approx(metrics["generated"]["test_acc"]["mean"], abs=1e-9)
    assert groups["generated"]["test_acc_median"] == pytest.approx(metrics["generated"]["test_acc"]["median"], abs=1e-9)
    assert groups["originals"]["test_acc_mean"] == pytest.approx(metrics["originals"]["test_acc"]["mean"], abs=1e-9)
    for g in groups.values():
        assert 0 <= g["max_similarity_mean"] <= 1
    md = (report / "report.md").read_text()
    assert f"{metrics['generated']['test_acc']['mean']:.2f}" in md
    assert f"{groups['generated']['max_similarity_mean']:.3f}" in md
    for sentence in novelty["verdict"]:
        assert sentence in md
    for png in ("accuracy.png", "novelty_plane.png", "gaps.png", "pca.png", "nearest_distance.png"):
        assert f"]({png})" in md


def test_the_verdict_ranks_only_what_its_intervals_separate(tiny_run):
    novelty = json.loads((tiny_run / "report" / "novelty.json").read_text())
    for name, g in novelty["groups"].items():
        lo, hi = g["test_acc_mean_ci95"]
        assert lo <= g["test_acc_mean"] <= hi, name
        if "gap_to_noise_curve" in g:
            lo, hi = g["gap_to_noise_curve_ci95"]
            assert lo <= g["gap_to_noise_curve"] <= hi, name
    assert novelty["comparisons"] and novelty["bootstrap"]["replicates"] >= 200
    comparisons = [s for s in novelty["verdict"] if s.startswith("At matched similarity")]
    assert len(comparisons) == 3
    for c in novelty["comparisons"]:
        if c["a"] != "generated" or c["b"] not in ("weight_average", "gaussian", "heldout"):
            continue
        lo, hi = c["gap_to_noise_curve_difference"]["ci95"]
        sentence = next(s for s in comparisons if s.split(": ")[0].endswith(LABELS[c["b"]]))
        if lo <= 0 <= hi:
            assert "indistinguishable at this test-set size" in sentence and "worse" not in sentence and "better" not in sentence
        else:
            assert ("better" if lo > 0 else "worse") in sentence


def test_the_noise_curve_reaches_every_group(tiny_parts):
    """A group less similar to the snapshots than the largest default amplitude's models makes the
    curve extend (amplitudes doubled beyond 4) until the group lies inside it."""
    from nndiff.analysis.baselines import noise_baseline

    zoo, task, model, normalizer, generated = tiny_parts
    far = noise_baseline(zoo.params, normalizer, 24.0, len(generated), seed=5)
    summary, _ = analyze(task, model, zoo, normalizer, generated=generated, extra={"far": far}, replicates=50)
    amplitudes = [p["amplitude"] for p in summary["noise_curve"]]
    assert max(amplitudes) > max(NOISE_AMPLITUDES)
    lowest = min(p["max_similarity_mean"] for p in summary["noise_curve"])
    for name, g in summary["groups"].items():
        if "gap_to_noise_curve" in g:
            assert g["inside_noise_curve"] and g["max_similarity_mean"] >= lowest, name


@pytest.fixture(scope="module")
def tiny_parts(tiny_run):
    from nndiff.generator.generated import read_generated
    from nndiff.io.tensors import load_tensors
    from nndiff.zoo.format import Zoo

    zoo = Zoo.load(tiny_run / "zoo")
    task = zoo.make_task()
    normalizer = Normalizer.from_state_dict(load_tensors(tiny_run / "normalizer.safetensors"), "params.")
    return zoo, task, zoo.model(task), normalizer, read_generated(tiny_run, zoo.layout)


def test_a_mean_generator_is_flagged(tiny_parts):
    zoo, task, model, normalizer, _ = tiny_parts
    mean = zoo.params.mean(0, keepdim=True).repeat(6, 1)
    summary, _ = analyze(task, model, zoo, normalizer, generated=mean, replicates=50)
    assert "collapsed" in summary["distribution"]["flags"]
    assert summary["distribution"]["training"]["recall"] < 0.1


def test_a_copy_generator_is_flagged(tiny_parts):
    zoo, task, model, normalizer, _ = tiny_parts
    copies = zoo.params[[3]].repeat(6, 1)
    summary, _ = analyze(task, model, zoo, normalizer, generated=copies, replicates=50)
    assert "copies" in summary["distribution"]["flags"]
    assert summary["groups"]["generated"]["replica_share"] == 1.0
    assert any("replicas of training snapshots" in s for s in summary["verdict"])
    # a memorizer that returns many different snapshots is a copier too, though not collapsed
    many = zoo.params[:12]
    summary, _ = analyze(task, model, zoo, normalizer, generated=many, replicates=50)
    assert summary["distribution"]["flags"] == ["copies"]


def test_a_trained_generator_is_not_flagged(trained_run):
    novelty = json.loads((trained_run / "report" / "novelty.json").read_text())
    dist = novelty["distribution"]
    assert dist["flags"] == [], dist
    # it covers the training snapshots and its models vary (measured: precision 0.46, recall 0.97, spread 3.3)
    assert dist["training"]["precision"] > 0.2 and dist["training"]["recall"] > 0.5, dist
    assert dist["spread_ratio"]["median"] > 0.5, dist


def test_a_zoo_of_duplicate_snapshots_still_flags_copies(tiny_parts):
    """Duplicated snapshots used to make the originals' spacing 0, every relative distance NaN, and
    the replica share 0%: the copies flag could not fire on a zoo of copies."""
    import dataclasses

    from nndiff.analysis.doctor import generator_checks

    zoo, task, model, normalizer, _ = tiny_parts
    duplicated = dataclasses.replace(zoo, params=zoo.params[:4].repeat_interleave(6, 0))
    copies = duplicated.params[[0, 7, 13, 20, 2, 9]]
    summary, _ = analyze(task, model, duplicated, normalizer, generated=copies, replicates=50)
    assert summary["originals_nearest_spacing"] > 0
    assert summary["groups"]["generated"]["replica_share"] == 1.0
    assert "copies" in summary["distribution"]["flags"]
    val = task.splits()["val"]
    checks = generator_checks(duplicated, task, model, copies, normalizer=normalizer, val=val, snapshots=torch.zeros(24, len(val)), diffusion_steps=100)
    (replicas,) = [c for c in checks if c.check == "replicas"]
    assert replicas.status == "fail" and "100%" in replicas.measured


def test_distances_keep_a_near_copys_precision():
    """Rows of norm ~1400 at a true distance of 0.14: the float32 matrix-product form that cdist takes
    for more than 25 rows lost it."""
    from nndiff.analysis.distribution import distances

    g = torch.Generator().manual_seed(0)
    y = 100.0 + 0.01 * torch.randn(30, 200, generator=g, dtype=torch.float64)
    step = torch.randn(30, 200, generator=g, dtype=torch.float64)
    x = y + 0.14 * step / step.norm(dim=1, keepdim=True)
    d = distances(x, y).diagonal()
    assert torch.allclose(d, torch.full((30,), 0.14, dtype=torch.float64), rtol=1e-4)
    assert torch.equal(distances(y, y).diagonal(), torch.zeros(30, dtype=torch.float64))


def test_verdict_words_follow_the_interval_not_the_estimate():
    from nndiff.analysis.verdict import verdict

    group = {"gap_to_noise_curve": -0.01, "gap_to_noise_curve_ci95": [0.02, 0.10], "inside_noise_curve": True,
             "test_acc_mean": 98.0, "max_similarity_mean": 0.9, "replica_share": 0.0}
    (line,) = verdict({"groups": {"generated": group}})
    assert "above the noise curve" in line and "below" not in line


def test_the_health_check_warns_when_the_weight_average_is_better(tiny_parts):
    """Generated models made worse than the snapshots' mean by construction (each a snapshot pushed
    far off along its own direction) set off the weight-average check; the mean itself, generated
    eight times, does not."""
    from nndiff.analysis.doctor import weight_average_check
    from nndiff.evaluation.engine import evaluate_params

    zoo, task, model, _, _ = tiny_parts
    val = task.splits()["val"]
    mean = zoo.params.mean(0, keepdim=True)
    pushed = mean + 4.0 * (zoo.params[:8] - mean) + 0.3 * torch.randn(8, zoo.params.shape[1],
                                                                      generator=torch.Generator().manual_seed(0))

    def check(generated):
        preds = evaluate_params(task, model, zoo.layout, generated, splits={"val": val}, progress=False)["val"].predictions
        return weight_average_check(zoo, task, model, val, preds=preds)

    worse = check(pushed)
    assert worse.status == "warn" and "weight average" in worse.fix, worse
    assert check(mean.expand(8, -1).clone()).status == "pass"
