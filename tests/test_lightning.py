"""The Lightning callback (nndiff[lightning]) with a real Trainer on the CPU: examples/lightning_loop.py.

CI installs the extra, so there this test runs; elsewhere it is skipped only when lightning is missing."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nndiff.cli.main import main

if os.environ.get("CI"):
    import lightning  # noqa: F401  (in CI a missing extra must fail, not skip)
else:
    pytest.importorskip("lightning")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_loop.py"


def test_a_lightning_trainer_records_a_zoo_that_goes_through_the_pipeline(tmp_path):
    spec = importlib.util.spec_from_file_location("lightning_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(tmp_path, k=20, heldout=6)
    zoo = tmp_path / "zoo"
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert manifest["task"] == "digits-cnn" and manifest["count"] == 20 and len(manifest["heldout"]) == 6
    assert [s["step"] for s in manifest["snapshots"]] == list(range(1, 21))
    scores = [s.get("val_score") for s in manifest["snapshots"]]
    assert scores[0] is None and all(0 <= v <= 100 for v in scores[10:])  # logged from the first validation on
    rows = load_file(zoo / "params.safetensors")["params"]
    assert len(torch.unique(rows, dim=0)) == 20  # every step changed bn2
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--zoo", str(zoo), "--out", str(run), "--ae-steps", "100",
                 "--diffusion-steps", "100"]) == 0
    assert main(["--quiet", "generate", "--run", str(run), "-n", "10"]) == 0
    assert main(["--quiet", "evaluate", "--run", str(run)]) == 0
