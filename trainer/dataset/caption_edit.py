"""Bulk caption edits over a dataset folder: plan (a preview of every change), apply with a backup, undo.

Each edit is a pure function of the captions: `plan_edit` returns the (file, old, new) changes and writes nothing,
so the GUI can show them before `apply_changes` writes. Every write first copies the old caption into
DIR/.danlu-captions-backup/<time>/ (a hidden folder the dataset scan skips), with a manifest of which files existed,
so `undo` puts back exactly the files of the last operation, removing captions it created. Captions are read as
users save them (UTF-8, UTF-16 with a BOM, GBK: trainer/common/text.py) and written as UTF-8.

Tags are separated by "," or the Chinese "，"; an edited caption is written with ", " between tags, the separator
training splits on. `count_tags` is the one count of tags: ss_tag_frequency in a saved LoRA uses it too.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trainer.common.errors import UserError
from trainer.common.files import atomic_write_bytes, atomic_write_text, new_dated_folder
from trainer.common.text import decode_user_text
from trainer.dataset.scan import is_image_file, parse_folder_name

BACKUP_DIR = ".danlu-captions-backup"
MANIFEST = "manifest.json"
JOINER = ", "
_SEPARATOR = re.compile(r"[,，]")


def split_tags(caption: str) -> list[str]:
    """The tags of a caption, in order: split at "," and "，" (and line breaks), stripped, empty ones dropped."""
    return [tag.strip() for tag in _SEPARATOR.split(caption.replace("\n", ",")) if tag.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return JOINER.join(tags)


def count_tags(captions: Iterable[str]) -> Counter[str]:
    """How often each tag occurs (twice in one caption counts twice): what ss_tag_frequency records."""
    return Counter(tag for caption in captions for tag in split_tags(caption))


@dataclass(frozen=True)
class CaptionFile:
    """One image's caption: text is None when the caption file does not exist."""

    image: Path
    path: Path  # the caption file (image stem + caption_extension), existing or not
    text: str | None
    error: str = ""  # why the caption could not be read (then it is left alone)

    @property
    def caption(self) -> str:
        return self.text or ""


@dataclass(frozen=True)
class Change:
    path: Path
    old: str | None  # None: the file is created
    new: str


def normal_extension(caption_extension: str) -> str:
    return caption_extension if caption_extension.startswith(".") else "." + caption_extension


def dataset_images(root: Path) -> list[Path]:
    """The images under root, in every sub-folder (a train_data_dir or one of its N_name folders); hidden
    files and folders (Danlu's backups, .ipynb_checkpoints) are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"'{root}' is not a folder", "give the dataset folder (train_data_dir or one N_name folder)",
                        zh=f"'{root}' 不是文件夹",
                        hint_zh="请给出数据集文件夹（train_data_dir 或其中一个 N_名称 文件夹）")
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).parts
        if not any(part.startswith(".") for part in relative) and path.is_file() and is_image_file(path):
            found.append(path)
    return found


def chosen_images(root: Path, images: Iterable[Path] | None) -> list[Path] | None:
    """A user's selection (--only, the GUI's gallery): each must be an image file under root; None: all."""
    if images is None:
        return None
    images = [Path(p) for p in images]
    for image in images:
        if not (image.is_file() and is_image_file(image) and image.resolve().is_relative_to(Path(root).resolve())):
            raise UserError(f"'{image}' is not an image in '{root}'", "choose image files inside the dataset folder",
                            zh=f"'{image}' 不是 '{root}' 中的图片", hint_zh="请选择数据集文件夹中的图片文件")
    return images


def read_caption(image: Path, caption_extension: str) -> CaptionFile:
    path = image.with_name(image.stem + normal_extension(caption_extension))
    if not path.is_file():
        return CaptionFile(image, path, None)
    try:
        text = decode_user_text(path.read_bytes(), path)
    except (UserError, OSError) as exc:
        return CaptionFile(image, path, None, getattr(exc, "message", None) or str(exc))
    return CaptionFile(image, path, text.strip())


def caption_files(root: Path, caption_extension: str, only: Iterable[Path] | None = None) -> list[CaptionFile]:
    """Every image's caption under root; only: just these images."""
    images = dataset_images(root) if only is None else [Path(p) for p in only]
    return [read_caption(image, caption_extension) for image in images]


