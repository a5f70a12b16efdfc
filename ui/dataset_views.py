"""What the Dataset tab shows of a dataset folder: its repeat folders, the gallery, the tag-frequency table, the image
checks and a preview of caption changes. Torch-free reading only (trainer/dataset/caption_edit.py, image_check.py);
the tab's actions are in ui/dataset_tab.py.

Gallery pictures are small JPEG copies in the system's temporary folder (Gradio serves files from there, never
from a dataset anywhere on disk), made once per image version: a refresh after a caption edit re-encodes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps

from trainer.common.errors import ConfigError, UserError
from trainer.config import TrainConfig
from trainer.config.io import validate_config
from trainer.dataset.caption_edit import CaptionFile, Change, tag_frequency
from trainer.dataset.image_check import Finding
from trainer.dataset.scan import parse_folder_name

from .i18n import t

THUMB_PX = 256
THUMBS = Path(tempfile.gettempdir()) / "danlu-thumbnails"
GALLERY_MAX = 300  # pictures in the gallery at once (choose one folder to see the rest)
CAPTION_SHOWN = 120  # characters of a caption under its picture
TAGS_SHOWN = 300  # rows of the frequency table
ALL = ""  # the folder choice "every folder"


def dataset_root(train_data_dir: str | None) -> Path:
    """The form's train_data_dir as a folder; a UserError saying what to do when it is empty or missing."""
    text = (train_data_dir or "").strip()
    if not text:
        raise UserError(t("en", "ds_no_folder"), key="train_data_dir", zh=t("zh", "ds_no_folder"))
    root = Path(text).expanduser()
    if not root.is_dir():
        raise UserError(t("en", "ds_missing_folder", folder=root), key="train_data_dir",
                        zh=t("zh", "ds_missing_folder", folder=root))
    return root.resolve()


def form_config(data: dict[str, Any]) -> TrainConfig:
    """The form's config for the checks (resolution, buckets, caption_extension): the fields that do not
    validate are left at their defaults, so a missing base model does not hide the dataset's findings."""
    try:
        return validate_config(data)
    except ConfigError as exc:
        bad = {key for problem in exc.problems for key in problem.keys}
    try:
        return validate_config({key: value for key, value in data.items() if key not in bad})
    except ConfigError:
        return TrainConfig()


def relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- folders -------------------------------------------------------------------------------------------------

def by_folder(files: list[CaptionFile]) -> dict[Path, list[CaptionFile]]:
    found: dict[Path, list[CaptionFile]] = {}
    for item in files:
        found.setdefault(item.image.parent, []).append(item)
    return found


def folders_markdown(root: Path, files: list[CaptionFile], lang: str) -> str:
    """A table of the image folders: repeats (from N_name), images, captions; a folder without a repeat count is
    marked as not trained (sd-scripts skips it)."""
    rows = []
    for folder, items in by_folder(files).items():
        parsed = parse_folder_name(folder.name) if folder != root else None
        repeats = str(parsed[0]) if parsed else t(lang, "ds_not_trained")
        captioned = sum(bool(item.text) for item in items)
        rows.append(f"| `{relative(folder, root) if folder != root else '.'}` | {repeats} | {len(items)} | "
                    f"{captioned}/{len(items)} |")
    if not rows:
        return t(lang, "ds_no_images", folder=root)
    head = f"| {t(lang, 'ds_col_folder')} | {t(lang, 'ds_col_repeats')} | {t(lang, 'ds_col_images')} | " \
           f"{t(lang, 'ds_col_captions')} |\n|---|---|---|---|"
    return f"`{root}`\n\n{head}\n" + "\n".join(rows)


def folder_choices(root: Path, files: list[CaptionFile], lang: str) -> list[tuple[str, str]]:
    """(label, value) of the folder filter: every folder, then each image folder with its image count."""
    folders = by_folder(files)
    return [(t(lang, "ds_all_folders", n=len(files)), ALL)] + [
        (f"{relative(folder, root) if folder != root else '.'} ({len(items)})", str(folder))
        for folder, items in folders.items()]


