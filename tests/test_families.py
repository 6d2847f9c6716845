"""Task families: models for tasks the generator never saw, judged against training, retrieval,
the zoo's mean and a regression on held-out tasks."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from nndiff.cli.main import main
from nndiff.families.evaluate import per_sample, steps_worth
from nndiff.families.family import binary_codes, split_tasks
from nndiff.families.registry import get_family
from nndiff.families.generators import RegressionGenerator
from nndiff.families.tuning import tune
from nndiff.families.data import load_data
from nndiff.io.tensors import load_tensors
from tests.checks import tiny_family


def test_the_binary_family_is_every_two_sided_split():
    codes = binary_codes(10)
    assert codes.shape == (1022, 10) and len({tuple(c.tolist()) for c in codes}) == 1022
    assert int(codes.sum(1).min()) == 1 and int(codes.sum(1).max()) == 9
    parts = split_tasks(1022, seed=0)
    together = torch.cat(list(parts.values()))
    assert sorted(together.tolist()) == list(range(1022))  # disjoint and complete
    assert len(parts["heldout"]) == 204 and len(parts["val"]) == 102


def test_every_method_is_judged_on_every_held_out_task(family_run):
    out, m = family_run
    held = m["tasks"]["heldout"]
    names = ["trained", "regression", "diffusion", "retrieval_nearest", "retrieval_best_on_val", "zoo_mean",
             "regression_tuned", "sgd_1", "sgd_10", "sgd_100", "sgd_1000", "sgd_same_time_as_regression",
             "sgd_same_time_as_regression_tuned", "sgd_same_time_as_diffusion"]
    for name in names:
        assert len(m[name]["per_task"]) == held, name
        lo, hi = m[name]["ci95"]
        assert lo <= m[name]["test_acc_mean"] <= hi, name
        assert m[name]["test_acc_mean"] == pytest.approx(sum(m[name]["per_task"]) / held, abs=1e-6)
    chosen = m["chosen_on_validation_tasks"]
    assert chosen["generator"] == max(chosen["val_acc_mean"], key=chosen["val_acc_mean"].get)
    assert set(chosen["val_acc_mean"]) == {"regression", "regression_tuned", "diffusion"}
    fits = chosen["regression_candidates"]["regression"]  # the plain regression is the best MSE fit, never a tuned one
    assert chosen["val_acc_mean"]["regression"] == max(v for k, v in fits.items() if not k.endswith("tuned"))
    assert m["diffusion_minus_regression"]["estimate"] == pytest.approx(
        m["diffusion"]["test_acc_mean"] - m["regression"]["test_acc_mean"])
    # trained for the task beats the zoo's mean, which mixes every task's answers
    assert m["trained"]["test_acc_mean"] > m["zoo_mean"]["test_acc_mean"] + 20
    assert (out / "report" / "report.md").is_file() and (out / "report" / "unseen.png").stat().st_size > 0


def _family_zoo(family_run):
    """The tiny family run's family, codes, training and held-out tasks, the training tasks' heads
    [T * K, D], K, and the features and labels of every split."""
    out, _ = family_run
    config = tiny_family()
    family = get_family(config.family)
    manifest = json.loads((out / "family" / "manifest.json").read_text())
    codes = torch.tensor([[int(c) for c in text] for text in manifest["codes"]])
    rows = load_tensors(out / "family" / "heads.safetensors")["params"]
    per = len(manifest["snapshot_steps"])
    train, held = (torch.tensor(manifest["tasks"][k]) for k in ("train", "heldout"))
    x = rows.view(-1, per, rows.shape[1])[train].reshape(-1, rows.shape[1])
    _, feats, labels = load_data(family, config, out, family.codes, progress=False)
    return family, codes, train, held, x, per, feats, labels


def test_a_generator_that_ignores_its_descriptor_falls_to_chance(family_run):
    """The same regression, trained with the descriptors shuffled between tasks, must lose what the
    descriptor carries: held-out accuracy near chance, where the real one is far above it."""
    family, codes, train, held, x, per, feats, labels = _family_zoo(family_run)
    lab = family.relabel(codes[held], labels["test"])

    def held_out_accuracy(task_codes):
        gen = RegressionGenerator.fit(x, task_codes.repeat_interleave(per, 0), 300, seed=0)
        return float(per_sample(gen.sample(codes[held].float())[:, None], feats["test"], lab, 2).mean() * 100)

    shuffled = codes[train][torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
    assert held_out_accuracy(codes[train]) > 85
    assert held_out_accuracy(shuffled) < 70


def test_tuning_learns_each_task_from_its_own_labels(family_run):
    """Tuning the regression with the training tasks' loss keeps it at least as good on held-out
    tasks; tuned with labels shuffled between tasks (each code scored on another task's answers), it
    must fall towards chance, so tuning reads each task's own labels."""
    family, codes, train, held, x, per, feats, labels = _family_zoo(family_run)
    fitted = RegressionGenerator.fit(x, codes[train].repeat_interleave(per, 0), 300, seed=0, width=256)
    lab_train, lab_test = family.relabel(codes[train], labels["train"]), family.relabel(codes[held], labels["test"])

    def held_out_accuracy(gen):
        return float(per_sample(gen.sample(codes[held].float())[:, None], feats["test"], lab_test, 2).mean() * 100)

    def tuned(task_labels):
        return tune(fitted, lambda t, _: codes[train][t].float(), feats["train"], task_labels, classes=2, steps=300, lr=1e-3)

    shuffled = lab_train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
    before = held_out_accuracy(fitted)
    assert held_out_accuracy(tuned(lab_train)) > before - 1
    assert held_out_accuracy(tuned(shuffled)) < 70 < before
    assert held_out_accuracy(fitted) == before  # the fitted generator itself is left as it was


def test_generated_files_are_the_models_they_were_judged_as(family_run, tmp_path):
    """A head written by `generate --code` loaded into the model (2 outputs, the base trunk) scores
    what the feature-level evaluation says."""
    from nndiff.families.heads import correct
    from nndiff.tasks.digits import DigitsCNN

    out, _ = family_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    assert main(["--quiet", "generate", "--run", str(run), "--code", "0110100101", "-n", "2"]) == 0
    head = load_file(run / "generated" / "000000.safetensors")
    model = DigitsCNN(classes=2)
    base = {k: v for k, v in load_file(run / "family" / "base.safetensors").items() if not k.startswith("head.")}
    model.load_state_dict({**base, **head})
    family, config = get_family("digits-binary"), tiny_family()
    _, feats, labels = load_data(family, config, run, family.codes, progress=False)
    code = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 1, 0, 1]])
    from nndiff.tasks import get_task

    test = get_task("digits-cnn").splits()["test"]
    with torch.no_grad():
        whole = (model.eval()(test.x).argmax(1) == code[0, test.y]).float().mean()
    flat = torch.cat([head["head.weight"].reshape(-1), head["head.bias"]])[None]
    assert float(whole) == pytest.approx(float(correct(flat, feats["test"], code[:, labels["test"]], 2).float().mean()))
    assert json.loads((run / "generated" / "info.json").read_text())["seen"] in ("unseen", "seen: a training task")


