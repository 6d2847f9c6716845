"""Bad input gives one clear line on stderr and a non-zero exit, never a traceback."""

import json
import shutil

import pytest

from nndiff.cli.main import main


def run_cli(capsys, *args):
    code = main(["--quiet", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def assert_clear_error(code, err, *needles):
    assert code == 2
    assert err.startswith("nndiff: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_glob_that_selects_nothing(capsys, tmp_path):
    code, err = run_cli(capsys, "collect", "--task", "digits-cnn", "--select", "layer4.*", "-k", "2", "--out", tmp_path / "z")
    assert_clear_error(code, err, "layer4.*", "matches no parameter", "bn1.weight")
    assert not (tmp_path / "z" / "manifest.json").exists()


def test_unknown_task(capsys, tmp_path):
    code, err = run_cli(capsys, "collect", "--task", "imagenet-vit", "--out", tmp_path / "z")
    assert_clear_error(code, err, "unknown task 'imagenet-vit'", "mnist1d-cnn")


def test_missing_run_directory(capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", "--run", tmp_path / "nope")
    assert_clear_error(code, err, "does not exist", "nndiff train")
    code, err = run_cli(capsys, "generate", "--run", tmp_path / "nope")
    assert_clear_error(code, err, "does not exist")


def test_missing_zoo(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--zoo", tmp_path / "nozoo", "--out", tmp_path / "r")
    assert_clear_error(code, err, "zoo directory", "does not exist", "nndiff collect")


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def test_truncated_safetensors(capsys, run_copy):
    path = run_copy / "zoo" / "params.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "params.safetensors", "truncated or corrupt")


def test_zoo_layout_that_does_not_match_the_model(capsys, run_copy):
    manifest = run_copy / "zoo" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["task"] = "mnist1d-cnn"  # a digits zoo claimed for the 1-D task: its layout names bn1/bn2 of another shape
    manifest.write_text(json.dumps(m))
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "does not fit task 'mnist1d-cnn'")


def test_manifest_layout_that_does_not_match_its_tensors(capsys, run_copy):
    manifest = run_copy / "zoo" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["layout"] = m["layout"][:1]
    manifest.write_text(json.dumps(m))
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "dim 96", "add up to 16 values")
    del m["dim"]  # without the count the manifest states, the tensors tell
    manifest.write_text(json.dumps(m))
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "params.safetensors", "layout needs")


def test_generated_file_from_another_layout(capsys, run_copy):
    import torch
    from safetensors.torch import load_file, save_file

    path = run_copy / "generated" / "000000.safetensors"
    state = load_file(path)
    save_file({**state, "bn1.weight": torch.ones(3)}, path)
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "000000.safetensors", "bn1.weight has shape [3]")
    save_file({"bn2.bias": state["bn2.bias"]}, path)
    code, err = run_cli(capsys, "evaluate", "--run", run_copy)
    assert_clear_error(code, err, "000000.safetensors", "lacks parameter(s) bn1.weight")


def test_bad_config_values(capsys, tmp_path, tiny_run):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("autoencoder:\n  chanels: 3\n")
    code, err = run_cli(capsys, "train", "--zoo", tiny_run / "zoo", "--out", tmp_path / "r", "--config", cfg)
    assert_clear_error(code, err, "chanels")
    code, err = run_cli(capsys, "train", "--zoo", tiny_run / "zoo", "--out", tmp_path / "r", "--ae-steps", "0")
    assert_clear_error(code, err, "autoencoder.steps")
