"""Evaluating a vector twice in one process reuses its predictions, and only when nothing they
depend on has changed."""

import pytest
import torch

from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.memo import MEMO
from nndiff.params.layout import Layout
from nndiff.tasks.base import ClassificationTask, Split


class Counting(ClassificationTask):
    """A linear classifier whose plain evaluation counts the models it runs."""

    def __init__(self):
        super().__init__(
            name="counting",
            description="",
            make_model=lambda: torch.nn.Linear(3, 2),
            load_data=None,
            default_select=["*"],
        )
        self.calls = 0
        self.batched_eval = False

    def evaluate(self, model, split):
        self.calls += 1
        return super().evaluate(model, split)


@pytest.fixture
def setup():
    MEMO.clear()
    torch.manual_seed(0)
    task, model = Counting(), torch.nn.Linear(3, 2)
    layout = Layout.select(model, ["weight"])
    split = Split(torch.randn(40, 3), torch.randint(2, (40,)))
    yield task, model, layout, split
    MEMO.clear()


def test_a_vector_is_evaluated_once_per_split(setup):
    task, model, layout, split = setup
    params = torch.randn(5, layout.size)
    first = evaluate_params(task, model, layout, params, {"val": split}, progress=False)["val"]
    assert task.calls == 5
    again = evaluate_params(task, model, layout, params[[3, 1]], {"val": split}, progress=False)["val"]
    assert task.calls == 5  # both known
    assert torch.equal(again.predictions, first.predictions[[3, 1]]) and torch.equal(
        again.accuracy, first.accuracy[[3, 1]]
    )
    mixed = torch.cat([params[:1], torch.randn(1, layout.size)])
    evaluate_params(task, model, layout, mixed, {"val": split}, progress=False)
    assert task.calls == 6  # only the new one


def test_what_the_predictions_depend_on_is_part_of_the_key(setup):
    task, model, layout, split = setup
    params = torch.randn(4, layout.size)
    evaluate_params(task, model, layout, params, {"val": split}, progress=False)
    with torch.no_grad():
        model.bias.add_(5.0)  # a weight that is not generated
    shifted = evaluate_params(task, model, layout, params, {"val": split}, progress=False)["val"]
    assert task.calls == 8
    MEMO.clear()
    assert torch.equal(
        evaluate_params(task, model, layout, params, {"val": split}, progress=False)["val"].predictions,
        shifted.predictions,
    )
    other = Split(split.x + 1.0, split.y)
    evaluate_params(task, model, layout, params, {"val": other}, progress=False)
    assert task.calls == 16
    evaluate_params(task, model, layout, params, {"val": split}, progress=False, batched=False)
    assert task.calls == 20  # another evaluation path is another key