# --- gallery -------------------------------------------------------------------------------------------------

def folder_files(files: list[CaptionFile], folder: str) -> list[CaptionFile]:
    """The files of the chosen folder (ALL: every one); the gallery shows the first GALLERY_MAX."""
    return [item for item in files if folder == ALL or str(item.image.parent) == folder]


def gallery_items(files: list[CaptionFile], lang: str) -> list[tuple[str, str]]:
    """(thumbnail, caption) for each file; an unreadable image shows as a grey square."""
    return [(str(thumbnail(item.image)), _short(item, lang)) for item in files]


def _short(item: CaptionFile, lang: str) -> str:
    if item.error:
        return "⚠ " + t(lang, "ds_caption_unreadable")
    text = item.text or t(lang, "ds_no_caption")
    return f"{item.image.name}: {text[:CAPTION_SHOWN]}{'…' if len(text) > CAPTION_SHOWN else ''}"


def thumbnail(image: Path) -> Path:
    try:
        stat = image.stat()
    except OSError:
        return _blank()
    return _thumbnail(str(image), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime_ns: int, size: int) -> Path:
    out = THUMBS / (hashlib.sha1(f"{path}|{mtime_ns}|{size}".encode()).hexdigest() + ".jpg")
    if out.exists():
        return out
    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a fraction of the size
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((THUMB_PX, THUMB_PX))
    except Exception:  # noqa: BLE001 - PIL signals a bad file in several ways; the checks below name it
        return _blank()
    THUMBS.mkdir(parents=True, exist_ok=True)
    small.save(out, "JPEG", quality=85)
    return out


def _blank() -> Path:
    out = THUMBS / "unreadable.jpg"
    if not out.exists():
        THUMBS.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (THUMB_PX, THUMB_PX), (128, 128, 128)).save(out, "JPEG")
    return out


# --- tags, findings, changes ---------------------------------------------------------------------------------

def frequency_frame(files: list[CaptionFile], lang: str) -> pd.DataFrame:
    """Tag, count over the dataset, then one column per image folder (ss_tag_frequency's counts), most
    frequent first."""
    per_folder = tag_frequency(files)
    total = Counter()
    for counts in per_folder.values():
        total.update(counts)
    names = list(per_folder)
    rows = [[tag, count, *(per_folder[name].get(tag, 0) for name in names)]
            for tag, count in total.most_common(TAGS_SHOWN)]
    columns = [t(lang, "ds_col_tag"), t(lang, "ds_col_count"), *names]
    return pd.DataFrame(rows, columns=columns)


def findings_markdown(root: Path, findings: list[Finding], lang: str) -> str:
    """One line per finding: level, file, what is wrong and what to do."""
    if not findings:
        return t(lang, "ds_checks_clean")
    counts = Counter(finding.level for finding in findings)
    head = t(lang, "ds_checks_count", errors=counts["error"], warnings=counts["warning"], notes=counts["info"])
    icon = {"error": "⛔", "warning": "⚠", "info": "ℹ"}
    lines = [f"- {icon[f.level]} `{relative(f.path, root)}` {f.text(lang)}" for f in findings]
    return head + "\n\n" + "\n".join(lines)


def changes_frame(root: Path, changes: list[Change], lang: str) -> pd.DataFrame:
    rows = [[relative(change.path, root), change.old if change.old is not None else t(lang, "ds_no_caption"),
             change.new] for change in changes]
    return pd.DataFrame(rows, columns=[t(lang, "ds_col_file"), t(lang, "ds_col_before"), t(lang, "ds_col_after")])


def problems_text(exc: UserError, lang: str) -> str:
    return "\n".join(f"- {problem.line_in(lang)}" for problem in exc.problems)
