"""The `nndiff` command. Thin: it parses options and calls the library's stage functions."""

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


def _or_auto(convert):
    """An option's type that takes a number (`convert`) or the word 'auto'."""

    def parse(text: str):
        if text == "auto":
            return text
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'} or 'auto', got {text!r}") from None

    return parse


def _collect_options(p: argparse.ArgumentParser) -> None:
    from .tasks import DEFAULT_TASK

    p.add_argument("--task", default=DEFAULT_TASK, help=f"built-in task name (default: {DEFAULT_TASK}; see `nndiff tasks`), "
                   "or your own as path/to/file.py:make_task or package.module:make_task")
    p.add_argument("--select", nargs="+", metavar="GLOB",
                   help="glob patterns over the model's parameter names to generate (default: the task's, e.g. 'bn3.*' 'bn4.*')")
    p.add_argument("-k", type=int, default=200, help="number of snapshots to collect (default: 200)")
    p.add_argument("--runs", type=int, default=1, help="independent collection runs (seeds) the k snapshots are split over (default: 1)")
    p.add_argument("--lr", type=_or_auto(float), default="auto", help="collection learning rate, or 'auto': a short probe "
                   "from the base model picks the rate whose snapshots differ most while keeping its validation accuracy "
                   "(default: auto; too small a rate gives copies, too large loses accuracy)")
    p.add_argument("--burn-in", type=int, default=100, help="SGD steps before the first snapshot of each run (default: 100)")
    p.add_argument("--every", type=int, help="SGD steps between snapshots (default: the task's, 1 for a few layers; "
                   "whole-network tasks take a gentler --lr and space snapshots out)")
    p.add_argument("--heldout", type=int, default=100,
                   help="snapshots collected from one more run (a new seed) that the generator never sees; "
                        "the novelty report compares generated models with them (default: 100)")
    p.add_argument("--data-root", help="vision tasks: the directory holding the dataset (default: $NNDIFF_DATA_ROOT)")
    p.add_argument("--epochs", type=int, help="base model training epochs (default: the task's)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for base training and collection (for CUDA; "
                   "evaluation stays float32)")
    p.add_argument("--base", type=Path, help="start from this base model state_dict instead of training one: .safetensors, "
                   "or a PyTorch .pt/.pth file holding plain tensors (loaded with weights_only=True, never unpickling code)")


def _train_options(p: argparse.ArgumentParser) -> None:
    from .diffusion import CONDITIONS

    p.add_argument("--config", type=Path, help="YAML file with training settings (see config.yaml of any run)")
    p.add_argument("--normalization", choices=("element", "layer"), help="parameter standardization (default: element)")
    p.add_argument("--ae-steps", type=_or_auto(int), help="autoencoder training steps, or 'auto': until its reconstructions of "
                   "held-back snapshots keep their validation accuracy, at most autoencoder.max_steps (default: auto, up to 3000)")
    p.add_argument("--diffusion-steps", type=_or_auto(int), help="diffusion training steps, or 'auto': until a small generated "
                   "batch stops improving on validation, at most diffusion.max_steps (default: auto, up to 4000)")
    p.add_argument("--input-noise", type=float, help="autoencoder input noise augmentation (default: 0.001)")
    p.add_argument("--latent-noise", type=float, help="autoencoder latent noise augmentation (default: 0.1)")
    p.add_argument("--condition", choices=CONDITIONS,
                   help="val_acc: condition the diffusion model on each snapshot's validation accuracy, so "
                        "`generate --target-acc` can ask for one (default: none)")


def _generate_options(p: argparse.ArgumentParser, aim: bool = True) -> None:
    from .diffusion import SAMPLERS

    p.add_argument("-n", type=int, default=100, help="number of models to generate (default: 100)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="reverse-process sampler (default: ddim)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default: 50; ddpm uses up to 1000)")
    if not aim:
        return
    p.add_argument("--target-acc", type=float, metavar="PERCENT",
                   help="conditional runs: the validation accuracy to aim the models at (default: none, unconditional)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance strength with --target-acc: 1 is the plain conditional model, "
                        "larger pushes harder towards the target (default: 1)")


def _resume_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fresh", action="store_true",
                   help="discard the progress a crashed or killed run left in OUT/.progress and start over (default: resume from it)")


