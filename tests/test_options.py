"""The command line and the YAML files come from the config dataclasses (options.py): one field is
one setting everywhere."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nndiff.cli.main import _configs, main
from nndiff.cli.parser import build_parser
from nndiff.config.options import read_settings
from nndiff.config.settings import setting
from nndiff.generator import config as config_module
from nndiff.generator.config import TrainConfig
from nndiff.generator.generated import SampleConfig
from nndiff.zoo.config import CollectConfig

SRC = Path(__file__).resolve().parent.parent / "src" / "nndiff"


@dataclass
class WithWarmup(TrainConfig):
    warmup: int = setting(100, "warmup steps of both training loops", low=0, integer=True)


def test_a_new_training_setting_is_one_field(monkeypatch, capsys, tmp_path):
    """The field below is all there is to the new setting: the parser built from the dataclasses
    offers it in --help, writes it into the YAML config and reads it back with --config."""
    monkeypatch.setattr(config_module, "TrainConfig", WithWarmup)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--warmup" in shown and "warmup steps of both training loops" in shown

    assert main(["train", "--zoo", "z", "--out", "o", "--warmup", "7", "--print_config"]) == 0
    written = yaml.safe_load(capsys.readouterr().out)
    assert written["warmup"] == 7
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"warmup": 9, "autoencoder": {"steps": 5}}))
    args = build_parser().parse_args(["train", "--zoo", "z", "--out", "o", "--config", str(tmp_path / "c.yaml")])[
        "train"
    ]
    built = _configs(args)[1]
    assert isinstance(built, WithWarmup) and built.warmup == 9 and built.autoencoder.steps == 5
    assert "warmup" in built.to_dict()  # what config.yaml holds
    assert read_settings(WithWarmup, {"warmup": "1e2"}, "c.yaml").warmup == 100
    monkeypatch.setattr(config_module, "TrainConfig", TrainConfig)
    assert main(["--quiet", "train", "--zoo", "z", "--out", "o", "--warmup", "7"]) == 2  # gone with its field


def _help(command: str) -> str:
    parser = build_parser()
    return parser._subcommands_action._name_parser_map[command].format_help()


def test_every_setting_explains_itself_in_help():
    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                yield from fields(type(default), f"{prefix}{f.name}.")
            else:
                yield prefix + f.name, f

    text = _help("run")
    for key, f in [*fields(CollectConfig), *fields(TrainConfig), *fields(SampleConfig)]:
        assert f.metadata.get("help"), key
        assert (f.metadata.get("flag") or f"--{key}") in text, key


def test_options_after_config_override_it_and_known_flags_stay(tmp_path):
    (tmp_path / "c.yaml").write_text("autoencoder:\n  steps: 50\n  lr: 1e-3\nk: 30\n")
    parse = lambda *argv: build_parser().parse_args(["run", *argv])["run"]  # noqa: E731
    late = _configs(parse("--config", str(tmp_path / "c.yaml"), "--ae-steps", "7", "-k", "12"))
    early = _configs(parse("--ae-steps", "7", "--config", str(tmp_path / "c.yaml")))
    assert (late[1].autoencoder.steps, late[0].k) == (7, 12)
    assert (early[1].autoencoder.steps, early[0].k) == (50, 30) and early[1].autoencoder.lr == 1e-3
    collect, train, _ = _configs(
        parse(
            "--select",
            "bn1.*",
            "bn2.*",
            "--amp",
            "--burn-in",
            "3",
            "--epochs",
            "2",
            "--lr",
            "auto",
            "--seed",
            "4",
            "--condition",
            "val_acc",
        )
    )
    assert collect.select == ["bn1.*", "bn2.*"] and collect.amp and collect.burn_in == 3 and collect.base_epochs == 2
    assert collect.lr == "auto" and collect.seed == train.seed == 4 and train.diffusion.condition == "val_acc"


def test_doctor_help_states_the_lines_the_checks_use():
    from nndiff.analysis.doctor import UNEXPLAINED

    text = " ".join(_help("doctor").split())
    warn, fail = (f"{100 * v:g}%" for v in UNEXPLAINED)
    assert f"miss over {fail} of the snapshots' variation (warns over {warn})" in text
    assert "weight average" in text and "SGD noise" in text


def test_a_printed_config_leaves_out_code_and_says_so(tmp_path, capsys):
    """A --config file that names code is refused when read, so --print_config does not write one:
    the task or family named on the command line is left out, with a warning that names it."""
    task = f"{tmp_path}/my_task.py:make_task"
    assert main(["run", "--task", task, "--ae-steps", "7", "--print_config"]) == 0
    captured = capsys.readouterr()
    written = yaml.safe_load(captured.out)
    assert written["task"] is None and written["autoencoder"]["steps"] == 7
    assert f"leave out --task {task}" in captured.err
    (tmp_path / "c.yaml").write_text(captured.out)  # what was printed reads back, and refuses nothing
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "c.yaml")])["run"]
    assert _configs(args)[1].autoencoder.steps == 7
    assert main(["run", "--task", "digits-cnn", "--print_config"]) == 0  # a built-in task is no code: kept
    assert yaml.safe_load(capsys.readouterr().out)["task"] == "digits-cnn"
