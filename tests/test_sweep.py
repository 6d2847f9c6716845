import json

import pytest
import torch

from nndiff.cli.main import main
from nndiff.pipeline.rundir import read_run_config
from nndiff.pipeline.sweep import norm_layer_names, plan_rows
from nndiff.tasks import get_task
from nndiff.zoo.format import Zoo

TINY = ["--task", "digits-cnn", "-k", "8", "--burn-in", "5", "--heldout", "4", "--ae-steps", "20",
        "--diffusion-steps", "20", "-n", "4", "--steps", "5"]


def test_rows_of_each_ablation():
    assert [r[0] for r in plan_rows("k", "mnist1d-cnn", None)] == ["K=1", "K=10", "K=50", "K=200"]
    assert [r[1]["noise"] for r in plan_rows("noise", "mnist1d-cnn", None)] == [(0, 0), (0.001, 0), (0, 0.1), (0.001, 0.1)]
    assert norm_layer_names(get_task("mnist1d-cnn").make_model()) == ["bn1", "bn2", "bn3", "bn4"]
    layers = plan_rows("layers", "mnist1d-cnn", None)
    assert [r[1]["select"] for r in layers] == [["bn4.*"], ["bn3.*", "bn4.*"], ["bn2.*", "bn3.*", "bn4.*"]]


def test_k_sweep_writes_a_table_with_one_run_per_row(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["--quiet", "sweep", "--ablation", "k", "--values", "1", "8", "--out", str(out), *TINY]) == 0
    rows = json.loads((out / "sweep_k.json").read_text())
    assert [r["row"] for r in rows] == ["K=1", "K=8"]
    assert [r["originals"]["count"] for r in rows] == [1, 8]
    shared = Zoo.load(out / "zoo")
    for r, k in zip(rows, (1, 8)):
        run = out / "k" / r["row"].replace("=", "")
        assert (run / "report" / "report.md").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        assert r["generated"]["mean"] == pytest.approx(metrics["generated"]["test_acc"]["mean"])  # the row is its run
        row_zoo = Zoo.load(read_run_config(run)[0])
        # each row trains on K snapshots of the one shared zoo
        assert len(row_zoo) == k and all(any(torch.equal(p, q) for q in shared.params) for p in row_zoo.params)
    table = (out / "sweep_k.md").read_text()
    assert "| K=1 | 1 |" in table and "| K=8 | 8 |" in table
    assert "sweep_k.md" in capsys.readouterr().out


def test_sweep_collects_its_shared_zoo_from_the_given_base(tiny_run, tmp_path, monkeypatch):
    """`sweep --base FILE` used to train a base of its own and ignore the file; `--fresh` reaches the
    shared zoo too (a finished one is reused only with the same settings)."""
    from nndiff.errors import NndiffError
    from nndiff.pipeline import sweep

    seen = {}

    def collect_zoo(task, out, config, progress=True, base=None, fresh=False):
        seen["base"], seen["fresh"] = base, fresh
        raise NndiffError("stop here")

    monkeypatch.setattr(sweep, "collect_zoo", collect_zoo)
    base = tiny_run / "zoo" / "base.safetensors"
    assert main(["--quiet", "sweep", "--ablation", "k", "--values", "1", "--out", str(tmp_path / "s"), "--base", str(base), "--fresh", *TINY]) == 2
    assert seen == {"base": base, "fresh": True}
