"""Training budgets chosen by validation (budget.py): when each loop stops, what it trains on, and
that a stopped or interrupted loop resumes to the same result."""

import json

import pytest
import torch

from nndiff.cli.main import main
from nndiff.generator.config import TrainConfig
from nndiff.params.layout import Entry, Layout
from nndiff.runtime.stage import Stage
from nndiff.training.budget import (
    MIN_GAIN,
    MIN_RELATIVE_GAIN,
    PATIENCE,
    RECONSTRUCTION_GAP,
    UNEXPLAINED,
    autoencoder_done,
    diffusion_done,
    held_back,
)
from nndiff.training.loops import train_autoencoder, train_diffusion


def point(acc, spread=1.0):
    return {"val_acc": acc, "spread": spread}


def test_diffusion_stops_only_after_patience_checks_without_improvement():
    rising = [point(50 + 5 * i) for i in range(6)]
    assert not diffusion_done(rising)
    flat = [point(70), point(80), *[point(80 + MIN_GAIN / 2) for _ in range(PATIENCE)]]
    assert diffusion_done(flat)
    assert not diffusion_done(flat[:-1])  # one check without gain is not yet a plateau
    # the accuracy is flat but the spread still approaches the snapshots': not done
    narrowing = [point(80, 3.0), point(80, 2.0), point(80, 1.5), point(80, 1.2)]
    assert not diffusion_done(narrowing)
    # a spread that overshoots below 1 is as far off as one above: |log ratio| is what counts
    assert diffusion_done([point(80, 1.0), point(80, 1.0), point(80, 1.05), point(80, 0.95)])
    # accuracy bought by narrowing past the snapshots' is no improvement: the spread decides
    def near(acc, spread):
        return {**point(acc, spread), "snapshots_val_acc": 76.0}

    narrowing_past = [near(74.0, 2.0), near(75.6, 1.0), near(75.8, 0.8), near(76.0, 0.7)]
    assert diffusion_done(narrowing_past)
    assert not diffusion_done([near(73.0, 1.0), near(74.0, 1.0), near(74.5, 1.0), near(75.0, 1.0)])  # still learning


def test_autoencoder_stops_when_accuracy_is_kept_and_the_variation_reproduced_or_no_longer_improving():
    def ae(gap, unexplained):
        return {"gap": gap, "unexplained": unexplained}

    assert autoencoder_done([ae(RECONSTRUCTION_GAP, UNEXPLAINED)])
    assert not autoencoder_done([ae(RECONSTRUCTION_GAP + 0.01, 0.0)])
    # accuracy kept by reconstructions that all collapse to the mean is not enough ...
    assert not autoencoder_done([ae(-0.2, 0.5)])
    assert not autoencoder_done([ae(-0.2, 0.9), ae(-0.2, 0.5)])  # ... while they still get better at the variation
    assert autoencoder_done([ae(-0.2, 0.5), ae(-0.2, (1 - MIN_RELATIVE_GAIN / 2) * 0.5)])  # a plateau
    assert not autoencoder_done([ae(-0.2, 0.5), ae(1.0, 0.5)])  # a plateau that loses accuracy is not done
    assert not autoencoder_done([])


def test_held_back_snapshots_are_the_last_stretch_of_each_run():
    """A tenth of the zoo, taken from the end of every run (not single snapshots between training
    ones, which a reconstruction could interpolate), shared out by run size."""
    assert held_back([0] * 200).tolist() == list(range(180, 200))
    runs = [0] * 100 + [1] * 60 + [2] * 40
    rows = held_back(runs).tolist()
    assert len(rows) == 20 and rows == list(range(90, 100)) + list(range(154, 160)) + list(range(196, 200))
    assert len(held_back([0] * 5000)) == 32  # capped, so checks stay cheap on large zoos
    assert len(held_back([0] * 9)) == 0
    assert len(held_back(list(range(100)))) == 0  # runs of one snapshot each: none can spare its only one


