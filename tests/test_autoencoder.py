import pytest
import torch

from nndiff.errors import NndiffError
from nndiff.generator.autoencoder import Autoencoder, AutoencoderConfig


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
    from nndiff.generator.config import TrainConfig
    from nndiff.training.loops import train_autoencoder

    basis = torch.randn(3, 40)
    x = torch.randn(64, 3) @ basis
    x = (x - x.mean(0)) / x.std(0)
    cfg = TrainConfig()
    cfg.autoencoder.steps, cfg.autoencoder.latent_noise = 300, 0.0
    _, stats = train_autoencoder(x, cfg, torch.Generator().manual_seed(0), progress=False)
    assert stats["reconstruction_mse"] < 0.1  # from 1.0 for the trivial zero output


@pytest.mark.parametrize("dim,token", [(1, 4), (1000, 16), (4097, 64)])
def test_tokenized_shapes(dim, token):
    ae = Autoencoder(dim, AutoencoderConfig(channels=8, depth=2, token_size=token))
    x = torch.randn(3, dim)
    z = ae.encode(x)
    assert z.shape == (3, *ae.latent_shape)
    assert ae.latent_shape[1] == -(-dim // (4 * token))
    assert ae.decode(z).shape == (3, dim)


def test_token_embedding_sees_each_value_of_its_token():
    from nndiff.generator.tokens import PerPositionIn, PerPositionOut

    torch.manual_seed(0)
    emb, out = PerPositionIn(5, 12, token=4), PerPositionOut(5, 12, token=4)
    x = torch.randn(2, 12)
    h = emb(x)
    assert h.shape == (2, 5, 3)
    # token n, channel c: the shared projection of the token's 4 values plus token n's position embedding
    torch.testing.assert_close(h[1, 2, 1], (x[1, 4:8] * emb.weight[2]).sum() + emb.bias[2, 1])
    y = out(h)
    # value 9 is value 1 of token 2: the shared read-out of token 2's features plus its own bias
    torch.testing.assert_close(y[0, 9], (h[0, :, 2] * out.weight[1]).sum() + out.bias[9])
    assert sum(p.numel() for p in emb.parameters()) == 5 * 4 + 5 * 3  # grows with D / token only


def test_automatic_token_size():
    from nndiff.generator.tokens import auto_token_size

    assert auto_token_size(192) == 1 and auto_token_size(4096) == 1
    assert auto_token_size(14_154) == 16 and auto_token_size(1_000_000) == 1024
    ae = Autoencoder(10_000, AutoencoderConfig(channels=8, depth=2))  # token_size 0: automatic
    assert ae.token == 16 and ae.latent_shape == (4, 157)  # ceil(10,000 / (16 * 2**2))


def test_input_noise_drawn_after_the_token_map_has_the_distribution_of_noise_before_it():
    """Tokenized: W(x + s·e) is drawn as W x + s·L z with L Lᵀ = W Wᵀ; its covariance matches adding the
    noise to the input, which a transposed factor (covariance Lᵀ L) would not."""
    from nndiff.generator.tokens import PerPositionIn

    torch.manual_seed(0)
    layer = PerPositionIn(4, 64, token=16)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 16) * torch.linspace(0.2, 2, 16))  # a W Wᵀ far from diagonal
        x = torch.randn(20000, 60)  # not a multiple of the token: the last token is padded
        clean = layer(x)
        after = (layer(x, 0.5) - clean).transpose(1, 2).reshape(-1, 4)
        before = (layer(x + 0.5 * torch.randn_like(x)) - clean)[:, :, :3].transpose(1, 2).reshape(-1, 4)
    expected = 0.25 * layer.weight @ layer.weight.T
    off = lambda c: float((c - expected).norm() / expected.norm())  # noqa: E731
    assert off(before.T @ before / len(before)) < 0.03 and off(after.T @ after / len(after)) < 0.03
    factor = torch.linalg.cholesky(expected)
    assert off(factor.T @ factor) > 0.2  # the test tells the right factor from the wrong one


def test_tokens_follow_the_layers():
    """Layers of 5 and 7 values in tokens of 4: layer 1 gets tokens 0-1, layer 2 tokens 2-3, so no
    token mixes two layers (cut across the layers, token 1 would hold values 4-7)."""
    from nndiff.generator.tokens import PerPositionIn, PerPositionOut, layer_spans

    torch.manual_seed(0)
    spans = layer_spans([5, 7], 4)
    assert spans == [(0, 5, 0), (5, 7, 2)]
    emb, out = PerPositionIn(3, 24, 4, spans), PerPositionOut(3, 24, 4, spans)
    x = torch.randn(2, 12)
    h = emb(x)
    assert h.shape == (2, 3, 6)  # 4 tokens of values and 2 of padding (the latent grid's multiple)
    moved = x.clone()
    moved[:, 5] += 1.0  # the first value of layer 2
    changed = (emb(moved) - h).abs().sum((0, 1)) > 0
    assert changed.tolist() == [False, False, True, False, False, False]
    torch.testing.assert_close(h[0, :, 1], emb.weight[:, 0] * x[0, 4] + emb.bias[:, 1])  # padded: value 4 alone
    y = out(h)
    assert y.shape == (2, 12)
    # value 5 is value 0 of token 2: token 2's read-out plus the bias of token 2's first slot
    torch.testing.assert_close(y[1, 5], (h[1, :, 2] * out.weight[0]).sum() + out.bias[8])
    ae = Autoencoder(12, AutoencoderConfig(channels=8, depth=1, token_size=4), sizes=[5, 7])
    assert ae.latent_shape == (4, 2) and ae.decode(ae.encode(x)).shape == (2, 12)
    with pytest.raises(ValueError, match="add up"):
        Autoencoder(12, AutoencoderConfig(token_size=4), sizes=[5, 6])


def test_a_saved_generator_keeps_its_layer_tokens(tmp_path):
    """The codec's class and constructor arguments (layer sizes among them) travel with
    autoencoder.safetensors; a file without them is refused, not rebuilt from config.yaml."""
    from nndiff.generator.config import TrainConfig
    from nndiff.generator.denoiser import Denoiser
    from nndiff.generator.sampler import ParamGenerator
    from nndiff.io.tensors import load_tensors, save_tensors
    from nndiff.params.layout import Layout
    from nndiff.params.normalizer import Normalizer

    torch.manual_seed(0)
    config = TrainConfig()
    config.autoencoder.channels, config.autoencoder.depth, config.autoencoder.token_size = 8, 1, 4
    layout = Layout.from_shapes([("a", (5,)), ("b", (7,))])
    ae = Autoencoder(12, config.autoencoder, [5, 7]).eval()
    den = Denoiser(ae.latent_shape, config.denoiser)
    unit = lambda n: Normalizer(torch.zeros(n), torch.ones(n))  # noqa: E731
    ParamGenerator(layout, config, unit(12), unit(8), ae, den).save(tmp_path)
    loaded = ParamGenerator.load(tmp_path, config)
    z = torch.randn(3, *ae.latent_shape)
    assert loaded.autoencoder.sizes == [5, 7]
    torch.testing.assert_close(loaded.autoencoder.decode(z), ae.decode(z))
    path = tmp_path / "autoencoder.safetensors"
    config.autoencoder.token_size = 1  # config.yaml does not describe the saved codec: the file does
    assert ParamGenerator.load(tmp_path, config).autoencoder.token == 4
    save_tensors(path, load_tensors(path), {"dim": 12, "layer_sizes": [5, 7]})
    with pytest.raises(NndiffError, match="does not record which codec it holds"):
        ParamGenerator.load(tmp_path, config)
