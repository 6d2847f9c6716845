"""The autoencoder's functional loss (output_loss.py): reconstructions scored by the network's logits."""

import copy
import importlib

import torch
import torch.nn.functional as F

from nndiff.cli.main import main
from nndiff.generator.config import TrainConfig
from nndiff.params.normalizer import Normalizer
from nndiff.training.output_loss import INPUTS, OutputMatch
from nndiff.zoo.format import Zoo


def test_the_loss_is_the_logit_error_of_the_models_the_rows_make(tiny_run):
    """Each normalized row is un-normalized, put into the base model and run on the first training
    inputs: the loss must equal that computed the plain way, with the parameters written into copies
    of the model, and be zero for a perfect reconstruction."""
    zoo = Zoo.load(tiny_run / "zoo")
    task = zoo.make_task()
    normalizer = Normalizer.fit(zoo.params, zoo.layout, TrainConfig().normalization)
    match = OutputMatch(task, zoo.model(task), zoo.layout, normalizer, weight=3.0)
    rows = normalizer(zoo.params[:4])
    recon = rows + 0.5 * torch.randn(rows.shape, generator=torch.Generator().manual_seed(0))
    inputs = task.splits()["train"].x[:INPUTS]

    def logits(params):
        model = copy.deepcopy(zoo.model(task))
        outs = []
        for p in params:
            zoo.layout.write(model, p)
            outs.append(model(inputs))
        return torch.stack(outs)

    with torch.no_grad():
        expected = 3.0 * F.mse_loss(logits(normalizer.inverse(recon)), logits(zoo.params[:4]))
        assert torch.allclose(match(recon, rows), expected, rtol=1e-4, atol=1e-6)
        assert float(match(rows, rows)) == 0.0
    recon.requires_grad_(True)
    match(recon, rows).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0  # it trains the autoencoder


def test_training_with_the_output_weight_adds_the_loss_to_every_step(tiny_run, tmp_path, monkeypatch):
    """`--ae-output-weight` reaches every autoencoder step and is recorded with the run; 0 (the
    default) leaves the functional loss out."""
    output_loss = importlib.import_module("nndiff.training.output_loss")
    calls = []
    original = output_loss.OutputMatch.__call__

    def counted(self, recon, rows):
        calls.append(self.weight)
        return original(self, recon, rows)

    monkeypatch.setattr(output_loss.OutputMatch, "__call__", counted)
    args = ["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--ae-steps", "6", "--diffusion-steps", "2"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert calls == []
    assert main(args + ["--out", str(tmp_path / "functional"), "--ae-output-weight", "10"]) == 0
    assert calls == [10.0] * 6
    assert "output_weight: 10.0" in (tmp_path / "functional" / "config.yaml").read_text()