def test_the_normalizer_is_fitted_without_the_held_back_rows():
    from nndiff.params.normalizer import Normalizer

    x = torch.randn(50, 6)
    rows = torch.arange(45)
    x[45:] = 1000.0  # held-back rows far away: a normalizer that saw them would be dominated by them
    element = Normalizer.fit(x, None, "element", rows=rows)
    torch.testing.assert_close(element.mean, x[:45].mean(0))
    torch.testing.assert_close(element.std, x[:45].std(0, unbiased=False))
    layout = Layout((Entry("a", (2,), 0), Entry("b", (4,), 2)))
    layer = Normalizer.fit(x, layout, "layer", rows=rows)
    torch.testing.assert_close(layer.mean[:2], x[:45, :2].mean().expand(2))
    torch.testing.assert_close(layer.std[2:], x[:45, 2:].std(unbiased=False).expand(4))


class ScriptedJudge:
    """Answers the autoencoder's checks from a script; records what it was asked about."""

    def __init__(self, gaps):
        self.gaps, self.calls = list(gaps), []

    def reconstruction(self, ae, normalizer, rows, device):
        self.calls.append(rows.clone())
        return {"val_acc": 90.0, "gap": self.gaps.pop(0), "unexplained": 0.01}


def ae_config(**kw):
    config = TrainConfig()
    config.autoencoder.max_steps, config.autoencoder.check_every = kw.get("max_steps", 200), 20
    return config


def test_the_autoencoder_stops_at_the_first_check_within_tolerance_and_never_trains_on_held_back_rows():
    x = torch.randn(40, 24)
    rows = held_back([0] * 40)
    x[rows] = float("nan")  # a held-back row in a training batch would make every later loss NaN
    judge = ScriptedJudge([3.0, 1.0, 0.4, 0.1, 0.1])
    _, stats = train_autoencoder(x, ae_config(), torch.Generator().manual_seed(0), False, judge=judge, normalizer=None)
    assert stats["steps"] == 60 and stats["stopped_early"] and stats["budget"] == "validation"
    assert [p["step"] for p in stats["curve"]] == [20, 40, 60]
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in stats["curve"])
    assert all(torch.equal(c, rows) for c in judge.calls) and stats["held_back_snapshots"] == len(rows)


def test_a_fixed_budget_trains_every_step_and_asks_no_judge():
    config = ae_config()
    config.autoencoder.steps = 50
    _, stats = train_autoencoder(torch.randn(40, 24), config, torch.Generator().manual_seed(0), False, judge=None)
    assert stats["steps"] == 50 and stats["budget"] == "fixed" and not stats["stopped_early"]
    assert [p["step"] for p in stats["curve"]] == [20, 40, 50] and "val_acc" not in stats["curve"][0]


def test_a_budget_check_does_not_change_what_training_draws():
    """The check runs on validation only; it must not consume the loops' random streams, or a run with
    checks would train on other batches than the same run without them."""
    x = torch.randn(40, 24)
    config = ae_config(max_steps=60)

    class NoisyJudge(ScriptedJudge):
        def reconstruction(self, *args):
            torch.randn(1000)  # draws from the global stream, as sampling and dropout would
            return super().reconstruction(*args)

    torch.manual_seed(0)  # the autoencoder's initialization and its noise augmentation draw from the global stream
    quiet, _ = train_autoencoder(x, config, torch.Generator().manual_seed(0), False, judge=ScriptedJudge([9.0] * 3))
    torch.manual_seed(0)
    noisy, _ = train_autoencoder(x, config, torch.Generator().manual_seed(0), False, judge=NoisyJudge([9.0] * 3))
    for a, b in zip(quiet.state_dict().values(), noisy.state_dict().values()):
        assert torch.equal(a, b)


