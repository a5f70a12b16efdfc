"""The `caption` command: tag or caption a dataset folder with a WD14 tagger, Florence-2 or BLIP."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.common.exit_codes import EXIT_OK
from trainer.dataset.cli import add_extension_options, caption_extension
from trainer.tagging.options import DEFAULT_MODELS, FLORENCE_TASKS, KINDS, CaptionOptions, TagOptions

CAPTION_DOC = ("Writes IMAGE.txt (the caption extension) next to each image under DIR, sub-folders included. "
               "Existing captions are kept unless --append or --overwrite; what is replaced is backed up in "
               "DIR/.danlu-captions-backup/ and `python -m trainer tags DIR --undo` puts it back. Models: a local "
               "folder or a Hugging Face repo id (downloaded once into the Hugging Face cache; HF_ENDPOINT picks "
               "a mirror, HF_HUB_OFFLINE=1 uses the cache only). Defaults: " +
               ", ".join(f"{kind} {repo}" for kind, repo in DEFAULT_MODELS.items()) + ".")


def add_caption_command(commands) -> None:
    caption = commands.add_parser("caption", help="tag or caption the images of a dataset folder (WD14 tagger, "
                                  "Florence-2, BLIP)", description=CAPTION_DOC)
    caption.add_argument("dir", type=Path, help="train_data_dir, or one N_name image folder")
    caption.add_argument("--model", help="model folder or Hugging Face repo id (default: the kind's default)")
    caption.add_argument("--kind", choices=KINDS, help="default: from the model's files or name, else wd14")
    caption.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    caption.add_argument("--batch-size", type=_positive, default=4)
    add_extension_options(caption)
    caption.add_argument("--only", type=Path, nargs="+", metavar="IMAGE", help="caption just these images")
    mode = caption.add_mutually_exclusive_group()
    mode.add_argument("--skip-existing", dest="mode", action="store_const", const="skip",
                      help="leave images that have a caption alone (the default)")
    mode.add_argument("--append", dest="mode", action="store_const", const="append",
                      help="add the new tags (or sentence) after an existing caption")
    mode.add_argument("--overwrite", dest="mode", action="store_const", const="overwrite",
                      help="replace existing captions (the old ones are backed up)")
    caption.set_defaults(mode="skip")
    caption.add_argument("--stop-file", type=Path, metavar="FILE", help="stop after the current batch when FILE "
                         "appears (as on SIGTERM or Ctrl+C; a GUI's stop on Windows)")
    caption.add_argument("--json", action="store_true", help='one JSON line per event on stdout: {"event": '
                         '"start"|"loaded"|"progress"|"done", ...}; progress lines carry done, total, file, caption')
    _tag_options(caption.add_argument_group("WD14 tagger"))
    _caption_options(caption.add_argument_group("Florence-2 and BLIP"))
    caption.set_defaults(func=_caption)


def _tag_options(group: argparse._ArgumentGroup) -> None:
    defaults = TagOptions()
    group.add_argument("--general-threshold", type=float, default=defaults.general_threshold)
    group.add_argument("--character-threshold", type=float, default=defaults.character_threshold)
    group.add_argument("--rating", action="store_true", help="add the most likely rating tag (general, sensitive, "
                       "questionable, explicit) first")
    group.add_argument("--keep-underscores", action="store_true", help="long_hair stays long_hair (default: "
                       "long hair; kaomoji like ^_^ always keep theirs)")
    group.add_argument("--exclude", default="", metavar="TAGS", help="comma-separated tags never written")
    group.add_argument("--first", "--trigger", dest="first", default="", metavar="TAGS",
                       help="comma-separated tags put first in every caption, e.g. your trigger word")
    group.add_argument("--max-tags", type=int, default=0, help="keep the N most confident tags (0: all)")


def _caption_options(group: argparse._ArgumentGroup) -> None:
    defaults = CaptionOptions()
    group.add_argument("--task", choices=FLORENCE_TASKS, default=defaults.task, help="Florence-2's task")
    group.add_argument("--max-length", type=_positive, default=defaults.max_length, help="longest caption, tokens")
    group.add_argument("--num-beams", type=_positive, default=defaults.num_beams)
    group.add_argument("--prefix", default="", help="text before each caption, e.g. the trigger word")
    group.add_argument("--suffix", default="", help="text after each caption")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _caption(args: argparse.Namespace) -> int:
    from trainer.dataset.caption_edit import caption_files, chosen_images, split_tags
    from trainer.tagging.options import WD14, kind_of_name, resolve_kind
    from trainer.tagging.run import CaptionReport, StopRequest, load_captioner, run_captioner, split_work
    from trainer.tagging.source import model_folder

    files = caption_files(args.dir, caption_extension(args), chosen_images(args.dir, args.only))
    todo, skipped = split_work(files, args.mode)
    source = args.model or DEFAULT_MODELS[args.kind or WD14]
    emit = _emitter(args.json)
    emit({"event": "start", "total": len(todo), "skipped": len(skipped), "model": source})
    report = None
    if todo:
        folder = model_folder(source, args.kind or kind_of_name(source))
        kind = resolve_kind(args.kind, source, folder)
        tag_options = TagOptions(args.general_threshold, args.character_threshold, args.rating,
                                 not args.keep_underscores, tuple(split_tags(args.exclude)),
                                 tuple(split_tags(args.first)), args.max_tags)
        caption_options = CaptionOptions(args.task, args.max_length, args.num_beams, args.prefix, args.suffix)
        captioner = load_captioner(kind, folder, args.device, tag_options, caption_options)
        emit({"event": "loaded", "kind": kind, "folder": str(folder)})
        with StopRequest(args.stop_file) as stop:
            report = run_captioner(captioner, args.dir, todo, mode=args.mode, batch_size=args.batch_size,
                                   tags=kind == WD14, label=f"caption {source}", progress=emit, should_stop=stop)
    emit({**(report or CaptionReport()).to_json(), "skipped": len(skipped)})
    return EXIT_OK


def _emitter(as_json: bool):
    def emit(event: dict) -> None:
        if as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        else:
            print(_line(event), flush=True)

    return emit


def _line(event: dict) -> str:
    kind = event["event"]
    if kind == "start":
        return f"captioning {event['total']} images with {event['model']} ({event['skipped']} have a caption: kept)"
    if kind == "loaded":
        return f"loaded the {event['kind']} model from {event['folder']}"
    if kind == "progress":
        said = f"error: {event['error']}" if "error" in event else event["caption"]
        return f"[{event['done']}/{event['total']}] {event['file']}: {said}"
    ended = "stopped: " if event.get("stopped") else ""
    backup = Path(event["backup"]) if event.get("backup") else None  # DIR/.danlu-captions-backup/<time>
    undo = f'; undo: python -m trainer tags "{backup.parent.parent}" --undo' if backup else ""
    return (f"{ended}{event['written']} captions written, {event['skipped']} kept, {len(event['failed'])} images "
            f"unreadable{undo}")

