"""A zoo larger than memory: it is memory-mapped, and passes over it go block by block.

Each block-wise computation is checked against the plain whole-matrix one with blocks made tiny
(BLOCK_VALUES patched), so a block that is skipped, overlapped or weighted wrongly fails.
"""

import pytest
import torch

import nndiff.params.rows as rows_module
from nndiff import NndiffError
from nndiff.analysis.distribution import nearest_distances, spread_ratio
from nndiff.analysis.doctor import parameter_spread
from nndiff.generator.autoencoder import Autoencoder, AutoencoderConfig
from nndiff.io.tensors import map_tensors, save_tensors
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer
from nndiff.params.rows import column_blocks, fingerprint, finite_rows, row_blocks
from nndiff.training.loops import autoencoder_step, encode_all, reconstruction_mse
from nndiff.zoo.format import Zoo


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(rows_module, "BLOCK_VALUES", 24)


def test_blocks_cover_every_row_and_column_once(tiny_blocks):
    for count, dim in ((7, 5), (1, 100), (30, 1), (0, 3)):
        rows = [i for b in row_blocks(count, dim) for i in range(count)[b]]
        cols = [i for b in column_blocks(count, dim) for i in range(dim)[b]]
        assert rows == list(range(count)) and cols == list(range(dim))
    assert all(b.stop - b.start <= 4 for b in row_blocks(10, 6))  # 24 values of 6 each


def test_a_loaded_zoo_is_memory_mapped_and_copy_on_write(tmp_path):
    layout = Layout.from_shapes([("w", (3, 4)), ("b", (4,))])
    rows = torch.randn(5, layout.size)
    Zoo("t", layout, rows, {"w": torch.zeros(1)}, [{"val_acc": 50.0, "test_acc": 50.0}] * 5).save(tmp_path)
    zoo = Zoo.load(tmp_path)
    assert torch.equal(zoo.params, rows)
    maps = open("/proc/self/maps").read()
    assert str((tmp_path / "params.safetensors").resolve()) in maps  # read through a mapping, not into memory
    zoo.params[0, 0] = 123.0  # copy-on-write: the file keeps its values
    assert torch.equal(Zoo.load(tmp_path).params, rows)


def test_a_truncated_params_file_is_a_one_line_error(tmp_path):
    save_tensors(tmp_path / "p.safetensors", {"params": torch.randn(4, 8)})
    data = (tmp_path / "p.safetensors").read_bytes()
    (tmp_path / "p.safetensors").write_bytes(data[:-10])
    with pytest.raises(NndiffError, match="may be truncated") as e:
        map_tensors(tmp_path / "p.safetensors")
    assert "\n" not in str(e.value)
    (tmp_path / "q.safetensors").write_bytes(b"\x05")
    with pytest.raises(NndiffError, match="bad header"):
        map_tensors(tmp_path / "q.safetensors")


