import importlib

import pytest
import torch

from nndiff.evaluation.metrics import mean_offdiagonal, pairwise_iou
from nndiff.tasks import mnist1d_data
from nndiff.zoo.collect import collect
from nndiff.zoo.config import CollectConfig


def test_pairwise_iou_by_hand():
    labels = torch.tensor([0, 1, 2, 3, 4])
    preds = torch.tensor([
        [9, 9, 2, 3, 4],  # wrong on {0, 1}
        [9, 1, 9, 3, 4],  # wrong on {0, 2}
        [0, 1, 2, 3, 4],  # never wrong
    ])
    iou = pairwise_iou(preds, labels)
    expected = torch.tensor([[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1.0]])
    torch.testing.assert_close(iou, expected)
    torch.testing.assert_close(pairwise_iou(preds[:1], labels, preds[2:]), torch.tensor([[0.0]]))
    assert abs(mean_offdiagonal(iou) - (2 / 3) / 6) < 1e-6


def test_default_task_collects_snapshots_that_differ():
    """On mnist1d-cnn the default protocol must not produce K copies of one model."""
    zoo = collect("mnist1d-cnn", CollectConfig(k=20), progress=False)
    accs = [s["test_acc"] for s in zoo.snapshots]
    assert len(set(accs)) > 1
    assert zoo.info["mean_pairwise_iou_val"] < 0.995
    assert zoo.info["base"]["test_acc"] > 95
    assert min(accs) > 95
    assert [s["step"] for s in zoo.snapshots] == list(range(101, 121))
    assert zoo.info["data_fingerprint"] == zoo.info["settings"]["data_fingerprint"] == mnist1d_data.FINGERPRINT
    # only the selected parameters moved: the zoo holds bn3/bn4 alone, they moved away from the base
    # model's values, and the base model's other weights are the ones each snapshot was trained with
    # (a snapshot written over the saved base state reproduces its recorded validation accuracy)
    assert set(zoo.layout.names) == {f"bn{i}.{p}" for i in (3, 4) for p in ("weight", "bias")}
    base_values = torch.cat([zoo.base_state[n].reshape(-1) for n in zoo.layout.names])
    assert all(not torch.equal(row, base_values) for row in zoo.params)
    assert not torch.equal(zoo.params[0], zoo.params[1])
    task = zoo.make_task()
    model = zoo.model(task)
    for i in (0, 19):
        zoo.layout.write(model, zoo.params[i])
        val_acc = task.evaluate(model, task.splits()["val"]).accuracy
        assert val_acc == pytest.approx(zoo.snapshots[i]["val_acc"], abs=1e-9)


def test_bf16_autocast_collection_gives_a_valid_zoo():
    """--amp: the same code path as on CUDA, exercised with the CPU's bf16 autocast."""
    from nndiff.tasks import get_task

    task, dtypes = get_task("digits-cnn"), set()
    make_model = task.make_model

    def watched():  # records the dtype each forward pass computes in
        model = make_model()
        model.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype) if module.training else None)
        return model

    task.make_model = watched
    zoo = collect(task, CollectConfig(k=6, burn_in=5, heldout=0, amp=True), progress=False)
    assert torch.bfloat16 in dtypes  # autocast engaged in training
    assert zoo.params.dtype == torch.float32 and torch.isfinite(zoo.params).all()
    assert zoo.info["base"]["test_acc"] > 80
    assert zoo.info["collect"]["amp"] is True


def test_snapshots_every_n_steps_are_those_of_the_same_trajectory():
    """--every 4 keeps every 4th state of the one-per-step trajectory, nothing else changes."""
    # one set rate: the --lr auto probe spaces its own snapshots by --every and may choose another
    dense = collect("digits-cnn", CollectConfig(k=12, burn_in=5, heldout=0, lr=2.0), progress=False)
    sparse = collect(
        "digits-cnn", CollectConfig(k=3, burn_in=5, every=4, heldout=0, lr=2.0), progress=False, base_state=dense.base_state
    )
    assert [s["step"] for s in sparse.snapshots] == [9, 13, 17]
    assert torch.equal(sparse.params, dense.params[3::4])
    assert sparse.info["collect"]["every"] == 4


def test_the_papers_recipe_trains_the_base_model_with_sgd(monkeypatch):
    """--recipe sgd reaches base training: SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay;
    the default stays AdamW with its one-cycle schedule."""
    trajectory_module = importlib.import_module("nndiff.zoo.trajectory")

    made = []
    real = trajectory_module.base_optimizer
    monkeypatch.setattr(trajectory_module, "base_optimizer", lambda *a: made.append(real(*a)) or made[-1])
    for recipe in ("sgd", "adamw"):
        collect("digits-cnn", CollectConfig(k=2, burn_in=1, heldout=0, lr=0.5, base_epochs=1, recipe=recipe), progress=False)
    (sgd, cosine), (adamw, one_cycle) = made
    assert type(sgd) is torch.optim.SGD and sgd.defaults["lr"] == 0.1 and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 5e-4 and type(cosine) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert cosine.get_last_lr()[0] < 1e-3  # decayed to (nearly) zero by the last step
    assert type(adamw) is torch.optim.AdamW and type(one_cycle) is torch.optim.lr_scheduler.OneCycleLR


