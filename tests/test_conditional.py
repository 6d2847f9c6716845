"""Conditional generation: the condition steers, guidance is classifier-free guidance, bad requests
are refused, and a conditional run's report shows calibration."""

import json

import pytest
import torch

from nndiff import NndiffError
from nndiff.cli.main import main
from nndiff.generator.config import TrainConfig
from nndiff.generator.denoiser import Denoiser, DenoiserConfig
from nndiff.generator.diffusion import DiffusionConfig, make_scheduler, sample
from nndiff.params.layout import Layout
from nndiff.training.fit import fit
from nndiff.zoo.format import Zoo


def synthetic_zoo(k: int = 120, d: int = 16) -> Zoo:
    """Snapshots whose parameters encode their validation accuracy: x = (acc - 90) * direction + noise."""
    g = torch.Generator().manual_seed(0)
    acc = 90.0 + 8.0 * torch.rand(k, generator=g)
    direction = torch.linspace(-1.0, 1.0, d)
    params = (acc[:, None] - 94.0) * direction + 0.05 * torch.randn(k, d, generator=g)
    snapshots = [{"run": 0, "seed": 1, "step": i, "val_acc": float(a), "test_acc": float(a)} for i, a in enumerate(acc)]
    return Zoo("synthetic", Layout.from_shapes([("w", [d])]), params, {}, snapshots)


def test_the_condition_steers_generated_parameters_towards_the_request():
    zoo = synthetic_zoo()
    config = TrainConfig()
    config.autoencoder.steps, config.diffusion.steps, config.diffusion.condition = 300, 800, "val_acc"
    gen, _ = fit(zoo, config, progress=False)
    assert gen.condition_normalizer is not None and gen.condition_range[0] < gen.condition_range[1]
    direction = torch.linspace(-1.0, 1.0, 16)
    decoded = {a: (gen.sample(40, seed=0, target_acc=a) @ direction / (direction @ direction)).mean().item() + 94.0
               for a in (91.0, 94.0, 97.0)}
    # the encoded accuracy follows the request: ordered, and each within 1.5 points of it
    assert decoded[91.0] < decoded[94.0] < decoded[97.0], decoded
    assert all(abs(decoded[a] - a) < 1.5 for a in decoded), decoded
    with pytest.warns(UserWarning, match="outside the validation accuracies"):
        gen.sample(2, target_acc=99.9)


def test_guidance_zero_is_the_unconditional_model_and_one_the_conditional():
    torch.manual_seed(0)
    model = Denoiser((4, 8), DenoiserConfig(channels=8, time_dim=16), cond_dim=1).eval()
    with torch.no_grad():  # give the condition and null embeddings some effect
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond = torch.full((3, 1), 0.7)
    run = lambda c, w: sample(model, (4, 8), make_scheduler(DiffusionConfig(), "ddim"), 5, seeds=[1, 2, 3], cond=c, guidance=w)
    unconditional, conditional = run(None, 1.0), run(cond, 1.0)
    assert not torch.allclose(unconditional, conditional)
    torch.testing.assert_close(run(cond, 0.0), unconditional, rtol=1e-4, atol=1e-5)
    stronger = run(cond, 2.0)
    assert (stronger - unconditional).norm() > (conditional - unconditional).norm()  # pushed further the same way


def test_bad_conditional_requests_are_refused(tiny_run, tmp_path, capsys):
    code = main(["--quiet", "generate", "--run", str(tiny_run), "--target-acc", "98"])
    assert code == 2 and "unconditional, so --target-acc has nothing to steer" in capsys.readouterr().err
    with pytest.raises(NndiffError, match="needs --target-acc"):
        from nndiff.generator.sampler import ParamGenerator
        from nndiff.pipeline.rundir import read_run_config

        _, config = read_run_config(tiny_run)
        ParamGenerator.load(tiny_run, config).sample(2, guidance=2.0)
    with pytest.raises(NndiffError, match="unknown diffusion.condition"):
        TrainConfig.from_dict({"diffusion": {"condition": "test_acc"}})
    flat = synthetic_zoo()
    for s in flat.snapshots:
        s["val_acc"] = 95.0
    config = TrainConfig.from_dict({"diffusion": {"condition": "val_acc", "steps": 2}, "autoencoder": {"steps": 2}})
    with pytest.raises(NndiffError, match="nothing to condition on"):
        fit(flat, config, progress=False)


def test_a_conditional_run_reports_its_calibration(tiny_run, tmp_path):
    run = tmp_path / "cond"
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(run), "--ae-steps", "40",
                 "--diffusion-steps", "40", "--condition", "val_acc"]) == 0
    target = max(s["val_acc"] for s in Zoo.load(tiny_run / "zoo").snapshots)
    assert main(["--quiet", "generate", "--run", str(run), "-n", "6", "--steps", "10", "--target-acc", str(target),
                 "--guidance", "2"]) == 0
    info = json.loads((run / "generated" / "info.json").read_text())
    assert info["target_acc"] == target and info["guidance"] == 2.0
    assert main(["--quiet", "report", "--run", str(run)]) == 0
    novelty = json.loads((run / "report" / "novelty.json").read_text())
    assert len(novelty["calibration"]) == 10  # 5 requests x 2 guidance strengths
    aimed = {f"aimed_{a}_w{w}" for a in ("median", "best") for w in (1, 3)}  # two requests x two guidance strengths
    assert aimed <= set(novelty["groups"]) and all("gap_to_noise_curve" in novelty["groups"][k] for k in aimed)
    report = (run / "report" / "report.md").read_text()
    assert "## Conditional generation: requested vs achieved" in report and (run / "report" / "calibration.png").is_file()
    assert json.loads((run / "metrics.json").read_text())["sampler"]["target_acc"] == target


def test_calibration_of_a_generator_that_gives_only_nan_writes_no_nan_rows(tiny_run):
    from nndiff.generator.conditional import calibrate

    zoo = Zoo.load(tiny_run / "zoo")
    task = zoo.make_task()

    class Diverged:
        def sample(self, n, seed, target_acc=None, guidance=1.0):
            return torch.full((n, zoo.layout.size), float("nan"))

    rows = calibrate(Diverged(), task, zoo.model(task), zoo, n=4, guidances=(1.0,), points=2)
    assert len(rows) == 2 and all(r["count"] == 0 and r["val_acc_mean"] is None for r in rows)
    json.dumps(rows, allow_nan=False)  # what novelty.json stores: no NaN anywhere
