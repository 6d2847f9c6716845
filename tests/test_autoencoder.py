import pytest
import torch

from nndiff.autoencoder import Autoencoder, AutoencoderConfig


@pytest.mark.parametrize("dim", [1, 7, 64, 193, 1001])
@pytest.mark.parametrize("depth", [2, 4])
def test_shapes_for_any_length(dim, depth):
    ae = Autoencoder(dim, AutoencoderConfig(channels=8, depth=depth, latent_channels=3))
    x = torch.randn(5, dim)
    z = ae.encode(x)
    assert z.shape == (5, *ae.latent_shape)
    assert ae.latent_shape == (3, -(-dim // 2**depth))
    assert ae.decode(z).shape == (5, dim)
    ae.train()
    assert ae(x).shape == (5, dim)


def test_latent_is_standardized_per_sample_and_noise_only_in_training():
    torch.manual_seed(0)
    ae = Autoencoder(50, AutoencoderConfig(channels=8, depth=2))
    x = torch.randn(4, 50) * 100
    z = ae.encode(x).flatten(1)
    torch.testing.assert_close(z.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    ae.eval()
    assert torch.equal(ae(x), ae(x))
    ae.train()
    assert not torch.equal(ae(x), ae(x))


def test_autoencoder_learns_a_small_zoo():
    torch.manual_seed(0)
    from nndiff.config import TrainConfig
    from nndiff.train import train_autoencoder

    basis = torch.randn(3, 40)
    x = torch.randn(64, 3) @ basis
    x = (x - x.mean(0)) / x.std(0)
    cfg = TrainConfig()
    cfg.autoencoder.steps, cfg.autoencoder.latent_noise = 300, 0.0
    _, stats = train_autoencoder(x, cfg, torch.Generator().manual_seed(0), progress=False)
    assert stats["reconstruction_mse"] < 0.1  # from 1.0 for the trivial zero output
