"""The `nndiff` command. Thin: it parses options and calls the library's stage functions."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import warnings
from pathlib import Path

from nndiff.cli import print_config
from nndiff.cli.parser import DISTRIBUTED, build_parser
from nndiff.errors import NndiffError


def _configs(args) -> tuple:
    """The CollectConfig, TrainConfig and SampleConfig a command's options describe (checked; the
    ones a command has no options for keep their defaults)."""
    from nndiff.config.options import build
    from nndiff.generator.config import TrainConfig
    from nndiff.generator.generated import SampleConfig
    from nndiff.zoo.config import CollectConfig

    values = args.as_dict()
    return tuple(build(cls, values).validate() for cls in (CollectConfig, TrainConfig, SampleConfig))


def dispatch(command: str, args, quiet: bool) -> int:
    """Run one command with its options; its exit code (0, or 1 when `doctor` finds a failing check)."""
    from nndiff.evaluation.table import format_table
    from nndiff.io.files import load_json
    from nndiff.pipeline.run import run_all
    from nndiff.pipeline.generate import generate_run
    from nndiff.pipeline.health import doctor_run
    from nndiff.pipeline.stages import collect_zoo, evaluate_run, report_run, train_run
    from nndiff.tasks import forget_named_tasks, name_task

    forget_named_tasks()  # only what this command names may run
    if command not in ("run", "collect", "sweep", "inspect") and args.get("task"):
        _same_task_as_the_zoo(command, args)
        name_task(args["task"])  # a recorded task the user allows to run
    if command == "generate" and args.get("family") and ":" in args["family"]:
        name_task(args["family"])  # a recorded family the user allows to run
    # Bars only on a terminal: written to a file they would fill the log with carriage returns.
    progress = not quiet and sys.stderr.isatty()
    if command == "inspect":
        from nndiff.params.layout import describe
        from nndiff.tasks import get_task

        task = get_task(args.task, args.data_root, args.image_size, check_data=False)  # the model alone
        print(describe(task.make_model(), args.select or task.default_select))
    elif command == "tasks":
        from nndiff.cli.listing import listing

        print(listing())
    elif command == "collect":
        from nndiff.zoo.lr_probe import probe_lines

        zoo = collect_zoo(args.task, args.out, _configs(args)[0], progress, base=args.base, fresh=args.fresh)
        accs = [s["test_acc"] for s in zoo.snapshots]
        for line in probe_lines(zoo.info.get("lr_probe")):
            print(line)
        print(
            f"wrote {len(zoo)} snapshots of {zoo.layout.size} parameters to {args.out} "
            f"(test accuracy {min(accs):.2f}..{max(accs):.2f}%)"
        )
    elif command == "train":
        from nndiff.training.budget import summary_lines

        stats = train_run(args.zoo, args.out, _configs(args)[1], progress, fresh=args.fresh)
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
    elif command == "generate" and (args.code is not None or args.examples is not None):
        from nndiff.families.generate import generate_for_code, generate_for_examples

        if args.code is not None and args.examples is not None:
            raise NndiffError("give the task by --code or by --examples, not both")
        if args.code is not None:
            out, seen, count = generate_for_code(args.run, args.code, args.n, args.seed)
            what = f"task {args.code}"
        else:
            out, seen, count = generate_for_examples(args.run, args.examples, args.n, args.seed)
            what = f"the task {args.examples} shows"
        one = " (the chosen generator gives one model per task)" if count < args.n else ""
        print(f"wrote {count} model{'s' if count > 1 else ''} for {what} ({seen}) to {out}{one}")
    elif command == "run" and args.family is not None:
        from nndiff.config.options import build
        from nndiff.families.config import FamilyConfig
        from nndiff.report.family import family_summary_lines
        from nndiff.families.run import run_family

        out = args.out or Path("runs") / Path(args.family.split(":")[0]).stem
        config = build(FamilyConfig, {**args.as_dict()["family_settings"], "family": args.family, "seed": args.seed})
        metrics = run_family(config, out, progress, fresh=args.fresh)
        print("\n" + "\n".join(family_summary_lines(metrics)))
        print(f"wrote {out / 'report' / 'report.md'}\nwrote {out / 'metrics.json'}")
    elif command == "generate":
        sample = _configs(args)[2]
        out = generate_run(args.run, sample, args.seed, args.device)
        aim = (
            f" aimed at validation accuracy {args.target_acc:g}% (guidance {args.guidance:g})"
            if args.target_acc is not None
            else ""
        )
        print(f"wrote {args.n} generated models{aim} to {out}")
    elif command == "evaluate":
        metrics = evaluate_run(args.run, args.device, progress)
        print(format_table(metrics))
        print(f"\nwrote {Path(args.run) / 'metrics.json'}")
    elif command == "report":
        path = report_run(args.run, args.device, args.seed, progress)
        print("\n".join(load_json(path.parent / "novelty.json")["verdict"]))
        print(f"\nwrote {path}")
    elif command == "doctor":
        from nndiff.analysis.doctor import format_checks

        checks = doctor_run(args.run, args.device)
        print(format_checks(checks))
        if any(c.status == "fail" for c in checks):
            return 1
    elif command == "sweep":
        from nndiff.pipeline.sweep import run_sweep, sweep_table

        collect, train, sample = _configs(args)
        results = run_sweep(
            args.task,
            args.ablation,
            args.out,
            collect,
            train_config=train,
            values=args["values"],
            sample=sample,
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
        metrics = run_all(
            args.task,
            out,
            collect,
            train,
            sample=sample,
            progress=progress,
            base=args.base,
            report=not args.no_report,
            fresh=args.fresh,
        )
        print()
        print(format_table(metrics))
        t = metrics["timings_s"]
        print("\ntime (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
        if not args.no_report:
            print("\n" + "\n".join(load_json(out / "report" / "novelty.json")["verdict"]))
            print(f"wrote {out / 'report' / 'report.md'}")
        print(f"wrote {out / 'metrics.json'}")
    return 0


def _same_task_as_the_zoo(command: str, args) -> None:
    """--task on a zoo or run whose zoo records another task is refused (it would be ignored)."""
    from nndiff.pipeline.rundir import is_family_run, read_run_config, refuse_another_task

    if command == "train":
        refuse_another_task(args.zoo, args.task)
    elif args.get("run") is not None and Path(args.run).is_dir() and not is_family_run(Path(args.run)):
        try:
            zoo_dir, _ = read_run_config(args.run)
        except NndiffError:
            return  # the command itself says what is wrong with the run
        refuse_another_task(zoo_dir, args.task)


def _code_named_on_the_command_line(args, words: list[str]) -> None:
    """A task or family that is code (file.py:function) runs only when named on the command line: one
    named only inside a --config file is data, refused before anything is imported."""
    from nndiff.tasks import USER_SPEC

    for option in print_config.CODE_OPTIONS:
        value = args.get(option)
        given = any(w == f"--{option}" or w.startswith(f"--{option}=") for w in words)
        if isinstance(value, str) and USER_SPEC.match(value) and not given:
            raise NndiffError(
                f"a --config file names the {option} {value}, which is code: nndiff runs code only when you name "
                f"it on the command line (--{option} {value}); nothing was run"
            )


def one_line(text: str) -> str:
    """A message as one printable line: newlines become spaces, terminal control codes (colours
    included, which some libraries put in their messages) are dropped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # warnings' signature
    # One line per warning, without the source line Python would quote (often a library's internals).
    name = "" if category is UserWarning else f"{category.__name__}: "
    print(f"nndiff: warning: {name}{one_line(str(message))}", file=file or sys.stderr)


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush does not fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    from nndiff.config.options import one_line_error

    words = sys.argv[1:] if argv is None else list(argv)
    try:
        namespace = build_parser().parse_args(print_config.without_it(words))
    except argparse.ArgumentError as e:  # an option's value refused: one line, as every other error
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
        _code_named_on_the_command_line(args, words)
        from nndiff.runtime.distributed import init_distributed, is_main
        from nndiff.runtime.memory import reuse_freed_memory
        from nndiff.runtime.threads import follow_usable_cores

        reuse_freed_memory()
        follow_usable_cores()
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
            if print_config.asked(words):
                print(print_config.printed_config(words), end="")
                return 0
            code = dispatch(command, args, quiet)
            if sys.stdout is not None:
                sys.stdout.flush()  # a closed or full standard output fails here, not at exit
    except OSError as e:  # the system refused: standard output closed or full, a file removed meanwhile
        if debug:
            raise
        _drop_stdout()
        where = f"{e.filename}: " if e.filename else ""
        hint = "" if e.filename else " (while writing the results: is standard output closed or full?)"
        print(f"nndiff: error: {where}{one_line(e.strerror or str(e))}{hint}", file=sys.stderr)
        return 2
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
