"""Batched evaluation (shared frozen trunk, vmapped head) must give exactly the plain loop's answers."""

import pytest
import torch
from torch import nn

from nndiff.batched import try_split
from nndiff.evaluate import evaluate_params
from nndiff.params import Layout
from nndiff.tasks import ClassificationTask, Split, get_task


def _spread_params(model, layout, n, scale, seed=0):
    base = layout.flatten(dict(model.named_parameters()))
    g = torch.Generator().manual_seed(seed)
    return base + scale * torch.randn(n, layout.size, generator=g)


@pytest.mark.parametrize("task_name,shape", [("mnist1d-cnn", (1, 40)), ("digits-cnn", (1, 8, 8))])
@pytest.mark.parametrize("select", [None, ["head.*"], ["bn1.*", "head.bias"]])
def test_batched_equals_loop(task_name, shape, select):
    task = get_task(task_name)
    torch.manual_seed(0)
    model = task.make_model()
    # non-trivial running statistics, as after training
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    layout = Layout.select(model, select or task.default_select)
    params = _spread_params(model, layout, 13, 0.3)
    g = torch.Generator().manual_seed(1)
    split = Split(torch.randn(300, *shape, generator=g), torch.randint(0, 10, (300,), generator=g))
    assert try_split(model, layout) is not None
    fast = evaluate_params(task, model, layout, params, {"s": split}, progress=False, batched=True)["s"]
    slow = evaluate_params(task, model, layout, params, {"s": split}, progress=False, batched=False)["s"]
    assert torch.equal(fast.predictions, slow.predictions)
    assert torch.equal(fast.accuracy, slow.accuracy)
    assert fast.predictions.shape == (13, 300)
    assert len(set(fast.accuracy.tolist())) > 1  # the parameter sets really differ


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.fc(x)
        return -self.fc(x)


@pytest.mark.parametrize("batched", [True, False])
def test_no_parameter_sets_give_empty_results(batched):
    task = get_task("digits-cnn")
    model = task.make_model().eval()
    layout = Layout.select(model, task.default_select)
    split = Split(torch.randn(7, 1, 8, 8), torch.randint(0, 10, (7,)))
    out = evaluate_params(task, model, layout, torch.empty(0, layout.size), {"s": split}, progress=False, batched=batched)["s"]
    assert out.predictions.shape == (0, 7) and out.accuracy.shape == (0,)


def test_untraceable_model_falls_back_to_the_loop():
    model = Untraceable()
    layout = Layout.select(model, ["fc.bias"])
    assert try_split(model, layout) is None
    task = ClassificationTask("toy", "", Untraceable, lambda: {}, ["fc.bias"])
    split = Split(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    params = torch.randn(5, 3)
    ev = evaluate_params(task, model, layout, params, {"s": split}, progress=False)["s"]
    assert ev.predictions.shape == (5, 20)
    for i in range(5):
        layout.write(model, params[i])
        assert torch.equal(ev.predictions[i], model(split.x).argmax(1))