def test_block_wise_statistics_equal_the_whole_matrix_ones(tiny_blocks):
    g = torch.Generator().manual_seed(0)
    x, originals = torch.randn(6, 50, generator=g), torch.randn(9, 50, generator=g) * 2 + 1
    originals[3] = x[2]  # an exact copy keeps distance 0
    whole = torch.cdist(x.double(), originals.double()).min(1).values
    assert torch.allclose(nearest_distances(x, originals), whole, rtol=1e-5)
    assert float(nearest_distances(x, originals)[2]) < 1e-3
    ratio = x.double().std(0) / originals.double().std(0)
    q = torch.quantile(ratio, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    got = spread_ratio(x, originals)
    assert got["median"] == pytest.approx(q[1]) and got["q25"] == pytest.approx(q[0])
    expected = float(originals.double().std(0).median() / originals.double().pow(2).mean().sqrt())
    assert parameter_spread(originals) == pytest.approx(expected)
    originals[5, 40] = float("nan")
    assert finite_rows(originals).tolist() == [i != 5 for i in range(9)]
    assert fingerprint(x) == fingerprint(x.clone())


def test_micro_batches_give_the_whole_batch_gradient(tiny_blocks):
    """With noise off, a step in micro-batches (4 rows of 6 values at a time) must change the
    weights exactly as one pass over the whole batch."""
    torch.manual_seed(0)
    config = AutoencoderConfig(channels=4, depth=1, input_noise=0.0, latent_noise=0.0)
    # the batch as the product draws it: raw rows, repeated, gathered and normalized a micro-batch at a time
    raw, rows = torch.randn(10, 6) * 3 + 1, torch.tensor([3, 1, 3, 0, 9, 9, 2, 5, 4, 7, 7, 8, 6, 0, 1, 2])
    norm = Normalizer(torch.full((6,), 1.0), torch.full((6,), 3.0))
    x = norm(raw[rows])
    one, parts = Autoencoder(6, config), Autoencoder(6, config)
    parts.load_state_dict(one.state_dict())
    for ae in (one, parts):
        ae.train()
    opt_one, opt_parts = torch.optim.SGD(one.parameters(), 0.1), torch.optim.SGD(parts.parameters(), 0.1)
    loss = torch.nn.functional.mse_loss(one(x), x)
    opt_one.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(one.parameters(), 1.0)
    opt_one.step()
    assert autoencoder_step(parts, parts, opt_parts, raw, rows=rows, normalizer=norm) == pytest.approx(loss.item(), rel=1e-5)
    for a, b in zip(one.parameters(), parts.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    parts.eval()
    norm = Normalizer(torch.zeros(6), torch.ones(6))
    assert torch.allclose(encode_all(parts, x, norm, "cpu"), parts.encode(x), atol=1e-6)
    expected = torch.nn.functional.mse_loss(parts(x), x).item()
    assert reconstruction_mse(parts, x, norm, "cpu") == pytest.approx(expected, rel=1e-5)


def test_the_principal_plane_is_the_pca_of_the_normalized_snapshots(tiny_blocks):
    """Found from the Gram matrix block by block, the plane must be sklearn's PCA (up to each
    component's sign): same explained variance, same coordinates for new rows."""
    from sklearn.decomposition import PCA

    from nndiff.analysis.plane import Plane

    g = torch.Generator().manual_seed(1)
    rows = torch.randn(12, 40, generator=g) * torch.linspace(0.1, 3, 40) + 5
    norm = Normalizer(rows.mean(0), rows.std(0) * 2)
    plane, pca = Plane(rows, norm), PCA(2).fit(norm(rows).double().numpy())
    assert plane.explained == pytest.approx(pca.explained_variance_ratio_.tolist(), rel=1e-4)
    new = torch.randn(5, 40, generator=g)
    ours, theirs = plane.project(new).double(), torch.from_numpy(pca.transform(norm(new).double().numpy()))
    signs = torch.sign((ours * theirs).sum(0))
    assert torch.allclose(ours * signs, theirs, atol=1e-4)


REUSE_SCRIPT = """
import sys, torch
from nndiff.runtime.memory import release_freed_memory, reuse_freed_memory
def rss():
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS:")).split()[1]) / 1024
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
blocks = [torch.ones(2**20) for _ in range(200)]  # 800 MiB in 4 MiB blocks
held = rss()
del blocks
kept = rss()
again = [torch.ones(2**20) for _ in range(200)]
reused = rss()
del again
release_freed_memory()
print(held, kept, reused, rss())
"""


def test_freed_memory_is_kept_for_reuse_under_glibc():
    """With reuse_freed_memory, 4 MiB blocks freed stay with the process and serve the next
    allocation (no fresh zero-filled pages); without it glibc returns them at once. Each case runs in
    a fresh process: the setting is process-wide."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def measure(mode):
        out = subprocess.run([sys.executable, "-c", REUSE_SCRIPT, mode], capture_output=True, text=True, check=True)
        return [float(v) for v in out.stdout.split()]

    held, kept, reused, released = measure("reuse")
    assert kept > held - 100  # freed, but kept for reuse
    assert reused < held + 100  # the second 800 MiB came from what was kept
    assert released < held - 400  # release_freed_memory gives it back
    held, kept, _, _ = measure("default")
    assert kept < held - 400  # the C library's default returns it at once: the setting is what keeps it


def test_tensors_are_written_a_block_at_a_time_in_the_safetensors_format(tmp_path, monkeypatch):
    """What save_tensors streams must be what safetensors itself reads back, for every dtype we
    store, a non-contiguous tensor, a 0-d and an empty one, with blocks smaller than a row."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    import nndiff.io.tensors as tensors_module

    monkeypatch.setattr(tensors_module, "BLOCK_BYTES", 12)
    g = torch.Generator().manual_seed(0)
    tensors = {
        "params": torch.randn(5, 7, generator=g),
        "wide": torch.randn(3, 4, generator=g, dtype=torch.float64).T,  # not contiguous
        "half": torch.randn(9, generator=g).bfloat16(),
        "steps": torch.arange(-3, 8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "none": torch.empty(0, 4),
    }
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors, {"layout": [1, 2], "name": "zoo"})
    back = load_file(path)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"layout": "[1, 2]", "name": '"zoo"'}
    mapped = map_tensors(path)
    for name, t in tensors.items():
        assert mapped[name].dtype == t.dtype and torch.equal(mapped[name], t), name