def _run_option(p: argparse.ArgumentParser, help: str) -> None:
    # --run-dir is the spelling to use under torchrun, whose own parser mistakes `--run` for an
    # abbreviation of its --run-path and stops.
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True, help=help)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same result (default: 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to compute (default: auto, CUDA if present)")


def build_parser() -> argparse.ArgumentParser:
    from .tasks import DEFAULT_TASK
    parser = argparse.ArgumentParser(
        prog="nndiff", description="Generate neural network parameters with latent diffusion (p-diff) and evaluate them honestly.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (there are none when stderr is not a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="collect, train, generate and evaluate in one go", description=
                       "Run the whole pipeline into --out: OUT/zoo (snapshots), the trained generator, OUT/generated, OUT/metrics.json.")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<task>)")
    p.add_argument("--no-report", action="store_true", help="skip the novelty analysis and report/")
    _resume_option(p)
    _collect_options(p)
    _train_options(p)
    _generate_options(p)
    _common(p)

    p = sub.add_parser("collect", help="train a base model and collect snapshots of selected parameters",
                       description="Train the task's base model, then train only the selected parameters and save k snapshots.")
    p.add_argument("--out", type=Path, required=True, help="zoo directory to write")
    _resume_option(p)
    _collect_options(p)
    _common(p)

    p = sub.add_parser("train", help="train the autoencoder and latent diffusion model on a zoo")
    p.add_argument("--zoo", type=Path, required=True, help="zoo directory written by `nndiff collect`")
    p.add_argument("--out", type=Path, required=True, help="run directory to write")
    _resume_option(p)
    _train_options(p)
    _common(p)

    p = sub.add_parser("generate", help="sample new parameter sets from a trained run")
    _run_option(p, "run directory written by `nndiff train`")
    _generate_options(p)
    _common(p)

    p = sub.add_parser("evaluate", help="accuracy of originals, generated models and the weight average")
    _run_option(p, "run directory holding generated/")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    p = sub.add_parser("report", help="novelty analysis against baselines, figures and report.md",
                       description="Compare the generated models with noise-added, weight-averaged, Gaussian and held-out "
                                   "baselines on accuracy and similarity to the training snapshots, each number with its 95% "
                                   "interval (paired bootstrap), and check whether the generator collapsed or copies; writes RUN/report/.")
    _run_option(p, "run directory holding generated/")
    p.add_argument("--seed", type=int, default=0, help="seed for the baselines' random draws (default: 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    p = sub.add_parser("doctor", help="health check of a zoo or a run: pass / warn / fail, each with its fix",
                       description="Check a zoo (diversity, accuracy against the base model) or a run (also: the "
                                   "autoencoder's reconstructions, the generated models' spread, replicas, NaN share and "
                                   "accuracy), on validation data and in parameter space, never the test set. Exit code 1 when a check fails.")
    _run_option(p, "run directory written by `nndiff train`, or a zoo directory written by `nndiff collect`")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    p = sub.add_parser("sweep", help="the paper's ablations: number of snapshots, noise augmentation, generated layers",
                       description="Train one run per row of an ablation from a shared zoo (OUT/zoo) and write the table "
                                   "OUT/sweep_<ablation>.md (+ .json); every row is a full run directory with its report.")
    p.add_argument("--ablation", choices=("k", "noise", "layers"), required=True,
                   help="k: number of snapshots (1 10 50 200); noise: none / input / latent / both; "
                        "layers: the last 1, 2, 3 normalization layers")
    p.add_argument("--values", type=int, nargs="+", help="the K values (k) or layer counts (layers) to try")
    p.add_argument("--out", type=Path, required=True, help="sweep directory")
    _resume_option(p)
    _collect_options(p)
    _train_options(p)
    _generate_options(p, aim=False)
    _common(p)

    p = sub.add_parser("inspect", help="list a task's parameters and what a --select pattern matches")
    p.add_argument("--task", default=DEFAULT_TASK, help="built-in task or path/to/file.py:make_task")
    p.add_argument("--select", nargs="+", metavar="GLOB", help="glob patterns to try (default: the task's)")
    p.add_argument("--data-root", help="vision tasks: the dataset directory (only ImageFolder needs it, for its class count)")

    sub.add_parser("tasks", help="list the built-in tasks")
    for command in sub.choices.values():  # also accepted after the command name: `nndiff run --quiet`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    return parser


def _train_config(args):
    from .config import TrainConfig
    from .storage import load_yaml

    data = load_yaml(args.config) if args.config else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NndiffError(f"{args.config}: expected a mapping of settings")
    data = {k: v for k, v in data.items() if k not in ("zoo", "task")}
    config = TrainConfig.from_dict(data)
    overrides = [("normalization", config, "normalization"), ("ae_steps", config.autoencoder, "steps"),
                 ("diffusion_steps", config.diffusion, "steps"), ("input_noise", config.autoencoder, "input_noise"),
                 ("latent_noise", config.autoencoder, "latent_noise"), ("condition", config.diffusion, "condition")]
    for arg, target, field in overrides:
        if getattr(args, arg) is not None:
            setattr(target, field, getattr(args, arg))
    config.seed, config.device = args.seed, args.device
    return config.validate()


def _collect_config(args):
    from .zoo import CollectConfig

    return CollectConfig(select=args.select, k=args.k, runs=args.runs, seed=args.seed, lr=args.lr,
                         burn_in=args.burn_in, every=args.every, heldout=args.heldout, device=args.device, data_root=args.data_root,
                         base_epochs=args.epochs, amp=args.amp).validate()


