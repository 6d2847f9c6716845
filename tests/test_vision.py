"""Vision tasks on tiny fixtures in the real formats, through the whole pipeline (needs nndiff[vision]).

CI installs the extra, so there these tests run; elsewhere they are skipped only when torchvision
or timm is missing.
"""

import importlib
import json
import os
import pickle
from pathlib import Path

import pytest

from nndiff import NndiffError
from nndiff.cli.main import main

if os.environ.get("CI"):
    import timm  # noqa: F401  (in CI a missing extra must fail, not skip)
    import torchvision  # noqa: F401
else:
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")

from tests import vision_fixtures as fx  # noqa: E402
from tests.checks import check_generated  # noqa: E402

# A fixed --lr: these tests are about the loaders and models, and the --lr auto probe would train
# every rung of its ladder on each of them (the probe is tested on its own).
TINY = ["--epochs", "1", "-k", "4", "--burn-in", "2", "--heldout", "2", "--lr", "0.05", "--ae-steps", "5", "--diffusion-steps", "5",
        "-n", "3", "--steps", "3", "--no-report"]
WRITERS = {"cifar10": fx.write_cifar10, "cifar100": fx.write_cifar100, "mnist": fx.write_mnist, "imagefolder": fx.write_imagefolder,
           "stl10": fx.write_stl10, "flowers102": fx.write_flowers102, "pets": fx.write_pets, "food101": fx.write_food101,
           "imagenet": fx.write_imagenet}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return {name: write(tmp_path_factory.mktemp(name)) for name, write in WRITERS.items()}


# Every dataset and every architecture at least once; in memory (CIFAR, MNIST, STL-10 at 96 px) and
# streamed (image files, a non-native size), CIFAR-style (<= 64 px) and ImageNet-style (80 px) transforms.
# The two large models (86M and 88M parameters) see 16-px images, so they cost seconds on the CPU.
PIPELINES = [("cifar10-resnet18", None), ("cifar100-resnet50", None), ("mnist-vit-tiny", None),
             ("imagefolder-convnext-tiny", None), ("cifar10-vit-tiny", None), ("mnist-resnet18", 48),
             ("stl10-resnet18", None), ("flowers102-vit-base", 16), ("pets-resnet50", 80), ("food101-vit-tiny", 32),
             ("imagenet-convnext-base", 32), ("imagenet-resnet18", 80)]


