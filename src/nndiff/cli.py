"""The `nndiff` command. Thin: it parses options and calls the library's stage functions.

Longer than 250 lines because it declares every command's options and what each command prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import warnings
from pathlib import Path

from .errors import NndiffError

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


def _command(sub, name: str, help: str, description: str | None = None, train: bool = False):
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
    from .collect import CollectConfig
    from .config import TrainConfig
    from .options import add_settings
    from .tasks import DEFAULT_TASK

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
    from .generate import SampleConfig
    from .options import add_settings

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


def _on_a_run(sub, name: str, help: str, holds: str = "holding generated/", seed: bool = True, description=None):
    """A command that works on an existing run directory (--run), with --device (and --seed)."""
    p = _command(sub, name, help, description)
    _run_option(p, f"run directory {holds}")
    _seed_device(p, seed)
    return p


def _seed_device(p, seed: bool = True) -> None:
    from .runtime import DEVICES

    from .options import Number

    if seed:
        p.add_argument(
            "--seed", type=Number(integer=True), default=0, help="random seed; the same seed gives the same result"
        )
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to compute (auto: CUDA if present)")


def build_parser():
    from jsonargparse import ArgumentParser

    from .config import TrainConfig
    from .options import Number, add_settings
    from .sweep import ABLATIONS
    from .tasks import DEFAULT_TASK

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
    add_settings(p, TrainConfig)

    p = _on_a_run(sub, "generate", "sample new parameter sets from a trained run", "written by `nndiff train`")
    _generate_options(p)
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
        "reconstructions, the generated models' spread, replicas, NaN share and accuracy), on validation data "
        "and in parameter space, never the test set. Exit code 1 when a check fails.",
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

    _command(sub, "tasks", "list the built-in tasks")
    return parser


def _configs(args) -> tuple:
    """The CollectConfig, TrainConfig and SampleConfig a command's options describe (checked; the
    ones a command has no options for keep their defaults)."""
    from .collect import CollectConfig
    from .config import TrainConfig
    from .generate import SampleConfig
    from .options import build

    values = args.as_dict()
    return tuple(build(cls, values).validate() for cls in (CollectConfig, TrainConfig, SampleConfig))


def dispatch(command: str, args, quiet: bool) -> int:
    """Run one command with its options; its exit code (0, or 1 when `doctor` finds a failing check)."""
    from . import pipeline
    from .storage import load_json

    # Bars only on a terminal: written to a file they would fill the log with carriage returns.
    progress = not quiet and sys.stderr.isatty()
    if command == "inspect":
        from .params import describe
        from .tasks import get_task

        task = get_task(args.task, args.data_root, args.image_size)
        print(describe(task.make_model(), args.select or task.default_select))
    elif command == "tasks":
        from .tasks import TASKS
        from .tasks.vision import ARCHITECTURES, DATASETS

        for name, make in TASKS.items():
            print(f"{name:24s} {make().description}")
        print(
            f"\nvision tasks, DATASET-ARCH with --data-root (pip install 'nndiff[vision]'):\n"
            f"  datasets: {', '.join(DATASETS)}\n  architectures: {', '.join(ARCHITECTURES)}\n"
            f"  e.g. cifar100-resnet18 generates layer4.1.bn1 + layer4.1.bn2 as in the paper"
        )
    elif command == "collect":
        from .lr_probe import summary_lines

        zoo = pipeline.collect_zoo(args.task, args.out, _configs(args)[0], progress, args.base, args.fresh)
        accs = [s["test_acc"] for s in zoo.snapshots]
        for line in summary_lines(zoo.info.get("lr_probe")):
            print(line)
        print(
            f"wrote {len(zoo)} snapshots of {zoo.layout.size} parameters to {args.out} "
            f"(test accuracy {min(accs):.2f}..{max(accs):.2f}%)"
        )
    elif command == "train":
        from .budget import summary_lines

        stats = pipeline.train_run(args.zoo, args.out, _configs(args)[1], progress, args.fresh)
        if stats.get("reused"):
            print(
                f"{args.out} already holds a generator trained on this zoo with these settings; nothing to do "
                "(--fresh retrains)"
            )
        elif stats:  # rank 0 (or a single process) reports
            print(
                f"trained {args.out}: autoencoder reconstruction MSE {stats['autoencoder']['reconstruction_mse']:.4f}, "
                f"diffusion loss {stats['diffusion']['final_loss']:.4f} ({stats['processes']} process(es))"
            )
            for line in summary_lines(stats):
                print(f"      {line}")
    elif command == "generate":
        sample = _configs(args)[2]
        out = pipeline.generate_run(args.run, sample, args.seed, args.device)
        aim = (
            f" aimed at validation accuracy {args.target_acc:g}% (guidance {args.guidance:g})"
            if args.target_acc is not None
            else ""
        )
        print(f"wrote {args.n} generated models{aim} to {out}")
    elif command == "evaluate":
        metrics = pipeline.evaluate_run(args.run, args.device, progress)
        print(pipeline.format_table(metrics))
        print(f"\nwrote {Path(args.run) / 'metrics.json'}")
    elif command == "report":
        path = pipeline.report_run(args.run, args.device, args.seed, progress)
        print("\n".join(load_json(path.parent / "novelty.json")["verdict"]))
        print(f"\nwrote {path}")
    elif command == "doctor":
        from .doctor import format_checks

        checks = pipeline.doctor_run(args.run, args.device)
        print(format_checks(checks))
        if any(c.status == "fail" for c in checks):
            return 1
    elif command == "sweep":
        from .sweep import run_sweep, sweep_table

        collect, train, sample = _configs(args)
        results = run_sweep(
            args.task,
            args.ablation,
            args.out,
            collect,
            train,
            args["values"],
            sample,
            progress=progress,
            base=args.base,
            fresh=args.fresh,
        )
        print()
        print(sweep_table(args.ablation, results))
        print(f"wrote {args.out / f'sweep_{args.ablation}.md'}")
    elif command == "run":
        out = args.out or Path("runs") / args.task
        collect, train, sample = _configs(args)
        metrics = pipeline.run_all(
            args.task,
            out,
            collect,
            train,
            sample,
            progress,
            base=args.base,
            report=not args.no_report,
            fresh=args.fresh,
        )
        print()
        print(pipeline.format_table(metrics))
        t = metrics["timings_s"]
        print("\ntime (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
        if not args.no_report:
            print("\n" + "\n".join(load_json(out / "report" / "novelty.json")["verdict"]))
            print(f"wrote {out / 'report' / 'report.md'}")
        print(f"wrote {out / 'metrics.json'}")
    return 0


def one_line(text: str) -> str:
    """A message as one printable line: newlines become spaces, terminal control codes (colours
    included, which some libraries put in their messages) are dropped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning, without the source line Python would quote (often a library's internals).
    name = "" if category is UserWarning else f"{category.__name__}: "
    print(f"nndiff: warning: {name}{one_line(str(message))}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from .options import one_line_error

    try:
        namespace = build_parser().parse_args(argv)
    except argparse.ArgumentError as e:  # an option's value refused: one line, as every other error
        words = sys.argv[1:] if argv is None else list(argv)
        command = next((a for a in words if not a.startswith("-")), None)
        message = one_line(one_line_error(str(e)))
        files = [words[i + 1] for i, a in enumerate(words[:-1]) if a == "--config"]
        if files and "config" in message.lower() and files[-1] not in message:
            message = f"{files[-1]}: {message}"  # which file did not parse
        hint = f"nndiff {command} --help" if command else "nndiff --help"
        print(f"nndiff: error: {message} (see `{hint}`)", file=sys.stderr)
        return 2
    command = namespace.command
    args = namespace[command]
    debug = namespace.debug or args.get("debug", False)
    quiet = namespace.quiet or args.get("quiet", False)
    try:
        from .runtime import init_distributed, is_main, reuse_freed_memory

        reuse_freed_memory()
        if init_distributed(args.get("device", "auto")):  # launched by torchrun
            if command not in DISTRIBUTED:
                raise NndiffError(
                    f"`{command}` runs as one process; under torchrun run one of {', '.join(DISTRIBUTED)}"
                )
            quiet = quiet or not is_main()
        quiet_rank = contextlib.nullcontext() if is_main() else contextlib.redirect_stdout(io.StringIO())
        with quiet_rank, warnings.catch_warnings():  # rank 0 alone prints results
            if not debug:
                warnings.showwarning = _show_warning
            code = dispatch(command, args, quiet)
    except NndiffError as e:
        if debug:
            raise
        print(f"nndiff: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nndiff: interrupted", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
