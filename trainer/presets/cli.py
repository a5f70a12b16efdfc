"""The `preset` command group: list, import (kohya_ss, sd-scripts, lora-scripts), export (share-safe)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.common.exit_codes import EXIT_OK


def add_preset_commands(commands) -> None:
    preset = commands.add_parser("preset", help="presets: list, import other tools' configs, export")
    tools = preset.add_subparsers(dest="tool", required=True)

    listing = tools.add_parser("list", help="the shipped presets and yours (DANLU_HOME/presets)")
    listing.add_argument("--lang", choices=("en", "zh"), default="en")
    listing.set_defaults(func=_list)

    imported = tools.add_parser("import", help="a kohya_ss GUI JSON, sd-scripts config or dataset TOML, or "
                                               "lora-scripts TOML, as a Danlu preset")
    imported.add_argument("file", type=Path)
    _output(imported)
    imported.set_defaults(func=_import)

    exported = tools.add_parser("export", help="a config (e.g. a run's config.yaml) as a preset of the keys that "
                                               "differ from the defaults")
    exported.add_argument("config", type=Path)
    exported.add_argument("--share", action="store_true",
                          help="leave out this computer's values (model, dataset, output and sample-file paths)")
    exported.add_argument("--name", help="the preset's name (default: the output file's name)")
    _output(exported)
    exported.set_defaults(func=_export)


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help="the preset file (.yaml or .json)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def _list(args: argparse.Namespace) -> int:
    from trainer.presets.library import list_presets

    entries, problems = list_presets()
    for entry in entries:
        preset = entry.preset
        details = ", ".join(filter(None, [preset.model_family, f"{preset.vram_gb:g} GB" if preset.vram_gb else ""]))
        print(f"{entry.source:7}  {entry.path.stem:32}  {preset.text('title', args.lang)}"
              + (f"  ({details})" if details else ""))
    for problem in problems:
        print(f"warning: {problem}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from trainer.presets.format import Preset, changed_settings, write_preset
    from trainer.presets.importers import import_file

    result = import_file(args.file)
    meta = result.metadata
    title = {"en": str(meta["name"])} if meta.get("name") else {}
    description = {"en": str(meta["description"])} if meta.get("description") else {}
    settings = changed_settings(result.settings)
    preset = Preset(args.output.stem, settings, title, description, author=str(meta.get("author") or ""))
    write_preset(preset, args.output, args.overwrite)
    print(f"{args.file.name} ({result.format}): {len(settings)} settings -> {args.output}")
    for line in result.report():
        print(line)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from trainer.config.io import load_config, parse_config_file
    from trainer.presets.format import Preset, changed_settings, is_preset, read_preset, share_safe, write_preset

    source = read_preset(args.config) if is_preset(parse_config_file(args.config)) else None
    settings = source.settings if source else changed_settings(load_config(args.config).model_dump())
    removed: list[str] = []
    if args.share:
        settings, removed = share_safe(settings)
    preset = Preset(args.name or args.output.stem, settings, *(
        (source.title, source.description, source.model_family, source.vram_gb, source.author) if source else ()))
    write_preset(preset, args.output, args.overwrite)
    print(f"{len(settings)} settings -> {args.output}")
    if removed:
        print("left out (this computer's values): " + ", ".join(removed))
    return EXIT_OK