@pytest.mark.parametrize("task,size", PIPELINES)
def test_pipeline_on_each_format_and_architecture(task, size, roots, tmp_path):
    dataset = task.split("-")[0]
    out = tmp_path / "run"
    sized = [] if size is None else ["--image-size", str(size)]
    assert main(["--quiet", "run", "--task", task, "--data-root", str(roots[dataset]), "--out", str(out), *sized, *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["generated"]["count"] == 3
    zoo = json.loads((out / "zoo" / "manifest.json").read_text())
    assert zoo["data_root"] == str(roots[dataset].resolve())
    check_generated(out, 3)  # the paper's subset of this architecture, finite, three different models
    g = metrics["generated"]
    assert g["evaluated"] == 3 and 0 <= g["test_acc"]["min"] <= g["test_acc"]["best"] <= 100
    # evaluate again without --data-root: the zoo remembers where the data is, and gets the same numbers
    assert main(["--quiet", "evaluate", "--run", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())["generated"]
    assert again["test_acc"] == g["test_acc"] and again["fingerprint"] == g["fingerprint"]


def test_paper_default_selections(capsys):
    # the paper's subsets: ResNet-18 2,048, ResNet-50 5,120, ViT-Tiny 768 values
    expected = {"cifar100-resnet18": "2,048", "cifar100-resnet50": "5,120", "cifar10-vit-tiny": "768",
                "cifar10-convnext-tiny": "3,072", "imagenet-vit-base": "3,072", "imagenet-convnext-base": "4,096"}
    for task, values in expected.items():
        assert main(["inspect", "--task", task]) == 0
        assert f"matches 4 tensors, {values} values" in capsys.readouterr().out


def test_every_vision_task_can_be_inspected(capsys):
    from nndiff.tasks import VISION_TASKS
    from nndiff.tasks.vision import ARCHITECTURES, DATASETS

    # every dataset with one architecture and every architecture with one dataset (all 54 names parse)
    tasks = [f"{d}-resnet18" for d in DATASETS] + [f"cifar10-{a}" for a in ARCHITECTURES]
    assert set(tasks) <= set(VISION_TASKS) and len(VISION_TASKS) == len(DATASETS) * len(ARCHITECTURES)
    for task in tasks:
        assert main(["inspect", "--task", task]) == 0
    assert "layer4.1.bn2.weight" in capsys.readouterr().out


def test_missing_or_wrong_data_gives_a_clear_error(tmp_path, capsys):
    code = main(["--quiet", "collect", "--task", "cifar10-resnet18", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z")])
    assert code == 2 and "data root" in capsys.readouterr().err
    code = main(["--quiet", "collect", "--task", "cifar10-resnet18", "--data-root", str(tmp_path), "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert code == 2 and "cifar-10-batches-py" in err and "never downloads" in err
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"")
    code = main(["--quiet", "collect", "--task", "cifar100-resnet18", "--data-root", str(tmp_path), "--out", str(tmp_path / "z")])
    assert code == 2 and "not a CIFAR python-format batch" in capsys.readouterr().err


def test_cifar_files_cannot_run_code(tmp_path):
    from nndiff.tasks.datasets import _read_cifar_batch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": [1]}))
    with pytest.raises(NndiffError, match="not a CIFAR"):
        _read_cifar_batch(path)
    assert not marker.exists()


def test_a_zoo_from_another_architecture_is_refused(roots, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quiet", "run", "--task", "cifar10-resnet18", "--data-root", str(roots["cifar10"]), "--out", str(out), *TINY]) == 0
    manifest = out / "zoo" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["task"] = "cifar10-resnet50"
    manifest.write_text(json.dumps(m))
    assert main(["--quiet", "evaluate", "--run", str(out)]) == 2
    assert "does not fit task 'cifar10-resnet50'" in capsys.readouterr().err


@pytest.mark.parametrize("task_name", ["cifar10-resnet18", "cifar10-vit-tiny"])
def test_batched_evaluation_matches_the_loop(task_name, roots):
    import torch

    from nndiff.evaluation.batched import trunk_and_head
    from nndiff.evaluation.engine import evaluate_params
    from nndiff.params.layout import Layout
    from nndiff.tasks import get_task

    task = get_task(task_name, str(roots["cifar10"]))
    torch.manual_seed(0)
    model = task.make_model().eval()
    layout = Layout.select(model, task.default_select)
    assert trunk_and_head(model, layout) is not None  # torchvision and timm models trace
    params = layout.flatten(dict(model.named_parameters())) + 0.5 * torch.randn(4, layout.size)
    test = task.splits()["test"]
    fast = evaluate_params(task, model, layout, params, splits={"t": test}, progress=False, batched=True)["t"]
    slow = evaluate_params(task, model, layout, params, splits={"t": test}, progress=False, batched=False)["t"]
    assert torch.equal(fast.predictions, slow.predictions)


@pytest.mark.parametrize("dataset", ["stl10", "flowers102", "pets", "food101", "imagenet"])
def test_each_reader_gives_the_images_and_labels_of_its_layout(dataset, roots):
    """Every split non-empty, labels within the classes, images standardized; in memory only at the native size."""
    import torch

    from nndiff.tasks import get_task
    from nndiff.tasks.base import batches

    task = get_task(f"{dataset}-resnet18", str(roots[dataset]), 32)
    splits = task.splits()
    classes = task.make_model().fc.out_features
    for name, split in splits.items():
        assert len(split) > 0 and 0 <= int(split.y.min()) and int(split.y.max()) < classes, name
    x = torch.cat(list(batches(splits["train"].x, 7)))
    assert x.shape == (len(splits["train"]), 3, 32, 32) and abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1) < 0.2
    native = get_task(f"{dataset}-resnet18", str(roots[dataset])).splits()["train"]
    assert isinstance(native.x, torch.Tensor) == (dataset == "stl10")


def test_flowers_uses_its_official_validation_split(roots):
    from nndiff.tasks import get_task

    splits = get_task("flowers102-resnet18", str(roots["flowers102"]), 32).splits()
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 6, 6]


def test_streamed_batches_do_not_depend_on_workers_or_history(roots):
    """A step's images and augmentation follow from (seed, step) alone: any worker count, any start."""
    import torch

    from nndiff.tasks import get_task

    train = get_task("imagenet-resnet18", str(roots["imagenet"]), 80).splits()["train"]
    one = train.random_batches(5, seed=3, start=0)
    steps = [next(one) for _ in range(4)]
    train.workers = 2
    later = next(train.random_batches(5, seed=3, start=3))
    assert torch.equal(later[0], steps[3][0]) and torch.equal(later[1], steps[3][1])
    assert not torch.equal(steps[0][0], steps[1][0])  # the steps differ
    # each image its own draw: one image under two seeds differs, under one seed is the same
    a, b, again = (train.samples[(0, seed)][0] for seed in (1, 2, 1))
    assert torch.equal(a, again) and not torch.equal(a, b)


def _stop_after(calls: int):
    """A train_step that raises KeyboardInterrupt after `calls` steps (a stand-in for Ctrl-C)."""
    from nndiff.tasks.base import ClassificationTask

    count = {"n": 0}

    def step(self, model, x, y, opt):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return ClassificationTask.train_step(self, model, x, y, opt)

    return step


def test_a_resumed_streamed_collection_equals_an_uninterrupted_one(roots, tmp_path, monkeypatch):
    import torch

    collect_module = importlib.import_module("nndiff.zoo.collect")
    from nndiff.runtime.stage import Stage
    from nndiff.tasks import get_task
    from nndiff.tasks.vision import VisionTask
    from nndiff.zoo.collect import collect
    from nndiff.zoo.config import CollectConfig

    config = CollectConfig(k=6, runs=2, burn_in=3, heldout=2, lr=0.05, image_size=32, base_epochs=1,
                           data_root=str(roots["imagenet"]), device="cpu")
    task = get_task("imagenet-resnet18", str(roots["imagenet"]), 32)
    torch.manual_seed(0)
    base = {k: v.clone() for k, v in task.make_model().state_dict().items()}
    clean = collect("imagenet-resnet18", config, progress=False, base_state=base)
    monkeypatch.setattr(collect_module, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(VisionTask, "train_step", _stop_after(9), raising=False)
    with pytest.raises(KeyboardInterrupt):
        collect("imagenet-resnet18", config, progress=False, base_state=base, stage=Stage(tmp_path))
    monkeypatch.undo()
    monkeypatch.setattr(collect_module, "CHECKPOINT_EVERY", 2)
    resumed = collect("imagenet-resnet18", config, progress=False, base_state=base, stage=Stage(tmp_path))
    assert resumed.info["resumed_at_steps"][1] > 0  # the second run was cut short and resumed
    assert torch.equal(resumed.params, clean.params) and torch.equal(resumed.heldout, clean.heldout)


def test_a_torchvision_state_dict_is_a_base_for_the_imagenet_rows(roots, tmp_path):
    """Above 64 px the ResNets are torchvision's own: its state_dict (here with the fixture's 3 classes),
    saved with torch.save, is a --base as it is; collection starts from exactly those weights."""
    import torch
    import torchvision

    from nndiff.zoo.format import Zoo

    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    out = tmp_path / "zoo"
    assert main(["--quiet", "collect", "--task", "imagenet-resnet18", "--data-root", str(roots["imagenet"]),
                 "--image-size", "80", "--base", str(tmp_path / "resnet18.pth"), "-k", "2", "--burn-in", "1",
                 "--heldout", "0", "--lr", "0.05", "--out", str(out)]) == 0
    base = Zoo.load(out).base_state
    assert all(torch.equal(base[k], v) for k, v in state.items())


def test_the_paper_table_runs_the_rows_whose_data_it_finds(roots, tmp_path, capsys):
    """bench/paper_table.py: the ImageNet row runs (the paper's SGD recipe for a ResNet) and sits beside
    the published number; a row without its data is named with the reader's reason, not run."""
    spec = importlib.util.spec_from_file_location("paper_table", Path(__file__).parents[1] / "bench" / "paper_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    out = tmp_path / "paper"
    assert table.main(["--data-root", str(tmp_path), "--imagenet", str(roots["imagenet"]), "--rows", "imagenet-resnet18",
                       "cifar100-resnet18", "--out", str(out), "--", "--image-size", "32", *TINY]) == 0
    text = (out / "paper_table.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| imagenet-resnet18 |"))
    assert "| sgd | 69.52 → 70.40 |" in row and "[" in row  # the recipe, the paper's numbers, an interval
    assert "| cifar100-resnet18 |" in text and "not run: CIFAR data not found" in text
    manifest = json.loads((out / "imagenet-resnet18" / "zoo" / "manifest.json").read_text())
    assert manifest["collect"]["recipe"] == "sgd" and manifest["image_size"] == 32
    assert table.main(["--list", "--rows", "pets-vit-base"]) == 0
    assert "DATA/oxford-iiit-pet/" in capsys.readouterr().out
