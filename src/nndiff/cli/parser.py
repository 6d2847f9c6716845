"""The `nndiff` command's options: every command, its help and its examples."""

from __future__ import annotations

import argparse
from pathlib import Path

DISTRIBUTED = ("run", "collect", "train", "evaluate")  # the commands that share their work over torchrun's ranks


EPILOG = """examples:
  nndiff run --out runs/demo                       # everything on the default task (mnist1d-cnn)
  nndiff collect --task digits-cnn -k 200 --out runs/d/zoo
  nndiff train --zoo runs/d/zoo --out runs/d
  nndiff generate --run runs/d -n 100 --sampler ddim --steps 50 --seed 0
  nndiff evaluate --run runs/d
  nndiff report --run runs/d                       # are the generated models new? runs/d/report/report.md
  nndiff doctor --run runs/d                       # health check: pass / warn / fail, each with its fix
  nndiff collect --task my_task.py:make_task --lr auto --out runs/u/zoo   # probe for the collection lr
  nndiff train --zoo runs/d/zoo --out runs/c --condition val_acc
  nndiff generate --run runs/c --target-acc 98.5 --guidance 1   # models aimed at 98.5% validation accuracy
  nndiff sweep --ablation k --out runs/sweep-k      # the paper's K ablation: K = 1, 10, 50, 200
"""


def _help_formatter():
    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """jsonargparse's help (types and defaults shown), with the examples' line breaks kept."""

    return Formatter


def _command(sub, name: str, help: str, description: str | None = None, *, train: bool = False):
    from jsonargparse import ArgumentParser

    p = ArgumentParser(description=description or help, exit_on_error=False, formatter_class=_help_formatter())
    if train:  # first, so that options after `--config FILE` override the file
        from jsonargparse import ActionConfigFile

        p.add_argument(
            "--config",
            action=ActionConfigFile,
            help="YAML file of settings, such as the config.yaml "
            "of any run; options after it override it (--print_config writes one)",
        )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub.add_subcommand(name, p, help=help)
    return p


def _collect_options(p, train: bool = False) -> None:
    """--task, --base and every CollectConfig setting; with `train`, the TrainConfig settings too
    (one --seed and one --device for both)."""
    from nndiff.config.options import add_settings
    from nndiff.generator.config import TrainConfig
    from nndiff.tasks import DEFAULT_TASK
    from nndiff.zoo.config import CollectConfig

    p.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help="built-in task name (see `nndiff tasks`), "
        "or your own as path/to/file.py:make_task or package.module:make_task",
    )
    p.add_argument(
        "--base",
        type=Path,
        help="start from this base model state_dict instead of training one: "
        ".safetensors, or a PyTorch .pt/.pth file holding plain tensors (loaded with weights_only=True, "
        "never unpickling code)",
    )
    add_settings(p, CollectConfig)
    if train:
        add_settings(p, TrainConfig, skip=("seed", "device"))


def _generate_options(p, aim: bool = True) -> None:
    """The SampleConfig settings (without the aim where `aim` is False)."""
    from nndiff.config.options import add_settings
    from nndiff.generator.generated import SampleConfig

    add_settings(p, SampleConfig, skip=() if aim else ("target_acc", "guidance"))


def _resume_option(p) -> None:
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard the progress a crashed or killed run left in "
        "OUT/.progress and start over (without it: resume from that progress)",
    )


def _run_option(p, help: str) -> None:
    # --run-dir is the spelling to use under torchrun, whose own parser mistakes `--run` for an
    # abbreviation of its --run-path and stops.
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True, help=help)


def _on_a_run(sub, name: str, help: str, holds: str = "holding generated/", *, seed: bool = True, description=None):
    """A command that works on an existing run directory (--run), with --device (and --seed)."""
    p = _command(sub, name, help, description)
    _run_option(p, f"run directory {holds}")
    _recorded_task_option(p)
    _seed_device(p, seed)
    return p


def _recorded_task_option(p) -> None:
    p.add_argument(
        "--task",
        default=None,
        help="the zoo's task when it is your own code (path/to/file.py:make_task or package.module:make_task): "
        "naming it lets nndiff run that code; a zoo or run from someone else never runs code you did not name "
        "(or set NNDIFF_TRUST_TASK_CODE=1). Built-in tasks need nothing. For a zoo recorded without a task "
        "(nndiff.Recorder with no task), the evaluation to use: the model and its val and test data",
    )


def _seed_device(p, seed: bool = True) -> None:
    from nndiff.config.options import Number
    from nndiff.runtime.device import DEVICES

    if seed:
        p.add_argument(
            "--seed", type=Number(integer=True), default=0, help="random seed; the same seed gives the same result"
        )
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to compute (auto: CUDA if present)")


