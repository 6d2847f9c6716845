import numpy as np
import pytest
import torch

from nndiff.tasks import get_task, mnist1d_data
from nndiff.tasks import mnist1d as m1d


def test_mnist1d_is_generated_locally_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("NNDIFF_CACHE", str(tmp_path))
    state = np.random.get_state()
    splits = m1d.load_mnist1d(300, 100, 200)
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "val": 100, "test": 200}
    assert splits["train"].x.shape == (300, 1, 40) and splits["train"].x.dtype == torch.float32
    assert set(splits["test"].y.tolist()) == set(range(10))
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator is untouched
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # a corrupt cache is made again
    again = m1d.load_mnist1d(300, 100, 200)
    assert torch.equal(again["test"].x, splits["test"].x)


def test_builtin_data_is_the_reference_data_on_every_install(monkeypatch, tmp_path):
    """The default task's data is generated without library code whose rounding varies by version,
    and must equal the stored fingerprint; a cache holding other data is replaced by it."""
    monkeypatch.setenv("NNDIFF_CACHE", str(tmp_path))
    task = get_task("mnist1d-cnn")
    splits = task.splits()
    assert [len(splits[k]) for k in ("train", "val", "test")] == [m1d.N_TRAIN, m1d.N_VAL, m1d.N_TEST]
    assert len(splits["test"]) >= 10_000  # fewer make the similarity measures saturate
    x = torch.cat([splits[k].x for k in ("train", "val", "test")]).squeeze(1).numpy()
    y = torch.cat([splits[k].y for k in ("train", "val", "test")]).numpy()
    assert mnist1d_data.fingerprint(x, y) == mnist1d_data.FINGERPRINT == task.data_fingerprint
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    np.savez(cached, x=x + 1, y=y)  # someone else's data under the cache's name
    assert torch.equal(m1d.load_mnist1d()["test"].x, splits["test"].x)


@pytest.mark.parametrize(
    "name,params,shape", [("mnist1d-cnn", (20_000, 60_000), (1, 40)), ("digits-cnn", (5_000, 30_000), (1, 8, 8))]
)
def test_models_and_evaluation(name, params, shape):
    task = get_task(name)
    model = task.make_model()
    n = sum(p.numel() for p in model.parameters())
    assert params[0] <= n <= params[1]
    x = torch.randn(7, *shape)
    y = torch.arange(7) % 10
    from nndiff.tasks import Split

    ev = task.evaluate(model, Split(x, y))
    assert ev.predictions.shape == (7,)
    assert ev.accuracy == pytest.approx(100 * float((ev.predictions == y).float().mean()))


def test_vision_augmentation_is_per_image_and_draws_only_from_the_loops_generator():
    """Crop offsets and flips differ from image to image and come from the generator the training
    loop passes (saved in its checkpoints), never from the global RNG: a vision zoo is reproducible
    and does not depend on which process collected which run."""
    from nndiff.tasks.vision import VisionTask

    task = VisionTask.__new__(VisionTask)  # augment needs no data
    x = torch.randn(64, 3, 8, 8)
    before = torch.get_rng_state()
    a = task.augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, task.augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, task.augment(x, torch.Generator().manual_seed(4)))
    gen = torch.Generator().manual_seed(3)
    offsets, flips = torch.randint(0, 9, (64, 2), generator=gen), torch.rand(64, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    for i in range(64):
        dy, dx = offsets[i].tolist()
        crop = padded[i, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(a[i], crop.flip(2) if flips[i] else crop)
    assert len({tuple(o) for o in offsets.tolist()}) > 10 and 0 < int(flips.sum()) < 64
