"""Captioning a folder: which images, in batches, each caption written whole (UTF-8, atomically) with the old one
kept for undo (trainer/dataset/caption_edit.py's backup), progress for every image, and a clean stop.

Existing captions are left alone unless the mode says otherwise: "skip" (the default) does not even run the
model on them, "append" adds the new tags (or sentence) after the old ones, "overwrite" replaces them. A stop
(SIGTERM, Ctrl+C, or `should_stop`) is honoured between batches: the batch in hand is written, nothing half.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps

from trainer.dataset.caption_edit import Backup, CaptionFile, join_tags, split_tags, write_captions
from trainer.tagging.options import WD14, CaptionOptions, TagOptions

MODES = ("skip", "append", "overwrite")


class Captioner(Protocol):
    """What every tagger and captioner is: built from (model folder, device, options), it turns a batch of
    images into one caption each."""

    def caption(self, images: list[Image.Image]) -> list[str]: ...


@dataclass
class CaptionReport:
    written: list[Path] = field(default_factory=list)  # caption files written
    unchanged: list[Path] = field(default_factory=list)  # the new caption was the old one
    skipped: list[Path] = field(default_factory=list)  # images with a caption already (mode "skip")
    failed: list[tuple[Path, str]] = field(default_factory=list)  # images that could not be read, and why
    stopped: bool = False
    backup: Path | None = None  # the backup folder of this run (`tags DIR --undo` restores it)

    def to_json(self) -> dict:
        return {"event": "done", "written": len(self.written), "unchanged": len(self.unchanged),
                "skipped": len(self.skipped), "failed": [{"file": str(p), "error": e} for p, e in self.failed],
                "stopped": self.stopped, "backup": str(self.backup) if self.backup else None}


def split_work(files: list[CaptionFile], mode: str) -> tuple[list[CaptionFile], list[CaptionFile]]:
    """(to caption, skipped): in mode "skip", images with a caption already are skipped; an unreadable caption
    is never replaced."""
    todo, skipped = [], []
    for item in files:
        keep = item.error or (mode == "skip" and item.text)
        (skipped if keep else todo).append(item)
    return todo, skipped


def merged(old: str | None, new: str, mode: str, tags: bool) -> str:
    """The caption written: new, or in mode "append" the old one followed by what is new (tags: tag by tag)."""
    if mode != "append" or not old:
        return new
    if tags:
        existing = split_tags(old)
        return join_tags(existing + [tag for tag in split_tags(new) if tag not in existing])
    return old if new in old else f"{old}, {new}"


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return ImageOps.exif_transpose(img)


def run_captioner(captioner: Captioner, root: Path, files: list[CaptionFile], *, mode: str, batch_size: int,
                  tags: bool, label: str, progress: Callable[[dict], None] = lambda event: None,
                  should_stop: Callable[[], bool] = lambda: False) -> CaptionReport:
    """Caption `files` (from split_work) in batches; progress gets {"event": "progress", "done", "total",
    "file", "caption"} (or "error") for each image."""
    report, backup = CaptionReport(), Backup(Path(root), label)
    done = 0
    for start in range(0, len(files), batch_size):
        batch, images = [], []
        for item in files[start:start + batch_size]:
            try:
                images.append(load_image(item.image))
                batch.append(item)
            except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ...
                report.failed.append((item.image, str(exc)))
                done += 1
                progress({"event": "progress", "done": done, "total": len(files), "file": str(item.image),
                          "error": str(exc)})
        texts = [merged(item.text, caption, mode, tags)
                 for item, caption in zip(batch, captioner.caption(images) if images else [])]
        write_captions({item.path: text for item, text in zip(batch, texts) if text != item.text}, backup)
        for item, text in zip(batch, texts):
            (report.unchanged if text == item.text else report.written).append(item.path)
            done += 1
            progress({"event": "progress", "done": done, "total": len(files), "file": str(item.image),
                      "caption": text})
        if should_stop() and done < len(files):
            report.stopped = True
            break
    report.backup = backup.folder
    return report


class StopRequest:
    """A stop asked by SIGTERM or SIGINT while in `with`, or by stop_file appearing (Windows cannot catch
    SIGTERM: a GUI there writes the file): the first signal is noted (call the object to ask), a second one ends
    the process at once, as the signal's default does."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.asked = False
        self.stop_file = stop_file
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.asked or bool(self.stop_file and self.stop_file.exists())

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.asked = True
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))


def load_captioner(kind: str, folder: Path, device: str, tag_options: TagOptions,
                   caption_options: CaptionOptions) -> Captioner:
    """The tagger (WD14, onnxruntime) or captioner (Florence-2, BLIP: transformers) of a model folder."""
    if kind == WD14:
        from trainer.tagging.wd14 import WdTagger

        return WdTagger(folder, device, tag_options)
    from trainer.tagging.captioners import TransformersCaptioner

    return TransformersCaptioner(folder, device, caption_options, kind)