def captions_without_images(root: Path, caption_extension: str) -> list[Path]:
    """Caption files with no image of the same name next to them (left after an image was deleted), in the
    folders that hold images (a notes.txt beside the image folders is not a caption)."""
    ext = normal_extension(caption_extension).lower()
    images = {(p.parent, p.stem) for p in dataset_images(root)}
    folders = {folder for folder, _ in images}
    return [p for folder in sorted(folders) for p in sorted(folder.iterdir())
            if p.is_file() and p.name.lower().endswith(ext) and not p.name.startswith(".")
            and (p.parent, p.name[:-len(ext)]) not in images]


def tag_frequency(files: Iterable[CaptionFile]) -> dict[str, dict[str, int]]:
    """Per image folder, how often each tag occurs, most frequent first: the counts ss_tag_frequency gets. An
    image without a caption counts its N_name folder's class tokens, as training uses them."""
    by_folder: dict[str, list[str]] = {}
    for item in files:
        parsed = parse_folder_name(item.image.parent.name)
        by_folder.setdefault(item.image.parent.name, []).append(item.text or (parsed[1] if parsed else ""))
    return {folder: dict(count_tags(captions).most_common()) for folder, captions in by_folder.items()}


@dataclass(frozen=True)
class TagEdit:
    """One bulk edit; each part that is set applies, in this order: replace, remove, min_count, dedupe, sort,
    prefix (last, so the trigger word stays first)."""

    replace: tuple[tuple[str, str], ...] = ()  # (find, replacement) pairs, in the whole caption text
    regex: bool = False  # the finds are regular expressions (re.sub; \\1 in the replacement works)
    remove: tuple[str, ...] = ()  # tags to remove (exact tags, case-insensitive)
    min_count: int = 0  # remove tags found in fewer than this many captions of the selection
    dedupe: bool = False
    sort: bool = False  # tags in alphabetical order
    prefix: tuple[str, ...] = ()  # tags (the trigger word) added or moved to the front, in this order

    def __bool__(self) -> bool:
        return self != TagEdit()


def parse_edit(prefix: str = "", replace_pairs: Iterable[str] = (), remove: Iterable[str] = (), *,
               regex: bool = False, min_count: int = 0, dedupe: bool = False, sort: bool = False) -> TagEdit:
    """A TagEdit from what a user types: prefix "zkz, 1girl", replacements "a=b", removals "x, y"."""
    pairs = []
    for text in replace_pairs:
        find, sep, to = text.partition("=")
        if not sep or not find:
            raise UserError(f"--replace '{text}' is not FIND=REPLACEMENT", "write it like --replace \"red hair=pink "
                            "hair\" (an empty replacement deletes)", zh=f"--replace '{text}' 不是 查找=替换 的形式",
                            hint_zh="请写成 --replace \"red hair=pink hair\"（替换为空即删除）")
        if regex:
            _compile(find)
        pairs.append((find, to))
    removed = tuple(tag for text in remove for tag in split_tags(text))
    return TagEdit(tuple(pairs), regex, removed, min_count, dedupe, sort, tuple(split_tags(prefix)))


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UserError(f"'{pattern}' is not a regular expression ({exc})", "fix it, or search plain text without "
                        "--regex", zh=f"'{pattern}' 不是有效的正则表达式（{exc}）",
                        hint_zh="请修正它，或去掉 --regex 按普通文本查找") from None


def plan_edit(files: Iterable[CaptionFile], edit: TagEdit) -> list[Change]:
    """The changes `edit` makes: one per caption whose text changes. Images without a caption file are left out
    (training gives them their folder's class tokens, which a lone trigger word would replace), and so are
    captions that cannot be read."""
    files = [item for item in files if item.text is not None]
    rare: set[str] = set()
    if edit.min_count > 1:
        counts = count_tags(_replaced(item.caption, edit) for item in files)
        rare = {tag for tag, count in counts.items() if count < edit.min_count}
    changes = []
    for item in files:
        new = edit_caption(item.caption, edit, rare)
        if new != item.caption:
            changes.append(Change(item.path, item.text, new))
    return changes


def edit_caption(caption: str, edit: TagEdit, rare: set[str] = frozenset()) -> str:
    """One caption after edit (rare: the tags min_count removes, counted over the selection)."""
    text = _replaced(caption, edit)
    if not (edit.remove or rare or edit.dedupe or edit.sort or edit.prefix):
        return text
    tags = split_tags(text)
    removed = {tag.lower() for tag in edit.remove}
    tags = [tag for tag in tags if tag.lower() not in removed and tag not in rare]
    if edit.dedupe:
        tags = list(dict.fromkeys(tags))
    if edit.sort:
        tags = sorted(tags, key=str.lower)
    if edit.prefix:
        tags = list(edit.prefix) + [tag for tag in tags if tag not in edit.prefix]
    return join_tags(tags)


