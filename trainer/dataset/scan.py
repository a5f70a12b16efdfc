"""Scan a kohya-style dataset folder: `train_data_dir/N_name/` sub-folders, N = repeats.

Every problem a user can fix (bad folder name, unreadable image, stray file) becomes a `Problem` that names the
path and says what to do, instead of an exception in the middle of training.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from trainer.common.errors import UserError
from trainer.common.text import decode_user_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Files that legitimately sit next to images (captions, metadata, sd-scripts/Danlu caches).
_SIDECAR_SUFFIXES = (".txt", ".caption", ".json", ".npz")
_CACHE_SUFFIXES = (".latents.safetensors", ".te.safetensors")  # trainer/latents.py, trainer/te_cache.py
_EXIF_ORIENTATION = 0x0112
_FOLDER_NAME = re.compile(r"^([0-9]+)(?:_(.*))?$", re.DOTALL)
MAX_REPEATS = 10_000  # per folder: sd-scripts sets no bound, but 100000000_x only ever meant a typo
MAX_ENTRIES = 10_000_000  # images x repeats of one epoch: the plan holds each entry in memory
SKIPPED = "folder name has no repeat count"  # the starts of warnings the "no training images" error sums up
UNREADABLE = "cannot be read as an image"
REPEAT_ROOT = "is a repeat folder itself"  # train_data_dir is 10_name, not the folder holding it


@dataclass(frozen=True)
class ImageItem:
    path: Path
    caption: str  # caption file text, or the folder's class tokens when there is none
    has_caption_file: bool
    width: int  # after EXIF orientation
    height: int


@dataclass
class Subset:
    path: Path
    repeats: int
    class_tokens: str
    images: list[ImageItem]
    is_reg: bool


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str
    level: str  # "error" or "warning"
    zh: str = ""  # the reason in Chinese (the GUI's zh page)

    def reason_in(self, lang: str) -> str:
        return self.zh if lang == "zh" and self.zh else self.reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class DatasetScan:
    subsets: list[Subset] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def train_subsets(self) -> list[Subset]:
        return [s for s in self.subsets if not s.is_reg]

    @property
    def reg_subsets(self) -> list[Subset]:
        return [s for s in self.subsets if s.is_reg]


def _warn(path: Path, reason: str, zh: str) -> Problem:
    return Problem(path, reason, "warning", zh=zh)


def _error(path: Path, reason: str, zh: str) -> Problem:
    return Problem(path, reason, "error", zh=zh)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_sidecar(path: Path, caption_extension: str) -> bool:
    name = path.name.lower()
    return name.endswith(_SIDECAR_SUFFIXES + _CACHE_SUFFIXES + (caption_extension.lower(),))


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """`10_girl` -> (10, "girl"); None when there is no positive repeat count (sd-scripts skips those)."""
    match = _FOLDER_NAME.match(name)
    if match is None or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), match.group(2) or ""


def _read_size(path: Path) -> tuple[int, int]:
    """Size as the model will see it. A full decode (not `verify()`) because verify() misses truncated JPEG/BMP."""
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        img.load()
    # EXIF orientations 5..8 rotate by 90 degrees: exif_transpose swaps the sides when loading.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _read_caption(image: Path, caption_extension: str, class_tokens: str) -> tuple[str, bool, Problem | None]:
    caption_path = image.with_name(image.stem + caption_extension)
    if not caption_path.is_file():
        return class_tokens, False, None
    try:
        data = caption_path.read_bytes()
    except OSError as exc:  # a caption the training cannot read would silently become the class tokens
        return class_tokens, False, _error(caption_path, f"caption cannot be read ({exc.strerror or exc}); "
                                                         "make it readable or remove it.",
                                           f"标注文件无法读取（{exc.strerror or exc}）；请让它可读，或删掉它。")
    try:
        text = decode_user_text(data, caption_path)  # UTF-8 (a BOM is fine), UTF-16 with a BOM, GBK
    except UserError as exc:
        problem = exc.problems[0]
        return class_tokens, False, _warn(caption_path, f"caption {exc.message.split(' is ', 1)[-1]}; {exc.hint}. "
                                                        "Using the folder's class tokens.",
                                          f"标注文件读不了：{problem.detail_in('zh')}。先用文件夹的类别词代替。")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return class_tokens, False, _warn(caption_path, "caption file is empty; using the folder's class tokens.",
                                          "标注文件是空的；改用文件夹的类别词。")
    return ", ".join(lines), True, None


def _read_item(path: Path, caption_extension: str, class_tokens: str) -> tuple[ImageItem | None, list[Problem]]:
    try:
        width, height = _read_size(path)
    # PIL signals bad files with OSError, SyntaxError, ValueError or DecompressionBombError depending on format.
    except Exception as exc:  # noqa: BLE001
        return None, [_warn(path, f"{UNREADABLE}: {exc}; re-export or remove it. Skipped",
                            f"无法作为图片读取：{exc}；请重新导出或删掉它。已跳过")]
    caption, has_file, problem = _read_caption(path, caption_extension, class_tokens)
    item = ImageItem(path=path, caption=caption, has_caption_file=has_file, width=width, height=height)
    return item, [problem] if problem else []


def _visible_children(folder: Path, problems: list[Problem]) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        problems.append(_error(folder, f"folder cannot be read ({exc.strerror or exc}); make it readable or move "
                                       "it out of the dataset.",
                               f"文件夹无法读取（{exc.strerror or exc}）；请让它可读，或把它移出数据集。"))
        return []


def _scan_subset(folder: Path, repeats: int, class_tokens: str, caption_extension: str, is_reg: bool,
                 problems: list[Problem]) -> Subset:
    images: list[Path] = []
    for child in _visible_children(folder, problems):
        if child.is_dir():
            problems.append(_warn(child, "sub-folders inside a dataset folder are not scanned; move its images "
                                         "up or into its own folder named like 10_name next to this one.",
                                  "数据集文件夹里的子文件夹不会被扫描；请把里面的图片移到上一层，或放进与它并列、"
                                  "名为 10_名称 这样的文件夹。"))
        elif is_image_file(child):
            images.append(child)
        elif not _is_sidecar(child, caption_extension):
            problems.append(_warn(child, f"not an image (supported: {', '.join(IMAGE_EXTENSIONS)}). Skipped.",
                                  f"不是图片（支持：{', '.join(IMAGE_EXTENSIONS)}）。已跳过。"))
    # Decoding releases the GIL, so threads make large folders scan several times faster.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 4)) as pool:
        results = list(pool.map(lambda p: _read_item(p, caption_extension, class_tokens), images))
    items = [item for item, _ in results if item is not None]
    problems.extend(p for _, found in results for p in found)
    if not items:
        problems.append(_warn(folder, "no usable images in this folder.", "这个文件夹里没有可用的图片。"))
    return Subset(path=folder, repeats=repeats, class_tokens=class_tokens, images=items, is_reg=is_reg)


def _scan_root(root: Path, caption_extension: str, is_reg: bool, problems: list[Problem]) -> list[Subset]:
    subsets = []
    children = _visible_children(root, problems)
    loose = [child for child in children if child.is_file() and is_image_file(child)]
    if loose:
        problems.append(_loose_images(root, loose, is_reg))
    for child in children:
        if child.is_file():
            continue
        parsed = parse_folder_name(child.name)
        if parsed is None:
            problems.append(_warn(child, f"{SKIPPED}; rename it like {renamed(child.name)} (10 = repeats, at "
                                         "least 1). Skipped.",
                                  f"文件夹名里没有重复次数；请改名为 {renamed(child.name)} 这样（10 = 重复次数，"
                                  "至少为 1）。已跳过。"))
        elif parsed[0] > MAX_REPEATS:  # refused before its images are read or its entries planned
            problems.append(_error(child, f"{parsed[0]} repeats is more than {MAX_REPEATS}; rename it like "
                                          f"{renamed(child.name)} (10 = repeats).",
                                   f"重复次数 {parsed[0]} 超过了 {MAX_REPEATS}；请改名为 {renamed(child.name)} 这样"
                                   "（10 = 重复次数）。"))
        else:
            subsets.append(_scan_subset(child, *parsed, caption_extension, is_reg, problems))
    return subsets




def _loose_images(root: Path, images: list[Path], is_reg: bool) -> Problem:
    """One warning for the images directly in a dataset root (they are not trained), naming a few. A root named
    like a repeat folder (10_mychar) is one: the user picked the folder itself instead of its parent."""
    key, count = "reg_data_dir" if is_reg else "train_data_dir", len(images)
    names = ", ".join(image.name for image in images[:3]) + (", ..." if count > 3 else "")
    if parse_folder_name(root.name) is not None:
        return _warn(root, f"{root.name} {REPEAT_ROOT} ({count} images directly in it are not trained): "
                           f"choose its parent folder {root.parent} as {key}, which holds the folders named like "
                           "10_name.",
                     f"{root.name} 本身就是一个带重复次数的文件夹（直接放在里面的 {count} 张图片不会被训练）："
                     f"请把 {key} 改为它的上一级文件夹 {root.parent}，也就是放着 10_名称 这类文件夹的那一层。")
    return _warn(root, f"{count} image(s) directly in {root} are ignored ({names}); put them in a sub-folder named "
                       "like 10_name (10 = repeats).",
                 f"直接放在 {root} 里的 {count} 张图片会被忽略（{names}）；请放进名为 10_名称 这样的子文件夹"
                 "（10 = 重复次数）。")


def renamed(name: str) -> str:
    """The folder name with 10 repeats: `zkz cat` -> `10_zkz cat`, `0_zkz` and `100000000_x` -> `10_zkz`."""
    match = _FOLDER_NAME.match(name)
    return f"10_{match.group(2) or 'name'}" if match else f"10_{name}"


def _no_images(root: Path, problems: list[Problem]) -> Problem:
    """The error when no training image was found, naming the folders skipped for their names; a root that is a
    repeat folder itself gets its own warning's words (choose the parent), as the one problem shown."""
    repeat_root = next((p for p in problems if p.path == root and REPEAT_ROOT in p.reason), None)
    if repeat_root is not None:
        problems.remove(repeat_root)
        return _error(root, repeat_root.reason, repeat_root.zh)
    skipped = [p.path.name for p in problems if p.reason.startswith(SKIPPED) and p.path.parent == root]
    names = ", ".join(f"'{name}' (rename it like '{renamed(name)}')" for name in skipped[:5])
    names_zh = "、".join(f"'{name}'（改名为 '{renamed(name)}'）" for name in skipped[:5])
    unreadable = [p for p in problems if p.reason.startswith(UNREADABLE)]
    return _error(root, "no training images found; put images in a sub-folder named like 10_name (10 = repeats)"
                  + (f". Skipped, their names have no repeat count of 1 or more: {names}" if skipped else "")
                  + (f". {len(unreadable)} image(s) skipped, e.g. {unreadable[0]}" if unreadable else "") + ".",
                  "没有找到训练图片；请把图片放进名为 10_名称 这样的子文件夹（10 = 重复次数）"
                  + (f"。以下文件夹名里没有 1 及以上的重复次数，已跳过：{names_zh}" if skipped else "")
                  + (f"。有 {len(unreadable)} 张图片被跳过，例如 {unreadable[0]}" if unreadable else "") + "。")