def test_an_interrupted_diffusion_loop_resumes_to_the_same_stop(tmp_path, monkeypatch):
    """Stopping is decided from the curve, which the checkpoint keeps: a loop killed after a check
    and restarted stops at the same step with the same weights as one that ran through."""
    monkeypatch.setattr("nndiff.training.progress.CHECKPOINT_EVERY", 100)
    z = torch.randn(24, 4, 8)
    config = TrainConfig()
    config.diffusion.max_steps, config.diffusion.check_every = 300, 50
    script = [60.0, 70.0, 70.0, 70.0, 70.0, 70.0]

    def checker():
        answers = iter(script)
        return lambda ema: {"val_acc": next(answers), "spread": 1.0}

    torch.manual_seed(0)  # the denoiser's initialization draws from the global stream
    through, stats = train_diffusion(z, config, torch.Generator().manual_seed(0), False, check_batch=checker())
    assert stats["steps"] == 50 * (2 + PATIENCE) and stats["stopped_early"]

    class Interrupt(Exception):
        pass

    checkpoints = Stage(tmp_path)
    answers = checker()
    calls = []

    def dies_after_two(ema):
        calls.append(1)
        if len(calls) > 2:
            raise Interrupt
        return answers(ema)

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train_diffusion(z, config, torch.Generator().manual_seed(0), False, stage=checkpoints, check_batch=dies_after_two)
    saved = checkpoints.load("diffusion")
    assert saved is not None and len(saved["curve"]) == 2  # the checkpoint at step 100 holds the two checks
    resumed, again = train_diffusion(z, config, torch.Generator().manual_seed(99), False, stage=checkpoints, check_batch=answers)
    assert again["steps"] == stats["steps"] and again["resumed_at_step"] == 100
    assert [p["val_acc"] for p in again["curve"]] == [p["val_acc"] for p in stats["curve"]]
    for a, b in zip(through.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # the loop saved its state where it stopped: a rerun trains and checks nothing more
    finished, last = train_diffusion(z, config, torch.Generator().manual_seed(5), False, stage=checkpoints, check_batch=None)
    assert last["steps"] == stats["steps"] and last["resumed_at_step"] == stats["steps"]
    for a, b in zip(through.state_dict().values(), finished.state_dict().values()):
        assert torch.equal(a, b)


def test_automatic_budgets_end_to_end_record_their_curves_and_plot_them(tiny_run, tmp_path):
    """`nndiff train` with the default budgets on a real zoo: both loops are judged on validation, the
    choice lands in train_stats.json and the report shows it."""
    run = tmp_path / "auto"
    config = tmp_path / "c.yaml"
    config.write_text("autoencoder:\n  kind: conv\n  max_steps: 100\n  check_every: 50\n"
                      "diffusion:\n  max_steps: 200\n  check_every: 50\n")
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(run), "--config", str(config)]) == 0
    stats = json.loads((run / "train_stats.json").read_text())
    for loop, cap in (("autoencoder", 100), ("diffusion", 200)):
        s = stats[loop]
        assert s["budget"] == "validation" and s["curve"] and s["max_steps"] == cap
        assert [p["step"] for p in s["curve"]] == list(range(50, s["steps"] + 1, 50))  # a check every 50 steps
        assert s["steps"] == s["curve"][-1]["step"] <= cap and s["stopped_early"] == (s["steps"] < cap)
        assert all(0 <= p["val_acc"] <= 100 for p in s["curve"])
    assert all(p["unexplained"] >= 0 for p in stats["autoencoder"]["curve"])
    assert stats["autoencoder"]["held_back_snapshots"] == len(held_back([0] * 24))
    assert main(["--quiet", "generate", "--run", str(run), "-n", "6", "--steps", "5"]) == 0
    assert main(["--quiet", "report", "--run", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "## Training budgets" in report and "chosen by validation" in report
    assert "held-back snapshots (the end of each run, never trained on)" in report
    assert (run / "report" / "training.png").stat().st_size > 1000


def test_steps_take_a_number_or_auto_from_yaml_and_the_command_line(tmp_path, capsys):
    from nndiff.errors import NndiffError

    config = TrainConfig.from_dict({"autoencoder": {"steps": "auto"}, "diffusion": {"steps": "1e3"}})
    assert (config.autoencoder.steps, config.diffusion.steps) == ("auto", 1000)
    assert TrainConfig().autoencoder.steps == TrainConfig().diffusion.steps == "auto"  # the default
    with pytest.raises(NndiffError, match="or 'auto'"):
        TrainConfig.from_dict({"autoencoder": {"steps": 0}})
    with pytest.raises(NndiffError, match="expected an integer or 'auto', got 'soon'"):
        TrainConfig.from_dict({"autoencoder": {"steps": "soon"}})
    assert main(["train", "--zoo", str(tmp_path), "--ae-steps", "soon"]) == 2
    assert "expected an integer or 'auto'" in capsys.readouterr().err
