"""Command line: python -m trainer train|check|lr-find|demo|reference|sweep|lora ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.common.errors import ConfigError, UserError
from trainer.lora_tools.cli import add_lora_commands
from trainer.presets.cli import add_preset_commands

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Danlu LoRA trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a LoRA from a config file (YAML, JSON or TOML)")
    train.add_argument("config", type=Path)
    train.add_argument("--run-dir", type=Path, help="use this run folder instead of output_dir/runs/<time>")
    train.set_defaults(func=_train)
    check = commands.add_parser("check", help="validate a config and print the step plan; loads no model")
    check.add_argument("config", type=Path)
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
    add_lora_commands(commands)
    add_preset_commands(commands)
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
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from trainer.config.io import load_config

    return run_training(load_config(args.config), args.run_dir)


def run_training(config, run_dir: Path | None) -> int:
    from trainer.run.events import new_run_dir
    from trainer.training.loop import train

    _quiet_libraries()
    run_dir = run_dir or new_run_dir(Path(config.output_dir).expanduser())
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_dir}")
    try:
        status = train(config, run_dir)
    except UserError:
        raise
    except Exception as exc:  # a crash is logged in the run folder; the user gets one line
        print(f"error: training failed: {type(exc).__name__}: {exc} (details in {run_dir / 'train.log'})",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if status in ("completed", "stopped") else EXIT_FAILED


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of steps above 0")
    return int(text)


def _lr_find(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from trainer.config.io import load_config
    from trainer.experiments.lr_find import ProbeFailed, describe, lr_find

    config = load_config(args.config)
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


def _quiet_libraries() -> None:
    """Library chatter (progress bars, dtype notes) would drown the training log users read."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _demo(args: argparse.Namespace) -> int:
    from trainer.demo.prepare import demo_config

    config = demo_config(args.dir.resolve())
    if args.prepare_only:
        print(f"demo config: {args.dir.resolve() / 'config.yaml'}")
        return EXIT_OK
    return run_training(config, None)


if __name__ == "__main__":
    sys.exit(main())