def test_snapshots_go_to_disk_as_they_are_taken_and_a_resumed_collection_keeps_them(tmp_path, monkeypatch):
    """With a progress directory, each snapshot is written to the stage's row file when it is
    taken (the file holds exactly the rows taken so far, so the zoo is never gathered in memory);
    an interrupted collection resumes from that file, and without it starts its runs afresh —
    either way the zoo equals an uninterrupted one."""
    collect_module = importlib.import_module("nndiff.zoo.collect")
    from nndiff.runtime.stage import Stage

    config = CollectConfig(k=12, runs=2, burn_in=3, heldout=4, lr=2.0)  # a set rate: no probe runs first
    clean = collect("digits-cnn", config, progress=False)
    rows_file = tmp_path / ".progress" / "zoo-rows.rank0.safetensors"
    written, on_disk = [], []
    write = collect_module.RowFile.write

    def watched(self, index, rows):
        # the rows on disk so far: those not written yet are still the sparse file's zeros
        on_disk.append(int((collect_module.RowFile(rows_file, self.blocks, self.dim).matrix() != 0).any(1).sum()))
        written.append(index)
        if len(written) == 9:
            raise KeyboardInterrupt  # interrupted in the second run
        write(self, index, rows)

    monkeypatch.setattr(collect_module.RowFile, "write", watched)
    monkeypatch.setattr(collect_module, "CHECKPOINT_EVERY", 2)
    with pytest.raises(KeyboardInterrupt):
        collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=Stage(tmp_path))
    assert written == on_disk == list(range(9))  # one row at a time, every earlier one already on disk
    monkeypatch.setattr(collect_module.RowFile, "write", write)
    resumed = collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=Stage(tmp_path))
    assert resumed.info["resumed_at_steps"][:2] == [9, 4]  # run 0 finished, run 1 at its last checkpoint
    assert torch.equal(resumed.params, clean.params) and torch.equal(resumed.heldout, clean.heldout)
    # the row file lost: the checkpoints count rows that are not there, so the runs start over
    stage = Stage(tmp_path / "again")
    monkeypatch.setattr(collect_module.RowFile, "write", watched)
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=stage)
    (tmp_path / "again" / ".progress" / "zoo-rows.rank0.safetensors").unlink()
    monkeypatch.setattr(collect_module.RowFile, "write", write)
    again = collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=stage)
    assert again.info["resumed_at_steps"] == [0, 0, 0]
    assert torch.equal(again.params, clean.params) and torch.equal(again.heldout, clean.heldout)


def test_checkpoints_resume_only_with_the_row_file_they_counted(tmp_path, monkeypatch):
    """Killed after its rows were moved into place, then killed again while redoing them: the first
    attempt's checkpoints (every run complete) must not be resumed over the new, empty row file,
    which would leave rows of zeros in the zoo."""
    collect_module = importlib.import_module("nndiff.zoo.collect")
    from nndiff.runtime.stage import Stage
    from nndiff.zoo.config import ZOO_ROWS

    config = CollectConfig(k=12, runs=2, burn_in=3, heldout=4, lr=2.0)
    clean = collect("digits-cnn", config, progress=False)
    collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=Stage(tmp_path))
    Stage(tmp_path).move_rows(ZOO_ROWS, tmp_path / "params.safetensors")  # then killed before finishing

    write = collect_module.RowFile.write

    def killed(self, index, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module.RowFile, "write", killed)
    with pytest.raises(KeyboardInterrupt):  # the redo is killed at its first row
        collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=Stage(tmp_path))
    monkeypatch.setattr(collect_module.RowFile, "write", write)
    third = collect("digits-cnn", config, progress=False, base_state=clean.base_state, stage=Stage(tmp_path))
    assert (third.params != 0).any(1).all() and (third.heldout != 0).any(1).all()
    assert torch.equal(third.params, clean.params) and torch.equal(third.heldout, clean.heldout)


def test_run_base_and_probe_seeds_never_meet():
    """Seeds used to be arithmetic: base b and run 499 + b shared one, and run 1000 + r under seed s
    had the seed of run r under seed s + 1."""
    from nndiff.config.settings import SEED_MAX

    collect_module = importlib.import_module("nndiff.zoo.collect")

    seeds = []
    for s in range(3):
        config = CollectConfig(seed=s)
        seeds += [collect_module._run_seed(config, r) for r in range(1100)]
        seeds += [collect_module._base_seed(config, b) for b in range(1, 600)]
        seeds.append(collect_module.derived_seed(s, "probe", 0))
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= x <= SEED_MAX for x in seeds)  # what the streamed image sampler can derive from


def test_the_row_file_is_closed_when_collection_fails(tmp_path, monkeypatch):
    collect_module = importlib.import_module("nndiff.zoo.collect")
    from nndiff.runtime.stage import Stage

    opened = []
    real_init = collect_module.RowFile.__init__

    def recorded(self, *a, **k):
        real_init(self, *a, **k)
        opened.append(self)

    def broken(self, index, rows):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(collect_module.RowFile, "__init__", recorded)
    monkeypatch.setattr(collect_module.RowFile, "write", broken)
    config = CollectConfig(k=4, burn_in=2, heldout=0, lr=2.0, base_epochs=1)
    with pytest.raises(RuntimeError, match="disk gone"):
        collect("digits-cnn", config, progress=False, stage=Stage(tmp_path))
    (rows,) = opened
    assert rows.path is not None and rows._fd is None  # its descriptor was closed
