"""`--lr auto`: the probe's choice rule, and a collection that uses what it found."""

import json

from nndiff.cli.main import main
from nndiff.zoo.lr_probe import choose_rate, tolerance


def row(lr, acc, iou, move=1e-2, diverged=False):
    return {"lr": lr, "val_acc": acc, "iou": iou, "move": move, "diverged": diverged}


def test_the_rung_whose_snapshots_lie_furthest_apart_while_keeping_accuracy_is_chosen():
    rows = [row(0.01, 98.0, 0.99, 1e-3), row(0.1, 97.9, 0.90, 3e-3), row(1.0, 90.0, 0.50, 9e-3), row(10.0, 0, 0, diverged=True)]
    assert choose_rate(rows, 98.0, 1.0)["lr"] == 0.1  # lr 1 moves further but lost 8 points
    # past the point where SGD bounces in a valley the spacing falls again: the larger rate loses
    assert choose_rate([row(2.0, 97.7, 0.96, 7e-3), row(6.3, 97.7, 1.0, 6e-3)], 98.0, 1.0)["lr"] == 2.0
    # snapshots that make the same mistakes are copies: another rung is preferred, even one that moves less
    assert choose_rate([row(0.5, 98.0, 1.0, 5e-3), row(1.0, 98.0, 0.93, 4e-3)], 98.0, 1.0)["lr"] == 1.0
    assert choose_rate([row(0.5, 98.0, 1.0, 5e-3)], 98.0, 1.0)["lr"] == 0.5  # ... but copies are better than nothing
    assert choose_rate([row(0.1, 98.0, 0.5, move=0.0)], 98.0, 1.0) is None  # snapshots that do not move are copies
    assert choose_rate([row(0.1, 90.0, 0.5)], 98.0, 1.0) is None
    # parameters that run away (a linear head whose logits just grow) keep accuracy but are no zoo
    assert choose_rate([row(1.5, 83.0, 0.59, 0.56), row(5000.0, 79.4, 0.40, 2.3e3)], 79.0, 0.33)["lr"] == 1.5


def test_tolerance_is_a_quarter_point_or_one_validation_sample():
    assert tolerance(5000) == 0.25
    assert abs(tolerance(300) - 1 / 3) < 1e-12


def test_auto_lr_gives_a_zoo_that_is_not_copies_and_records_its_table(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    # mnist1d-cnn: its 5,000 validation samples tell copies apart; on digits-cnn's 300 (about 5 errors
    # a model) one seed's probe run can look diverse where the collection's runs are copies
    assert main(["--quiet", "collect", "--task", "mnist1d-cnn", "-k", "16", "--heldout", "4", "--burn-in", "20",
                 "--lr", "auto", "--out", str(zoo)]) == 0
    out = capsys.readouterr().out
    m = json.loads((zoo / "manifest.json").read_text())
    probe = m["lr_probe"]
    assert probe["lr"] in [r["lr"] for r in probe["table"]] and len(probe["table"]) >= 5
    assert m["collect"]["lr"] == probe["lr"] and m["settings"]["lr"] == "auto"
    assert "--lr auto chose" in out
    assert m["mean_pairwise_iou_val"] < 0.995
    chosen = next(r for r in probe["table"] if r["lr"] == probe["lr"])
    assert chosen["val_acc"] >= probe["base_val_acc"] - probe["tolerance"]


def test_a_resumed_collection_reuses_the_probe_instead_of_running_it_again(tmp_path, monkeypatch):
    import pytest

    from nndiff.runtime.stage import Stage
    from nndiff.zoo import lr_probe
    from nndiff.zoo.collect import collect
    from nndiff.zoo.config import CollectConfig

    progress = Stage(tmp_path)
    config = CollectConfig(k=4, heldout=0, burn_in=5, lr="auto")
    first = collect("digits-cnn", config, False, stage=progress)  # leaves its progress, as a killed run would
    monkeypatch.setattr(lr_probe, "probe", lambda *a, **k: pytest.fail("the probe ran again"))
    second = collect("digits-cnn", config, False, stage=progress)
    assert second.info["lr_probe"] == first.info["lr_probe"]
    assert second.info["collect"]["lr"] == first.info["lr_probe"]["lr"]


def test_a_probe_that_finds_no_rate_falls_back_to_the_tasks_hint_with_a_warning(monkeypatch):
    """--lr auto is the default, so a model where every rate loses accuracy must still be collected
    (at the task's collect_lr), with a warning that names the fix."""
    import pytest

    from nndiff.zoo import lr_probe

    class Task:
        def evaluate(self, model, split):
            return type("E", (), {"accuracy": 98.0})()

    monkeypatch.setattr(lr_probe, "measure_rung", lambda task, base, layout, val, lr, *a, **k: row(lr, 50.0, 0.5))
    with pytest.warns(UserWarning, match="give a rate with --lr"):
        found = lr_probe.probe(Task(), None, None, [0] * 400, hint=0.3, every=1, momentum=0.9, seed=0, device="cpu")
    assert found["lr"] == 0.3 and found["fallback"]
    assert "fell back" in lr_probe.probe_lines(found)[0]
