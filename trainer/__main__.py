"""Command line: python -m trainer train|check|lr-find|demo|reference|sweep|try|lora|caption|tags|dataset-check ..."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from trainer.common.errors import ConfigError, UserError
from trainer.common.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from trainer.dataset.cli import add_dataset_commands
from trainer.lora_tools.cli import add_lora_commands
from trainer.presets.cli import add_preset_commands
from trainer.run.child import JSON_ERRORS_ENV, error_json
from trainer.tagging.cli import add_caption_command
from trainer.try_lora.cli import add_try_command
from trainer.try_lora.serve import add_server_command

if TYPE_CHECKING:
    from trainer.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        _print_refusal(exc)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED


def _print_refusal(exc: UserError) -> None:
    """On stderr: its problems as one JSON line when DANLU_JSON_ERRORS is 1 (what trainer/run/child.py reads),
    else a line for each."""
    if _json_errors():
        print(error_json(exc), file=sys.stderr)
    elif isinstance(exc, ConfigError):
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
    else:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)


def _json_errors() -> bool:
    return os.environ.get(JSON_ERRORS_ENV) == "1"


class _Parser(argparse.ArgumentParser):
    """argparse's own refusals (a bad option value, a missing argument) in JSON too, when asked for."""

    def error(self, message: str) -> NoReturn:
        if not _json_errors():
            super().error(message)
        _print_refusal(UserError(message, zh=f"命令行参数有误：{message}"))
        sys.exit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer", description="Danlu LoRA trainer",
                     epilog=f"With {JSON_ERRORS_ENV}=1 a refusal (exit status {EXIT_BAD_INPUT}) is printed as one "
                            'JSON line on stderr: {"errors": [{"keys": [...], "message": ..., "hint": ...}]}.')
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a LoRA from a config file (YAML, JSON or TOML)")
    train.add_argument("config", type=Path)
    train.add_argument("--run-dir", type=Path, help="use this run folder instead of output_dir/runs/<time>")
    train.set_defaults(func=_train)
    check = commands.add_parser("check", help="validate a config and print the step plan; loads no model")
    check.add_argument("config", type=Path)
    check.add_argument("--vram", type=_positive_float, metavar="GB",
                       help="compare the memory estimate with a card of this many GB (default: this machine's GPU)")
    check.set_defaults(func=_check)
    demo = commands.add_parser("demo", help="build a tiny local model and dataset and train on them")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="where the demo model and data go")
    demo.add_argument("--prepare-only", action="store_true",
                      help="build the model, dataset and DIR/config.yaml without training (the GUI's demo)")
    demo.set_defaults(func=_demo)
    from trainer.experiments.lr_find import PROBES

    lr_find = commands.add_parser("lr-find", help="suggest learning rates from a short D-Adaptation/Prodigy run")
    lr_find.add_argument("config", type=Path)
    lr_find.add_argument("--optimizer", choices=list(PROBES), default=next(iter(PROBES)),
                         help="the probe's optimizer (default: %(default)s)")
    lr_find.add_argument("--steps", type=_positive_int, help="probe length; default: " + ", ".join(
        f"{name} {probe.max_steps}" for name, probe in PROBES.items()) + ", at most the config's total steps")
    lr_find.add_argument("--run-dir", type=Path, help="use this run folder instead of output_dir/runs/<time>")
    lr_find.add_argument("--json", action="store_true", help="print one JSON object (training output goes to stderr)")
    lr_find.set_defaults(func=_lr_find)
    reference = commands.add_parser("reference", help="print the parameter reference (docs/parameters*.md)")
    reference.add_argument("--lang", choices=("en", "zh"), default="en")
    reference.set_defaults(func=_reference)
    sweep = commands.add_parser("sweep", help="train variations of a config one after another, to compare them")
    sweep.add_argument("config", type=Path)
    sweep.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2",
                       help="a key and its values, e.g. network_dim=8,16 (resolution as 768x512); repeat for "
                            "more keys: every combination runs")
    sweep.add_argument("--dry-run", action="store_true", help="check every variation and print the plan; train none")
    sweep.add_argument("--sweep-dir", type=Path, help="use this sweep folder instead of output_dir/sweeps/<time>")
    sweep.set_defaults(func=_sweep)
    worker = commands.add_parser("worker", help="answer the GUI's questions that need torch (LR curve, GPU, "
                                 "optimizer), one JSON line per request on stdin; see trainer/checks/service.py")
    worker.set_defaults(func=_worker)
    add_try_command(commands)
    add_server_command(commands)
    add_lora_commands(commands)
    add_preset_commands(commands)
    add_caption_command(commands)
    add_dataset_commands(commands)
    return parser


def _check(args: argparse.Namespace) -> int:
    from trainer.checks.preflight import run_preflight
    from trainer.config.io import load_config
    from trainer.training.checkpoints import final_file

    config = load_config(args.config)
    pre = run_preflight(config)
    for warning in pre.warnings:
        print(f"warning: {warning}")
    print(pre.plan.describe())
    print(f"output: {final_file(config)}")
    print(_memory_report(config, args.vram))
    return EXIT_OK


def _memory_report(config: TrainConfig, vram: float | None) -> str:
    """The memory estimate against --vram, else against this machine's GPU."""
    from trainer.checks.advice import gpu_memory_gib
    from trainer.checks.memory import fit_report
    from trainer.families.detect import detect_family

    source = config.pretrained_model_name_or_path
    family = detect_family(str(Path(source).expanduser())) if config.model_family == "auto" and source else None
    return fit_report(config, vram or gpu_memory_gib(), family)


def _train(args: argparse.Namespace) -> int:
    from trainer.config.io import load_config
    from trainer.training.start import load_only_what_is_used, run_training

    config = load_config(args.config)
    load_only_what_is_used(config)
    return run_training(config, args.run_dir)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB above 0")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of steps above 0")
    return int(text)


def _lr_find(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from trainer.config.io import load_config
    from trainer.experiments.lr_find import ProbeFailed, describe, lr_find
    from trainer.training.start import load_only_what_is_used

    config = load_config(args.config)
    load_only_what_is_used(config)
    # With --json, stdout carries only the result: the probe's training log goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with quiet:
            result = lr_find(config, args.optimizer, args.steps, args.run_dir)
    except ProbeFailed:
        return EXIT_FAILED
    print(json.dumps(result.to_json()) if args.json else describe(result))
    return EXIT_OK


def _reference(args: argparse.Namespace) -> int:
    from trainer.config.reference import parameter_reference

    sys.stdout.write(parameter_reference(args.lang))
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from trainer.experiments.sweep_run import sweep_command

    return EXIT_OK if sweep_command(args.config, args.vary, args.dry_run, args.sweep_dir) else EXIT_FAILED


def _worker(args: argparse.Namespace) -> int:
    from trainer.checks.service import serve_stdio

    return serve_stdio()


def _demo(args: argparse.Namespace) -> int:
    from trainer.config import TrainConfig
    from trainer.demo.prepare import DEMO_SETTINGS, demo_config
    from trainer.training.start import load_only_what_is_used, run_training

    load_only_what_is_used(TrainConfig(**DEMO_SETTINGS))  # before the demo model is built
    config = demo_config(args.dir.resolve())
    if args.prepare_only:
        print(f"demo config: {args.dir.resolve() / 'config.yaml'}")
        return EXIT_OK
    return run_training(config, None)


if __name__ == "__main__":
    sys.exit(main())
