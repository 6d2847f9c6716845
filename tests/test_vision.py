"""Vision tasks on tiny fixtures in the real formats, through the whole pipeline (needs nndiff[vision]).

CI installs the extra, so there these tests run; elsewhere they are skipped only when torchvision
or timm is missing.
"""

import json
import os
import pickle

import pytest

from nndiff import NndiffError
from nndiff.cli import main

if os.environ.get("CI"):
    import timm  # noqa: F401  (in CI a missing extra must fail, not skip)
    import torchvision  # noqa: F401
else:
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")

from tests import vision_fixtures as fx  # noqa: E402

# A fixed --lr: these tests are about the loaders and models, and the --lr auto probe would train
# every rung of its ladder on each of them (the probe is tested on its own).
TINY = ["--epochs", "1", "-k", "4", "--burn-in", "2", "--heldout", "2", "--lr", "0.05", "--ae-steps", "5", "--diffusion-steps", "5",
        "-n", "3", "--steps", "3", "--no-report"]
WRITERS = {"cifar10": fx.write_cifar10, "cifar100": fx.write_cifar100, "mnist": fx.write_mnist, "imagefolder": fx.write_imagefolder}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return {name: write(tmp_path_factory.mktemp(name)) for name, write in WRITERS.items()}


@pytest.mark.parametrize("task", ["cifar10-resnet18", "cifar100-resnet50", "mnist-vit-tiny", "imagefolder-convnext-tiny",
                                  "cifar10-vit-tiny", "cifar100-convnext-tiny", "mnist-resnet18", "imagefolder-resnet18"])
def test_pipeline_on_each_format_and_architecture(task, roots, tmp_path):
    dataset = task.split("-")[0]
    out = tmp_path / "run"
    assert main(["--quiet", "run", "--task", task, "--data-root", str(roots[dataset]), "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["generated"]["count"] == 3
    zoo = json.loads((out / "zoo" / "manifest.json").read_text())
    assert zoo["data_root"] == str(roots[dataset].resolve())
    # evaluate again without --data-root: the zoo remembers where the data is
    assert main(["--quiet", "evaluate", "--run", str(out)]) == 0


def test_paper_default_selections(capsys):
    # the paper's subsets: ResNet-18 2,048, ResNet-50 5,120, ViT-Tiny 768 values
    expected = {"cifar100-resnet18": "2,048", "cifar100-resnet50": "5,120", "cifar10-vit-tiny": "768",
                "cifar10-convnext-tiny": "3,072"}
    for task, values in expected.items():
        assert main(["inspect", "--task", task]) == 0
        assert f"matches 4 tensors, {values} values" in capsys.readouterr().out


def test_every_vision_task_can_be_inspected(capsys):
    from nndiff.tasks import VISION_TASKS

    for task in VISION_TASKS:
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
    from nndiff.tasks.vision import _read_cifar_batch

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

    from nndiff.batched import trunk_and_head
    from nndiff.evaluate import evaluate_params
    from nndiff.params import Layout
    from nndiff.tasks import get_task

    task = get_task(task_name, str(roots["cifar10"]))
    torch.manual_seed(0)
    model = task.make_model().eval()
    layout = Layout.select(model, task.default_select)
    assert trunk_and_head(model, layout) is not None  # torchvision and timm models trace
    params = layout.flatten(dict(model.named_parameters())) + 0.5 * torch.randn(4, layout.size)
    test = task.splits()["test"]
    fast = evaluate_params(task, model, layout, params, {"t": test}, progress=False, batched=True)["t"]
    slow = evaluate_params(task, model, layout, params, {"t": test}, progress=False, batched=False)["t"]
    assert torch.equal(fast.predictions, slow.predictions)