def _entry_problems(root: Path, subsets: list[Subset]) -> list[Problem]:
    entries = sum(len(s.images) * s.repeats for s in subsets)
    if entries <= MAX_ENTRIES:
        return []
    return [_error(root, f"images x repeats come to {entries} entries an epoch, more than {MAX_ENTRIES}; lower the "
                         "repeats in the folder names (the N of N_name).",
                   f"图片数 × 重复次数 每轮共 {entries} 条，超过了 {MAX_ENTRIES}；请调低文件夹名里的重复次数"
                   "（N_名称 里的 N）。")]


def _check_root(root: Path, problems: list[Problem]) -> bool:
    if root.is_dir():
        return True
    reason, zh = ("is a file, not a folder", "是文件，不是文件夹") if root.exists() else \
        ("folder does not exist", "文件夹不存在")
    problems.append(_error(root, f"{reason}; check the path.", f"{zh}；请检查路径。"))
    return False


def scan_dataset(train_data_dir: Path, reg_data_dir: Path | None, caption_extension: str) -> DatasetScan:
    """Scan training (and regularization) folders; never raises for user-fixable dataset problems."""
    train_data_dir = Path(train_data_dir)
    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    scan = DatasetScan()
    if _check_root(train_data_dir, scan.problems):
        scan.subsets += _scan_root(train_data_dir, ext, False, scan.problems)
        scan.problems += _entry_problems(train_data_dir, scan.subsets)
        if not any(s.images for s in scan.train_subsets) and not scan.errors:
            scan.problems.append(_no_images(train_data_dir, scan.problems))
    if reg_data_dir is not None and _check_root(Path(reg_data_dir), scan.problems):
        scan.subsets += _scan_root(Path(reg_data_dir), ext, True, scan.problems)
        scan.problems += _entry_problems(Path(reg_data_dir), scan.reg_subsets)
        if not any(s.images for s in scan.reg_subsets):
            scan.problems.append(_warn(Path(reg_data_dir), "no regularization images found; training runs without "
                                                           "them. Put them in a sub-folder named like 1_person.",
                                       "没有找到正则化图片；训练将不使用正则图。"
                                       "请把它们放进名为 1_person 这样的子文件夹。"))
    return scan
