import pytest
import torch

from nndiff import NndiffError
from nndiff.params.layout import Layout
from nndiff.params.normalizer import Normalizer
from nndiff.tasks import get_task


@pytest.mark.parametrize("task_name", ["mnist1d-cnn", "digits-cnn"])
def test_flatten_unflatten_round_trip_on_real_models(task_name):
    task = get_task(task_name)
    torch.manual_seed(0)
    src, dst = task.make_model(), task.make_model()
    layout = Layout.select(src, task.default_select)
    vec = layout.flatten(src.state_dict())
    assert vec.shape == (layout.size,)
    assert layout.size == sum(p.numel() for n, p in src.named_parameters() if n in layout.names)
    layout.write(dst, vec)
    for name in layout.names:
        assert torch.equal(dict(dst.named_parameters())[name], dict(src.named_parameters())[name])
    back = layout.unflatten(vec)
    assert list(back) == layout.names
    assert torch.equal(layout.flatten(back), vec)
    # the layout survives its JSON form
    assert Layout.from_json(layout.to_json()) == layout


def test_select_keeps_model_order_and_all_matches():
    model = get_task("mnist1d-cnn").make_model()
    layout = Layout.select(model, ["bn4.*", "bn3.weight"])
    assert layout.names == ["bn3.weight", "bn4.weight", "bn4.bias"]
    assert [e.offset for e in layout.entries] == [0, 32, 96]


def test_glob_that_selects_nothing_is_a_clear_error():
    model = get_task("mnist1d-cnn").make_model()
    with pytest.raises(NndiffError, match="matches no parameter.*bn1.weight"):
        Layout.select(model, ["layer4.*"])


def test_layout_mismatch_names_the_parameter():
    model = get_task("mnist1d-cnn").make_model()
    wrong_shape = Layout.from_shapes([("bn3.weight", [7])])
    with pytest.raises(NndiffError, match="bn3.weight.*shape \\[7\\]"):
        wrong_shape.check_model(model)
    with pytest.raises(NndiffError, match="'layer4.bn.weight' does not exist"):
        Layout.from_shapes([("layer4.bn.weight", [4])]).check_model(model)


@pytest.mark.parametrize("mode", ["element", "layer"])
def test_normalizer_standardizes_and_inverts(mode):
    layout = Layout.from_shapes([("a", [3]), ("b", [2, 2])])
    data = torch.randn(50, 7) * torch.tensor([1, 2, 3, 10, 10, 10, 10.0]) + 5
    norm = Normalizer.fit(data, layout, mode)
    z = norm(data)
    torch.testing.assert_close(norm.inverse(z), data)
    if mode == "element":
        torch.testing.assert_close(z.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(7))
    else:
        block = z[:, 3:]
        assert abs(block.mean()) < 1e-5 and abs(block.std(unbiased=False) - 1) < 1e-5


def test_normalizer_survives_constant_coordinates():
    layout = Layout.from_shapes([("a", [4])])
    data = torch.ones(10, 4)
    data[:, 0] = torch.arange(10.0)
    z = Normalizer.fit(data, layout, "element")(data)
    assert torch.isfinite(z).all()


def test_finite_rows_of_one_vector_and_of_higher_dimensional_rows():
    from nndiff.params.rows import finite_rows

    assert finite_rows(torch.tensor([1.0, 2.0])).tolist() == [True]
    assert finite_rows(torch.tensor([1.0, float("nan")])).tolist() == [False]
    rows = torch.zeros(3, 2, 2)
    rows[1, 0, 1] = float("inf")
    assert finite_rows(rows).tolist() == [True, False, True]
