import json

import pytest
import torch

from nndiff.novelty import NOISE_AMPLITUDES, make_baselines, nearest_distances, noise_curve_gap, noise_name
from nndiff.params import Layout, Normalizer


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
    b = make_baselines(originals, heldout, norm, n, seed=1)
    assert set(b) == {noise_name(a) for a in NOISE_AMPLITUDES} | {"weight_average", "gaussian", "heldout"}
    for name, v in b.items():
        assert v.shape == ((30, d) if name == "heldout" else (n, d)), name
    # the per-dimension Gaussian matches the originals' mean and std within sampling error
    mean, std = originals.mean(0), originals.std(0)
    torch.testing.assert_close(b["gaussian"].mean(0), mean, atol=float(4 * std.max() / n**0.5), rtol=0)
    torch.testing.assert_close(b["gaussian"].std(0) / std, torch.ones(d), atol=0.05, rtol=0)
    # noise of amplitude a in normalized space: the residual from the nearest original has std about a
    for a in NOISE_AMPLITUDES:
        z = norm(b[noise_name(a)])
        resid = (z[:, None, :] - norm(originals)[None]).norm(dim=2).min(1).values
        assert resid.mean() <= a * d**0.5 * 1.1
    # averages of 16 originals shrink the spread by about 4 (sampling without replacement: a bit more)
    spread = norm(b["weight_average"]).std(0)
    assert ((spread > 0.2) & (spread < 0.3)).all(), spread


def test_report_from_a_tiny_run(tiny_run):
    report = tiny_run / "report"
    for name in ("report.md", "novelty.json", "accuracy.png", "novelty_plane.png", "pca.png", "nearest_distance.png"):
        assert (report / name).is_file(), name
        assert (report / name).stat().st_size > 0
    novelty = json.loads((report / "novelty.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    groups = novelty["groups"]
    assert set(groups) >= {"originals", "generated", "weight_average", "gaussian", "heldout"}
    assert groups["generated"]["count"] == metrics["generated"]["count"] == 6
    assert groups["heldout"]["count"] == 6
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
    for png in ("accuracy.png", "novelty_plane.png", "pca.png", "nearest_distance.png"):
        assert f"]({png})" in md
