"""Batched evaluation (shared frozen trunk, vmapped head) must give exactly the plain loop's answers."""

import importlib

import pytest
import torch
from torch import nn

from nndiff.evaluation.batched import trunk_and_head
from nndiff.evaluation.engine import evaluate_params
from nndiff.params.layout import Layout
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
    assert trunk_and_head(model, layout) is not None
    fast = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=True)["s"]
    slow = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=False)["s"]
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
    out = evaluate_params(task, model, layout, torch.empty(0, layout.size), splits={"s": split}, progress=False, batched=batched)["s"]
    assert out.predictions.shape == (0, 7) and out.accuracy.shape == (0,)


def test_untraceable_model_falls_back_to_the_loop():
    model = Untraceable()
    layout = Layout.select(model, ["fc.bias"])
    assert trunk_and_head(model, layout) is None
    task = ClassificationTask("toy", "", Untraceable, lambda: {}, ["fc.bias"])
    split = Split(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    params = torch.randn(5, 3)
    ev = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False)["s"]
    assert ev.predictions.shape == (5, 20)
    for i in range(5):
        layout.write(model, params[i])
        assert torch.equal(ev.predictions[i], model(split.x).argmax(1))


class DropoutBeforeNorm(nn.Module):
    """Functional dropout and an `if self.training:` branch before the generated LayerNorm: traced in
    training mode, both would be frozen into the batched path."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.nn.functional.dropout(self.fc(x), 0.5, self.training)
        if self.training:
            h = h * 3.0
        return self.head(self.norm(h))


def _toy_task(cls=ClassificationTask, **kw):
    return cls("toy", "", DropoutBeforeNorm, lambda: {}, ["norm.*"], **kw)


def _toy(seed=0):
    torch.manual_seed(seed)
    model = DropoutBeforeNorm()
    layout = Layout.select(model, ["norm.*"])
    params = _spread_params(model, layout, 9, 1.0)
    g = torch.Generator().manual_seed(1)
    split = Split(torch.randn(400, 6, generator=g), torch.randint(0, 3, (400,), generator=g))
    return model, layout, params, split


def test_training_mode_model_with_functional_dropout_evaluates_like_task_evaluate():
    model, layout, params, split = _toy()
    model.train()  # as a user's make_model() hands it over
    task = _toy_task()
    ev = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False)["s"]
    reference = DropoutBeforeNorm()
    reference.load_state_dict(model.state_dict())
    for i in range(len(params)):
        layout.write(reference, params[i])
        assert torch.equal(ev.predictions[i], task.evaluate(reference, split).predictions)  # eval mode
    assert model.training  # the caller's model is left as it was


class ShiftedPredictions(ClassificationTask):
    """A task whose prediction is not the argmax of the logits (as test-time augmentation or a
    calibration step would be): the batched path must not bypass it."""

    def predict(self, model, x):
        return (super().predict(model, x) + 1) % 3


def test_an_overridden_predict_is_never_bypassed():
    model, layout, params, split = _toy()
    model.eval()
    task = _toy_task(ShiftedPredictions)
    ev = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False)["s"]
    for i in range(len(params)):
        layout.write(model, params[i])
        assert torch.equal(ev.predictions[i], task.evaluate(model, split).predictions)


def test_a_batched_path_that_disagrees_falls_back_with_a_warning(monkeypatch):
    evaluate = importlib.import_module("nndiff.evaluation.engine")
    model, layout, params, split = _toy()
    model.eval()
    task = _toy_task()
    right = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=False)["s"]
    monkeypatch.setattr(evaluate, "predict_batched", lambda *a, **k: torch.zeros(len(params), len(split), dtype=torch.long))
    with pytest.warns(UserWarning, match="batched evaluation disagrees"):
        ev = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False)["s"]
    assert torch.equal(ev.predictions, right.predictions)


class EncoderNet(nn.Module):
    """torch.nn's TransformerEncoderLayer is one leaf call in an fx trace: its LayerNorm is generated
    from inside it."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def test_a_parameter_inside_a_module_fx_keeps_whole_is_evaluated_like_the_model():
    torch.manual_seed(0)
    model = EncoderNet().eval()
    layout = Layout.select(model, ["encoder.norm2.*", "head.*"])
    task = ClassificationTask("enc", "", EncoderNet, lambda: {}, ["head.*"])
    params = _spread_params(model, layout, 5, 0.3)
    g = torch.Generator().manual_seed(1)
    split = Split(torch.randn(64, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))
    fast = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=True)["s"]
    slow = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=False)["s"]
    assert torch.equal(fast.predictions, slow.predictions)


def test_a_head_vmap_cannot_run_falls_back_to_the_loop(monkeypatch):
    evaluate = importlib.import_module("nndiff.evaluation.engine")

    def unbatchable(*args, **kwargs):
        raise RuntimeError("no batching rule")

    monkeypatch.setattr(evaluate, "predict_batched", unbatchable)
    torch.manual_seed(0)
    model = EncoderNet().eval()
    layout = Layout.select(model, ["head.*"])
    task = ClassificationTask("enc", "", EncoderNet, lambda: {}, ["head.*"])
    params = _spread_params(model, layout, 3, 0.3)
    split = Split(torch.randn(16, 8, 8), torch.randint(0, 10, (16,)))
    got = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False)["s"]
    want = evaluate_params(task, model, layout, params, splits={"s": split}, progress=False, batched=False)["s"]
    assert torch.equal(got.predictions, want.predictions)
