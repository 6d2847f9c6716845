"""Evaluating a vector twice in one process reuses its predictions, and only when nothing they
depend on has changed."""

import dataclasses

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
    first = evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)["val"]
    assert task.calls == 5
    again = evaluate_params(task, model, layout, params[[3, 1]], splits={"val": split}, progress=False)["val"]
    assert task.calls == 5  # both known
    assert torch.equal(again.predictions, first.predictions[[3, 1]]) and torch.equal(
        again.accuracy, first.accuracy[[3, 1]]
    )
    mixed = torch.cat([params[:1], torch.randn(1, layout.size)])
    evaluate_params(task, model, layout, mixed, splits={"val": split}, progress=False)
    assert task.calls == 6  # only the new one


def test_the_rows_not_known_are_evaluated_a_block_at_a_time_in_their_places(setup, monkeypatch):
    """Some rows known, the others evaluated in blocks (of 2 rows here; a few at 1M parameters,
    so that they are never copied at once): every prediction lands in its own row."""
    import nndiff.params.rows

    task, model, layout, split = setup
    params = torch.randn(9, layout.size)
    alone = [evaluate_params(task, model, layout, p[None], splits={"val": split}, progress=False)["val"] for p in params]
    MEMO.clear()
    evaluate_params(task, model, layout, params[[0, 4, 5]], splits={"val": split}, progress=False)
    monkeypatch.setattr(nndiff.params.rows, "BLOCK_VALUES", 2 * layout.size)
    task.calls = 0
    together = evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)["val"]
    assert task.calls == 6  # the six not known, in three blocks
    assert torch.equal(together.predictions, torch.cat([a.predictions for a in alone]))
    assert torch.equal(together.accuracy, torch.cat([a.accuracy for a in alone]))


def test_what_the_predictions_depend_on_is_part_of_the_key(setup):
    task, model, layout, split = setup
    params = torch.randn(4, layout.size)
    evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)
    with torch.no_grad():
        model.bias.add_(5.0)  # a weight that is not generated
    shifted = evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)["val"]
    assert task.calls == 8
    MEMO.clear()
    assert torch.equal(
        evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)["val"].predictions,
        shifted.predictions,
    )
    other = Split(split.x + 1.0, split.y)
    evaluate_params(task, model, layout, params, splits={"val": other}, progress=False)
    assert task.calls == 16
    evaluate_params(task, model, layout, params, splits={"val": split}, progress=False, batched=False)
    assert task.calls == 20  # another evaluation path is another key


@dataclasses.dataclass
class Flipping(ClassificationTask):
    """Tasks of one name and class with a setting that changes what they predict."""

    flip: bool = False

    def evaluate(self, model, split):
        ev = super().evaluate(model, split)
        if not self.flip:
            return ev
        predictions = 1 - ev.predictions
        return type(ev)(float((predictions == split.y).double().mean() * 100), predictions)


def _flipping(flip: bool) -> Flipping:
    linear = lambda: torch.nn.Linear(3, 2)  # noqa: E731
    return Flipping("flipping", "", linear, None, ["*"], batched_eval=False, flip=flip)


def test_two_tasks_of_one_name_with_other_settings_do_not_share_predictions(setup):
    _, model, layout, split = setup
    params = torch.randn(3, layout.size)
    plain = evaluate_params(_flipping(False), model, layout, params, splits={"val": split}, progress=False)["val"]
    flipped = evaluate_params(_flipping(True), model, layout, params, splits={"val": split}, progress=False)["val"]
    assert torch.equal(flipped.predictions, 1 - plain.predictions)


def test_a_split_is_hashed_once_and_again_after_it_changes(setup, monkeypatch):
    import nndiff.evaluation.memo as memo

    task, model, layout, split = setup
    hashed = []
    real = memo._update
    monkeypatch.setattr(memo, "_update", lambda digest, t: hashed.append(t is split.x) or real(digest, t))
    params = torch.randn(2, layout.size)
    evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)
    evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)
    assert hashed.count(True) == 1 and task.calls == 2
    with torch.no_grad():
        split.x.add_(1.0)  # changed in place: another split now
    evaluate_params(task, model, layout, params, splits={"val": split}, progress=False)
    assert hashed.count(True) == 2 and task.calls == 4