def build_parser():
    from jsonargparse import ArgumentParser

    from nndiff.config.options import Number, add_settings, bound_yaml
    from nndiff.generator.config import TrainConfig
    from nndiff.pipeline.sweep import ABLATIONS
    from nndiff.tasks import DEFAULT_TASK

    bound_yaml()
    parser = ArgumentParser(
        prog="nndiff",
        description="Generate neural network parameters with latent diffusion (p-diff) and evaluate them honestly.",
        epilog=EPILOG,
        formatter_class=_help_formatter(),
        exit_on_error=False,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (there are none when stderr is not a terminal)"
    )
    sub = parser.add_subcommands(dest="command", required=True)

    p = _command(
        sub,
        "run",
        "collect, train, generate and evaluate in one go",
        "Run the whole pipeline into --out: "
        "OUT/zoo (snapshots), the trained generator, OUT/generated, OUT/metrics.json.",
        train=True,
    )
    p.add_argument("--out", type=Path | None, default=None, help="output directory (default: runs/<task>)")
    p.add_argument("--no-report", action="store_true", help="skip the novelty analysis and report/")
    p.add_argument(
        "--family",
        type=str | None,
        default=None,
        help="instead of one task, a family of related tasks (mnist1d-binary, digits-binary, mnist1d-domains, "
        "or your own as path/to/file.py:make_family): collect over its "
        "tasks, train generators from a task's descriptor to its model, and judge them on held-out tasks against "
        "training, retrieval and a regression (docs/unseen.md); --seed, --fresh and the --family_settings.* "
        "options apply, the other options do not",
    )
    from nndiff.families.config import FamilyConfig

    add_settings(p, FamilyConfig, prefix="family_settings.", skip=("family", "seed", "diffusion"))
    _resume_option(p)
    _collect_options(p, train=True)
    _generate_options(p)

    p = _command(
        sub,
        "collect",
        "train a base model and collect snapshots of selected parameters",
        "Train the task's base model, then train only the selected parameters and save k snapshots.",
    )
    p.add_argument("--out", type=Path, required=True, help="zoo directory to write")
    _resume_option(p)
    _collect_options(p)

    p = _command(sub, "train", "train the autoencoder and latent diffusion model on a zoo", train=True)
    p.add_argument("--zoo", type=Path, required=True, help="zoo directory written by `nndiff collect`")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    _resume_option(p)
    _recorded_task_option(p)
    add_settings(p, TrainConfig)

    p = _on_a_run(sub, "generate", "sample new parameter sets from a trained run", "written by `nndiff train`")
    _generate_options(p)
    p.add_argument(
        "--code",
        type=str | None,
        default=None,
        help="family runs: the task to generate models for, one binary digit per class (1: positive), "
        "e.g. 0110100101; a task the generator never saw is what it is for",
    )
    p.add_argument(
        "--examples",
        type=Path | None,
        default=None,
        help="family runs: the task to generate models for, shown by labelled examples: a safetensors file "
        "holding x (examples shaped like the base task's inputs) and y (integer labels, every class present), "
        "e.g. 10 per class (docs/unseen.md)",
    )
    p.add_argument(
        "--family",
        type=str | None,
        default=None,
        help="family runs of your own family: its path/to/file.py:make_family, naming it lets nndiff run "
        "that code (a run from someone else never runs code you did not name)",
    )
    _on_a_run(sub, "evaluate", "accuracy of originals, generated models and the weight average", seed=False)
    _on_a_run(
        sub,
        "report",
        "novelty analysis against baselines, figures and report.md",
        description="Compare the generated models with noise-added, weight-averaged, Gaussian and held-out "
        "baselines on accuracy and similarity to the training snapshots, each number with its 95% interval "
        "(paired bootstrap), and check whether the generator collapsed or copies; writes RUN/report/.",
    )
    _on_a_run(
        sub,
        "doctor",
        "health check of a zoo or a run: pass / warn / fail, each with its fix",
        "written by `nndiff train`, or a zoo directory written by `nndiff collect`",
        seed=False,
        description="Check a zoo (diversity, accuracy against the base model) or a run (also: the autoencoder's "
        "reconstructions, the generated models' spread, replicas, NaN share and accuracy, and the weight average "
        "of the snapshots), on validation data and in parameter space, never the test set. Exit code 1 when a "
        "check fails. The autoencoder fails when its reconstructions miss over 25% of the snapshots' variation "
        "(warns over 5%) even if they keep the accuracy: measured on a whole network, what such a codec misses "
        "changes predictions no more than SGD noise, yet what it keeps is the snapshots' mean, so every generated "
        "model lands near the weight average. The weight average check warns when the generated models' whole "
        "interval lies below that free average.",
    )

    p = _command(
        sub,
        "sweep",
        "the paper's ablations: number of snapshots, noise augmentation, generated layers",
        "Train one run per row of an ablation from a shared zoo (OUT/zoo) and write the table "
        "OUT/sweep_<ablation>.md (+ .json); every row is a full run directory with its report.",
        train=True,
    )
    p.add_argument(
        "--ablation",
        choices=ABLATIONS,
        required=True,
        help="k: number of snapshots (1 10 50 200); noise: none / input / latent / both; "
        "layers: the last 1, 2, 3 normalization layers",
    )
    p.add_argument(
        "--values", type=Number(integer=True), nargs="+", help="the K values (k) or layer counts (layers) to try"
    )
    p.add_argument("--out", type=Path, required=True, help="sweep directory")
    _resume_option(p)
    _collect_options(p, train=True)
    _generate_options(p, aim=False)

    p = _command(sub, "inspect", "list a task's parameters and what a --select pattern matches")
    p.add_argument("--task", default=DEFAULT_TASK, help="built-in task or path/to/file.py:make_task")
    p.add_argument("--select", nargs="+", type=str, metavar="GLOB", help="glob patterns to try (default: the task's)")
    p.add_argument(
        "--data-root",
        dest="data_root",
        help="vision tasks: the dataset directory (only ImageFolder needs it, for its class count)",
    )
    p.add_argument("--image-size", dest="image_size", type=int, help="vision tasks: the image side in pixels")

    _command(sub, "tasks", "list the built-in tasks and task families")
    return parser