def dispatch(args) -> int:
    """Run one command; its exit code (0, or 1 when `doctor` finds a failing check)."""
    from . import pipeline
    from .storage import load_json

    # Bars only on a terminal: written to a file they would fill the log with carriage returns.
    progress = not args.quiet and sys.stderr.isatty()
    if args.command == "inspect":
        from .params import describe
        from .tasks import get_task

        task = get_task(args.task, args.data_root)
        print(describe(task.make_model(), args.select or task.default_select))
    elif args.command == "tasks":
        from .tasks import TASKS

        from .tasks.vision import ARCHITECTURES, DATASETS

        for name, make in TASKS.items():
            print(f"{name:24s} {make().description}")
        print(f"\nvision tasks, DATASET-ARCH with --data-root (pip install 'nndiff[vision]'):\n"
              f"  datasets: {', '.join(DATASETS)}\n  architectures: {', '.join(ARCHITECTURES)}\n"
              f"  e.g. cifar100-resnet18 generates layer4.1.bn1 + layer4.1.bn2 as in the paper")
    elif args.command == "collect":
        zoo = pipeline.collect_zoo(args.task, args.out, _collect_config(args), progress, args.base, args.fresh)
        accs = [s["test_acc"] for s in zoo.snapshots]
        from .lr_probe import summary_lines

        for line in summary_lines(zoo.info.get("lr_probe")):
            print(line)
        print(f"wrote {len(zoo)} snapshots of {zoo.layout.size} parameters to {args.out} "
              f"(test accuracy {min(accs):.2f}..{max(accs):.2f}%)")
    elif args.command == "train":
        from .budget import summary_lines

        stats = pipeline.train_run(args.zoo, args.out, _train_config(args), progress, args.fresh)
        if stats.get("reused"):
            print(f"{args.out} already holds a generator trained on this zoo with these settings; nothing to do (--fresh retrains)")
        elif stats:  # rank 0 (or a single process) reports
            print(f"trained {args.out}: autoencoder reconstruction MSE {stats['autoencoder']['reconstruction_mse']:.4f}, "
                  f"diffusion loss {stats['diffusion']['final_loss']:.4f} ({stats['processes']} process(es))")
            for line in summary_lines(stats):
                print(f"      {line}")
    elif args.command == "generate":
        out = pipeline.generate_run(args.run, args.n, args.seed, args.sampler, args.steps, args.device,
                                    args.target_acc, args.guidance)
        aim = f" aimed at validation accuracy {args.target_acc:g}% (guidance {args.guidance:g})" if args.target_acc is not None else ""
        print(f"wrote {args.n} generated models{aim} to {out}")
    elif args.command == "evaluate":
        metrics = pipeline.evaluate_run(args.run, args.device, progress)
        print(pipeline.format_table(metrics))
        print(f"\nwrote {Path(args.run) / 'metrics.json'}")
    elif args.command == "report":
        path = pipeline.report_run(args.run, args.device, args.seed, progress)
        print("\n".join(load_json(path.parent / "novelty.json")["verdict"]))
        print(f"\nwrote {path}")
    elif args.command == "doctor":
        from .doctor import format_checks

        checks = pipeline.doctor_run(args.run, args.device)
        print(format_checks(checks))
        if any(c.status == "fail" for c in checks):
            return 1
    elif args.command == "sweep":
        from .sweep import run_sweep, sweep_table

        results = run_sweep(args.task, args.ablation, args.out, _collect_config(args), _train_config(args), args.values,
                            args.n, args.seed, args.sampler, args.steps, progress, base=args.base, fresh=args.fresh)
        print()
        print(sweep_table(args.ablation, results))
        print(f"wrote {args.out / f'sweep_{args.ablation}.md'}")
    elif args.command == "run":
        out = args.out or Path("runs") / args.task
        metrics = pipeline.run_all(args.task, out, _collect_config(args), _train_config(args), args.n, args.seed,
                                   args.sampler, args.steps, progress, base=args.base, report=not args.no_report,
                                   fresh=args.fresh, target_acc=args.target_acc, guidance=args.guidance)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .runtime import init_distributed, is_main

        if init_distributed(getattr(args, "device", "auto")):  # launched by torchrun
            if args.command not in DISTRIBUTED:
                raise NndiffError(f"`{args.command}` runs as one process; under torchrun run one of "
                                  f"{', '.join(DISTRIBUTED)}")
            args.quiet = args.quiet or not is_main()
        quiet_rank = contextlib.nullcontext() if is_main() else contextlib.redirect_stdout(io.StringIO())
        with quiet_rank, warnings.catch_warnings():  # rank 0 alone prints results
            if not args.debug:
                warnings.showwarning = _show_warning
            code = dispatch(args)
    except NndiffError as e:
        if args.debug:
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
