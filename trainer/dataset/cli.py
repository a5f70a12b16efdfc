"""The `tags` and `dataset-check` commands: bulk caption edits with a preview and undo, the tag frequency
table, and the image checks before training (trainer/dataset/caption_edit.py, image_check.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.common.exit_codes import EXIT_OK

if TYPE_CHECKING:
    from trainer.config import TrainConfig

TAGS_DOC = ("Without an edit, prints the tag frequency table (the counts a saved LoRA's ss_tag_frequency holds). "
            "Edits apply in this order: --replace, --remove, --min-count, --dedupe, --sort, --prefix; every changed "
            "caption is printed as - old / + new. Tags are separated by ',' or '，'; edited captions are written "
            "with ', ' between tags, as UTF-8. The old captions go to DIR/.danlu-captions-backup/; --undo puts "
            "back those of the last operation (again: the one before).")
CHECK_DOC = ("Reads every image under DIR: unreadable or truncated files, images far below the training "
             "resolution, aspect ratios beyond the buckets, exact and near duplicates, images without captions and "
             "captions without images, each with what to do. --resize-to N --output OUT writes a copy of the "
             "dataset with no side above N; the original is never changed.")


def add_dataset_commands(commands) -> None:
    tags = commands.add_parser("tags", help="edit the captions of a dataset in bulk (trigger word, replace, "
                               "remove, dedupe, sort, rare tags), with a preview and undo; or count tags",
                               description=TAGS_DOC)
    tags.add_argument("dir", type=Path, help="train_data_dir, or one N_name image folder")
    tags.add_argument("--prefix", default="", metavar="TAGS", help="add (or move) these tags to the front, "
                      "e.g. your trigger word")
    tags.add_argument("--replace", action="append", default=[], metavar="FIND=NEW",
                      help="replace text in every caption (repeatable; NEW may be empty)")
    tags.add_argument("--regex", action="store_true", help="--replace's FIND is a regular expression")
    tags.add_argument("--remove", action="append", default=[], metavar="TAGS", help="remove these tags")
    tags.add_argument("--dedupe", action="store_true", help="remove repeated tags")
    tags.add_argument("--sort", action="store_true", help="sort tags alphabetically")
    tags.add_argument("--min-count", type=int, default=0, metavar="N",
                      help="remove tags found in fewer than N captions")
    tags.add_argument("--only", type=Path, nargs="+", metavar="IMAGE", help="edit just these images' captions")
    tags.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    tags.add_argument("--undo", action="store_true", help="restore the captions of the last operation")
    add_extension_options(tags)
    tags.add_argument("--json", action="store_true", help="print one JSON object")
    tags.set_defaults(func=_tags)

    check = commands.add_parser("dataset-check", help="find bad images before training: unreadable, too small, "
                                "extreme aspect ratios, duplicates, missing captions", description=CHECK_DOC)
    check.add_argument("dir", type=Path, help="train_data_dir, or one N_name image folder")
    add_extension_options(check, "resolution, buckets and caption_extension")
    check.add_argument("--resolution", help="training resolution, e.g. 1024 or 768x512 (default: the config's)")
    check.add_argument("--resize-to", type=int, metavar="N", help="write a copy with no image side above N")
    check.add_argument("--output", type=Path, help="the copy's folder (new or empty, outside DIR)")
    check.add_argument("--lang", choices=("en", "zh"), default="en", help="language of the findings")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_dataset_check)


def add_extension_options(parser: argparse.ArgumentParser, taken: str = "caption_extension") -> None:
    parser.add_argument("--config", type=Path, help=f"take {taken} from this training config")
    parser.add_argument("--caption-extension", help="default: the config's, else .txt")


def caption_extension(args: argparse.Namespace) -> str:
    """--caption-extension, else the --config's caption_extension, else the schema's default."""
    return args.caption_extension or _config(args).caption_extension


def _config(args: argparse.Namespace, **changes: str) -> TrainConfig:
    from trainer.config.io import read_config_file, validate_config

    return validate_config({**(read_config_file(args.config) if args.config else {}), **changes})


def _tags(args: argparse.Namespace) -> int:
    from trainer.dataset import caption_edit as edits

    if args.undo:
        undone = edits.undo(args.dir)
        _print(args.json, {"undone": undone.label, "restored": [str(p) for p in undone.restored],
                           "removed": [str(p) for p in undone.removed]},
               f"undid '{undone.label}': {len(undone.restored)} captions restored, {len(undone.removed)} removed")
        return EXIT_OK
    files = edits.caption_files(args.dir, caption_extension(args), edits.chosen_images(args.dir, args.only))
    unreadable = [f"{item.path}: {item.error}; left as it is" for item in files if item.error]
    edit = edits.parse_edit(args.prefix, args.replace, args.remove, regex=args.regex, min_count=args.min_count,
                            dedupe=args.dedupe, sort=args.sort)
    if not edit:
        frequency = edits.tag_frequency(files)
        _print(args.json, {"frequency": frequency, "unreadable": unreadable}, _frequency_text(frequency, unreadable))
        return EXIT_OK
    changes = edits.plan_edit(files, edit)
    backup = None if args.dry_run or not changes else edits.apply_changes(args.dir, changes, _label(args)).folder
    _print(args.json, {"changes": [{"file": str(c.path), "old": c.old, "new": c.new} for c in changes],
                       "applied": backup is not None, "backup": str(backup) if backup else None,
                       "unreadable": unreadable},
           _changes_text(changes, args.dir, backup, args.dry_run, unreadable))
    return EXIT_OK


def _label(args: argparse.Namespace) -> str:
    parts = [f"--prefix {args.prefix}" if args.prefix else ""] + [f"--replace {r}" for r in args.replace]
    parts += [f"--remove {r}" for r in args.remove] + ["--regex" * args.regex, "--dedupe" * args.dedupe,
                                                       "--sort" * args.sort]
    parts.append(f"--min-count {args.min_count}" if args.min_count else "")
    return "tags " + " ".join(part for part in parts if part)


def _changes_text(changes: list, root: Path, backup: Path | None, dry_run: bool, unreadable: list[str]) -> str:
    from trainer.dataset.caption_edit import describe_changes

    lines = list(describe_changes(changes, root)) + [f"warning: {line}" for line in unreadable]
    if not changes:
        lines.append("no caption changes")
    elif dry_run:
        lines.append(f"{len(changes)} captions would change (dry run: nothing written)")
    else:
        lines.append(f"{len(changes)} captions changed; undo: python -m trainer tags \"{root}\" --undo "
                     f"(backup {backup})")
    return "\n".join(lines)


def _frequency_text(frequency: dict[str, dict[str, int]], unreadable: list[str]) -> str:
    lines = []
    for folder, counts in frequency.items():
        lines.append(f"{folder}: {len(counts)} tags")
        lines += [f"  {count:5}  {tag}" for tag, count in counts.items()]
    return "\n".join(lines + [f"warning: {line}" for line in unreadable]) or "no captions"


def _dataset_check(args: argparse.Namespace) -> int:
    from trainer.common.errors import UserError
    from trainer.dataset.image_check import Limits, check_images, resize_copy

    config = _config(args, **({"resolution": args.resolution} if args.resolution else {}))
    extension = args.caption_extension or config.caption_extension
    findings = check_images(args.dir, Limits.from_config(config), extension)
    copied = []
    if args.resize_to:
        if not args.output:
            raise UserError("--resize-to needs --output", "name a new folder for the resized copy",
                            zh="--resize-to 需要 --output", hint_zh="请给出存放缩小副本的新文件夹")
        copied = resize_copy(args.dir, args.output, args.resize_to, extension)
    counts = {level: sum(f.level == level for f in findings) for level in ("error", "warning", "info")}
    resized = sum(item.old_size != item.new_size for item in copied)
    text = [f"{f.level}: {f.path}: {f.text(args.lang)}" for f in findings]
    if args.lang == "zh":
        text.append(f"{counts['error']} 个错误，{counts['warning']} 个警告，{counts['info']} 条提示"
                    + (f"；副本在 {args.output}：{len(copied)} 张图片，缩小了 {resized} 张" if args.resize_to else ""))
    else:
        text.append(f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes"
                    + (f"; copy in {args.output}: {len(copied)} images, {resized} resized" if args.resize_to else ""))
    _print(args.json, {"findings": [f.to_json() for f in findings], "counts": counts,
                       "copied": len(copied), "resized": resized}, "\n".join(text))
    return EXIT_OK


def _print(as_json: bool, data: dict, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1) if as_json else text)