@pytest.mark.parametrize("code,needle", [
    ("01101", "must be 10 binary digits"),
    ("01101001x1", "must be 10 binary digits"),
    ("0000000000", "that is not a task"),
    ("1111111111", "that is not a task"),
])
def test_a_code_that_is_no_task_is_one_line_and_changes_nothing(family_run, tmp_path, capsys, code, needle):
    out, _ = family_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = sorted(p.name for p in run.iterdir())
    assert main(["--quiet", "generate", "--run", str(run), "--code", code]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_code_for_a_run_that_is_no_family_run(tiny_run, capsys):
    assert main(["--quiet", "generate", "--run", str(tiny_run), "--code", "0110100101"]) == 2
    assert "not a family run" in capsys.readouterr().err


def test_sgd_steps_worth_interpolates_between_measured_counts():
    sgd = {1: 50.0, 10: 90.0, 100: 95.0, 1000: 96.0}
    assert steps_worth(sgd, 40.0) == 0.0
    assert steps_worth(sgd, 90.0) == pytest.approx(10.0)
    assert steps_worth(sgd, 92.5) == pytest.approx(math.sqrt(10 * 100))
    assert math.isinf(steps_worth(sgd, 97.0))


def test_no_choice_of_a_family_run_depends_on_the_test_labels(family_run, tmp_path, monkeypatch):
    """The same run with the base task's test labels permuted: every choice (the generator, each
    candidate's validation accuracy, the regressions' widths) is unchanged; only test numbers move."""
    import nndiff.families.data as data
    from nndiff.families.run import run_family
    from nndiff.tasks import get_task
    from tests.checks import tiny_family

    def permuted(spec):
        task = get_task(spec)
        splits = task.splits()
        y = splits["test"].y
        splits["test"].y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
        task.splits = lambda: splits
        return task

    monkeypatch.setattr(data, "get_task", permuted)
    m = run_family(tiny_family(), tmp_path / "permuted", progress=False, log=lambda *_: None)
    _, whole = family_run
    assert m["chosen_on_validation_tasks"] == whole["chosen_on_validation_tasks"]
    assert m["examples_generator"] == whole["examples_generator"]
    assert m["trained"]["test_acc_mean"] < whole["trained"]["test_acc_mean"] - 20  # the test labels did change