def _replaced(caption: str, edit: TagEdit) -> str:
    for find, to in edit.replace:
        caption = _compile(find).sub(to, caption) if edit.regex else caption.replace(find, to)
    return caption.strip()


@dataclass
class Backup:
    """The backup of one operation: the old bytes of each caption before its first write, and a manifest saying
    which files existed. The manifest is written before the new files, so even a killed operation undoes."""

    root: Path
    label: str
    folder: Path | None = None
    files: dict[str, bool] = field(default_factory=dict)  # path relative to root -> it existed before

    def save(self, paths: Iterable[Path]) -> None:
        """Keep the files' content as it is now (once per operation), before they are written: each copy, then
        one manifest write for them all."""
        added = False
        for path in map(Path, paths):
            relative = path.resolve().relative_to(Path(self.root).resolve()).as_posix()
            if relative in self.files:
                continue
            if self.folder is None:
                self.folder = new_dated_folder(Path(self.root) / BACKUP_DIR)
            self.files[relative] = path.is_file()
            if self.files[relative]:
                atomic_write_bytes(self.folder / relative, path.read_bytes())
            added = True
        if added:
            atomic_write_text(self.folder / MANIFEST, json.dumps(
                {"label": self.label, "time": time.time(), "files": self.files}, ensure_ascii=False, indent=1))


def write_captions(texts: dict[Path, str], backup: Backup) -> None:
    """Write captions (UTF-8, each whole), their old versions saved in backup first."""
    backup.save(texts)
    for path, text in texts.items():
        atomic_write_text(path, text)


def write_caption(path: Path, text: str, backup: Backup) -> None:
    """One caption (a caption edited in place), its old version saved first."""
    write_captions({Path(path): text}, backup)


def apply_changes(root: Path, changes: Iterable[Change], label: str) -> Backup:
    """Write the changes (UTF-8), keeping the old captions in one backup folder that `undo` restores."""
    backup = Backup(Path(root), label)
    write_captions({change.path: change.new for change in changes}, backup)
    return backup


@dataclass(frozen=True)
class Undone:
    label: str
    restored: list[Path]  # captions put back as they were
    removed: list[Path]  # captions the operation had created


def backups(root: Path) -> list[Path]:
    """The backup folders under root, oldest first (each one operation; undo takes the last)."""
    folder = Path(root) / BACKUP_DIR
    found = [p for p in folder.iterdir() if (p / MANIFEST).is_file()] if folder.is_dir() else []
    # Named <time> or, for a later operation in the same second, <time>-N (new_dated_folder).
    return sorted(found, key=lambda p: (p.name[:15], int(p.name[16:]) if p.name[16:].isdigit() else 0))


def undo(root: Path) -> Undone:
    """Put back the captions of the last operation (caption writing or bulk edit) and drop its backup; called
    again, it undoes the one before."""
    found = backups(root)
    if not found:
        raise UserError(f"nothing to undo in '{root}' (no {BACKUP_DIR} folder with a backup)",
                        "undo works after Danlu changed captions in this folder",
                        zh=f"'{root}' 中没有可撤销的操作（没有 {BACKUP_DIR} 备份）",
                        hint_zh="Danlu 修改过这个文件夹的标注之后才能撤销")
    folder = found[-1]
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    restored, removed = [], []
    for relative, existed in manifest["files"].items():
        target = Path(root) / relative
        if existed:
            atomic_write_bytes(target, (folder / relative).read_bytes())
            restored.append(target)
        else:
            target.unlink(missing_ok=True)
            removed.append(target)
    shutil.rmtree(folder)
    return Undone(manifest.get("label", ""), restored, removed)


def describe_changes(changes: list[Change], root: Path, limit: int = 0) -> Iterator[str]:
    """Lines showing each change, "file: old -> new" (limit: at most this many, 0: all)."""
    shown = changes[:limit] if limit else changes
    for change in shown:
        name = _relative(change.path, root)
        yield f"{name}\n  - {change.old if change.old is not None else '(no caption)'}\n  + {change.new}"
    if limit and len(changes) > limit:
        yield f"... and {len(changes) - limit} more"


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)

