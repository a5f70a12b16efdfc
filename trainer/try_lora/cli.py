"""`python -m trainer try`: argparse wiring (torch-free) and the command, which loads the model."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from trainer.common.errors import UserError
from trainer.common.exit_codes import EXIT_OK
from trainer.common.libraries import hide_unused, quiet_libraries
from trainer.config import SAMPLERS
from trainer.try_lora.grid import AXES, DEFAULT_STRENGTHS, STOP_FILE, GridSpec, lora_choice, parse_list
from trainer.try_lora.runs import run_defaults

TRY_DOC = ("Renders LoRA files at several strengths, seeds and prompts on their base model (loaded once; each file "
           "is added to its weights, W + strength x dW, and taken out again) as a labelled grid: OUT/grid.png with the "
           "settings in its text chunk, OUT/grid.json with every cell's effect size (RMS pixel distance from the base "
           "model's picture at the same seed and prompt), the seed spread and health (black/flat/noise). Each cell "
           "is written as it finishes (OUT/cells/, OUT/progress.jsonl). OUT/STOP or SIGTERM ends it after the "
           "current cell. Axes: " + ", ".join(AXES) + ".")


def add_try_command(commands) -> None:
    parser = commands.add_parser("try", help="a grid of LoRA strengths x seeds x epochs, with measured effects",
                                 description=TRY_DOC)
    add_try_arguments(parser)
    parser.set_defaults(func=try_command)


class _Refusing(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(message, zh=f"参数有误：{message}")


def check_try_args(args: list[str]) -> GridSpec:
    """The grid `python -m trainer try ARGS` would render, or its refusal as a UserError (the GUI checks before it
    starts the child; reads the run folder and prompt options, loads no model)."""
    parser = _Refusing(prog="python -m trainer try", add_help=False)
    add_try_arguments(parser)
    return grid_spec(parser.parse_args(args))


def add_try_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to try")
    source.add_argument("--run", type=Path, metavar="RUN_DIR", help="a run folder: its base model, epoch files, "
                        "sample prompts, sampler and seed are the defaults")
    source.add_argument("--base", help="base model (checkpoint or diffusers folder); default: the run's")
    source.add_argument("--lora", nargs="+", type=Path, metavar="FILE", help="LoRA files (kohya, LyCORIS or "
                        "diffusers layout); default: the run's files")
    source.add_argument("--again", type=Path, metavar="GRID_JSON", help="render a grid.json (or grid.png)'s "
                        "settings again; other options override them")
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--strengths", help="comma-separated, default " + ",".join(f"{s:g}" for s in DEFAULT_STRENGTHS))
    grid.add_argument("--seeds", help="comma-separated, default: the run's seed and the next")
    grid.add_argument("--prompts", nargs="+", metavar="PROMPT", help="prompt lines (sd-scripts options --n, --w, "
                      "--h, --s, --l allowed); default: the run's sample prompts")
    grid.add_argument("--rows", help="axes along the rows, comma-separated (default strength)")
    grid.add_argument("--cols", help="axes along the columns (default file, or epoch for one run's files)")
    grid.add_argument("--sampler", choices=list(SAMPLERS), help="default: the run's sample_sampler, else euler_a")
    grid.add_argument("--steps", type=int, help="sampling steps (default: each prompt's --s, else 20)")
    grid.add_argument("--cfg", type=float, help="guidance scale (default: each prompt's --l, else the family's)")
    grid.add_argument("--width", type=int)
    grid.add_argument("--height", type=int)
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/try/<time>, or try/<time>)")
    parser.add_argument("--json", action="store_true", help="print grid.json's summary as one JSON object at the end")


def grid_spec(args: argparse.Namespace) -> GridSpec:
    """The grid the options ask for: --again's settings or the run's defaults, then each option given."""
    values: dict[str, Any] = {}
    if args.again:
        values = GridSpec.from_json(_settings(args.again)).__dict__.copy()
    elif args.run:
        values = run_defaults(args.run)
    if args.base:
        values["base"] = args.base
    if args.lora:
        values["loras"] = [lora_choice(path.expanduser().resolve()) for path in args.lora]
    for option, kind in (("strengths", float), ("seeds", int)):
        if getattr(args, option) is not None:
            values[option] = parse_list(getattr(args, option), kind, f"--{option}")
    if args.prompts is not None:  # a line that starts with "-" comes with a space in front (argparse)
        values["prompts"] = [line.strip() for line in args.prompts if line.strip()]
    for option in ("sampler", "steps", "cfg", "width", "height"):
        if getattr(args, option) is not None:
            values[option] = getattr(args, option)
    for option in ("rows", "cols"):
        if getattr(args, option):
            values[option] = [axis.strip() for axis in getattr(args, option).split(",") if axis.strip()]
    if not values.get("base"):
        raise UserError("--base: no base model given", "give --base MODEL, or --run RUN_DIR to use the run's",
                        zh="--base：没有给出底模", hint_zh="用 --base 指定底模，或用 --run 使用训练时的底模")
    values.setdefault("loras", [])
    if "cols" not in values:
        one_run = len({lora.name for lora in values["loras"]}) == 1 and len(values["loras"]) > 1
        values["cols"] = ["epoch"] if one_run else ["file"]
    spec = GridSpec(**values)
    spec.check()
    return spec


def _settings(path: Path) -> dict[str, Any]:
    from trainer.try_lora.picture import read_settings

    try:
        if path.suffix.lower() == ".png":
            settings = read_settings(path)
        else:
            settings = json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError) as exc:
        settings, why = None, str(exc)
    else:
        why = "it holds no try settings"
    if not isinstance(settings, dict):
        raise UserError(f"--again: cannot read '{path}': {why}", "give a grid.json or grid.png that `try` wrote",
                        zh=f"--again：读不了 '{path}'：{why}", hint_zh="请给出 try 生成的 grid.json 或 grid.png")
    return settings


def try_command(args: argparse.Namespace) -> int:
    spec = grid_spec(args)  # refused before any model loads
    out = args.out or _default_out(spec)
    hide_unused(set())
    quiet_libraries()
    from trainer.try_lora.render import render_grid

    stop = {"asked": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        record = render_grid(spec, out.expanduser(), lambda: stop["asked"] or (out / STOP_FILE).exists(), say)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps({k: record[k] for k in ("status", "summary", "effect_space", "total")}
                         | {"grid": str(out / "grid.png"), "json": str(out / "grid.json")}, ensure_ascii=False))
    return EXIT_OK  # completed, or stopped as asked (progress.jsonl and grid.json say which)


def _default_out(spec: GridSpec) -> Path:
    from trainer.run.events import new_run_dir

    return new_run_dir(Path(spec.run) if spec.run else Path.cwd(), "try")
