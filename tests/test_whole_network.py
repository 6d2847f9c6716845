"""Whole networks: the default generator learns the snapshots' distribution instead of placing every
model near their mean (what the conv autoencoder did: spread 0.27-0.58x on the built-ins)."""

import json

from nndiff.analysis.distribution import spread_ratio
from nndiff.cli.main import main
from nndiff.generator.generated import read_generated
from nndiff.zoo.format import Zoo


def test_generated_whole_networks_spread_like_the_snapshots(tmp_path, capsys):
    """Fails for a generator whose samples collapse towards the zoo's mean: on a small whole-network
    zoo (mnist1d-mlp, 14,154 values) their spread (median over parameters of the generated std over
    the snapshots') must lie between 0.5x and 2x, and the health check must fail nothing."""
    zoo_dir, run = tmp_path / "zoo", tmp_path / "run"
    assert main(["--quiet", "collect", "--task", "mnist1d-mlp", "-k", "40", "--heldout", "10", "--epochs", "3",
                 "--out", str(zoo_dir)]) == 0
    assert main(["--quiet", "train", "--zoo", str(zoo_dir), "--out", str(run), "--diffusion.max_steps", "500",
                 "--diffusion.check_every", "100"]) == 0
    assert json.loads((run / "train_stats.json").read_text())["autoencoder"]["codec"]["kind"] == "pca"
    assert main(["--quiet", "generate", "--run", str(run), "-n", "30", "--steps", "25"]) == 0
    zoo = Zoo.load(zoo_dir)
    spread = spread_ratio(read_generated(run, zoo.layout), zoo.params)["median"]
    assert 0.5 <= spread <= 2, spread
    capsys.readouterr()
    assert main(["doctor", "--run", str(run)]) == 0  # exit 1 on any failing check
    assert "FAIL" not in capsys.readouterr().out
