"""Image checks before training: what makes a LoRA worse or a run fail, each naming the file and what to do.

Unreadable or truncated files, images far below the training resolution (the model learns their blur), extreme
aspect ratios (beyond every bucket: heavily cropped), exact duplicates (same bytes) and near duplicates (a 64-bit
difference hash, dHash: a resized or recompressed copy differs in a few bits), images without captions, two
images sharing one caption file, and captions without images. Torch-free (PIL and numpy), so the GUI calls it
directly. `small_image_problems` is the cheap part, from sizes the dataset scan has read already: `python -m
trainer check` and the Paths tab show it. `resize_copy` writes a smaller copy of a dataset, never the original.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from trainer.common.errors import UserError
from trainer.dataset.buckets import make_buckets
from trainer.dataset.caption_edit import captions_without_images, dataset_images, read_caption
from trainer.dataset.scan import DatasetScan
from trainer.dataset.scan import Problem as ScanProblem

if TYPE_CHECKING:
    from trainer.config import TrainConfig

MAX_UPSCALE = 2.0  # an image trained more than this many times enlarged (per side) is reported as too small
OVERSIZED = 4.0  # an image with this many times the training area or more is worth resizing (decoding time)
NEAR_BITS = 4  # dHash bits two images may differ in and still be near duplicates (of 64)
# ... and how far apart their grey thumbnails may be (mean of 0-255 levels): flat areas (a white background)
# give the same 0 bits in any picture, so the bits alone would pair different drawings on one background.
NEAR_GREY = 8.0
HASH_SIDE = 8


@dataclass(frozen=True)
class Finding:
    """One thing found: kind (unreadable, small, aspect, duplicate, near_duplicate, oversized, no_caption,
    shared_caption, orphan_caption), level (error: training fails or skips it; warning: worse LoRA; info: worth
    knowing), the message with what to do, in English and Chinese. others: the files it pairs with."""

    path: Path
    kind: str
    level: str
    en: str
    zh: str
    others: tuple[Path, ...] = ()

    def text(self, lang: str = "en") -> str:
        return self.zh if lang == "zh" else self.en

    def to_json(self) -> dict:
        return {**asdict(self), "path": str(self.path), "others": [str(p) for p in self.others]}


@dataclass(frozen=True)
class ImageFacts:
    path: Path
    size: tuple[int, int] | None  # after EXIF orientation; None: unreadable
    error: str = ""
    sha256: str = ""
    dhash: int = 0
    thumb: bytes = b""  # grey_thumbnail


@dataclass(frozen=True)
class Limits:
    """What the training will do with the images: resolution and the bucket range (the config's keys)."""

    resolution: tuple[int, int]
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    enable_bucket: bool

    @classmethod
    def from_config(cls, config: TrainConfig) -> Limits:
        return cls(tuple(config.resolution_wh), config.min_bucket_reso, config.max_bucket_reso,
                   config.bucket_reso_steps, config.enable_bucket)

    @property
    def max_aspect(self) -> float:
        """The longest side over the shortest of the most elongated bucket (1 without buckets)."""
        if not self.enable_bucket:
            return max(self.resolution) / min(self.resolution)
        buckets = make_buckets(self.resolution, self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps)
        return max(max(w, h) / min(w, h) for w, h in buckets)


def upscale_factor(size: tuple[int, int], resolution: tuple[int, int]) -> float:
    """How many times each side of an image is enlarged to reach the training resolution's area (what a bucket
    of that area does to it)."""
    return math.sqrt(resolution[0] * resolution[1] / max(1, size[0] * size[1]))


def small_finding(path: Path, size: tuple[int, int], resolution: tuple[int, int]) -> Finding | None:
    factor = upscale_factor(size, resolution)
    if factor <= MAX_UPSCALE:
        return None
    w, h = size
    res = f"{resolution[0]}x{resolution[1]}"
    return Finding(path, "small", "warning",
                   f"is {w}x{h}, {factor:.1f} times smaller per side than the training resolution {res}: enlarged "
                   "to it, the LoRA learns its blur (with bucket_no_upscale it trains that small); use a larger "
                   "version, upscale it (e.g. an ESRGAN upscaler), or remove it",
                   f"只有 {w}x{h}，每边比训练分辨率 {res} 小 {factor:.1f} 倍：放大后 LoRA 会学到模糊（开启 "
                   "bucket_no_upscale 时则以这么小的尺寸训练）；请换用更大的原图、用放大模型（如 ESRGAN）放大，"
                   "或删除它")


def small_image_problems(scan: DatasetScan, resolution: tuple[int, int]) -> list[ScanProblem]:
    """The images of a scan that training enlarges more than MAX_UPSCALE times, as scan warnings (the sizes are
    the scan's: no file is read again)."""
    found = [(item.path, small_finding(item.path, (item.width, item.height), resolution))
             for subset in scan.subsets for item in subset.images]
    return [ScanProblem(path, finding.en, "warning", zh=finding.zh) for path, finding in found if finding]


def image_facts(path: Path) -> ImageFacts:
    """Size (after EXIF orientation), content hash, grey thumbnail and dHash; a full decode, which finds
    truncated files."""
    try:
        data = path.read_bytes()
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            thumb = grey_thumbnail(img)
    # PIL signals bad files with OSError, SyntaxError, ValueError or DecompressionBombError depending on format.
    except Exception as exc:  # noqa: BLE001
        return ImageFacts(path, None, str(exc) or type(exc).__name__)
    return ImageFacts(path, img.size, sha256=hashlib.sha256(data).hexdigest(), dhash=difference_hash(thumb),
                      thumb=thumb.tobytes())


def grey_thumbnail(img: Image.Image) -> np.ndarray:
    """9 x 8 grey levels (uint8): what dHash and the near-duplicate brightness check compare."""
    return np.asarray(img.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.LANCZOS), np.uint8)


def difference_hash(thumb: np.ndarray) -> int:
    """dHash: one bit per pair of horizontal neighbours of the thumbnail (is the left one brighter)."""
    bits = (thumb[:, :-1] > thumb[:, 1:]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def remembered_facts(path: Path) -> ImageFacts:
    """image_facts, read once per version of the file (its time and size): the GUI checks the folder again after
    every caption edit, and decoding 200 large images takes seconds."""
    try:
        stat = path.stat()
    except OSError:
        return image_facts(path)
    return _facts_of_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=20_000)
def _facts_of_version(path: Path, mtime_ns: int, size: int) -> ImageFacts:
    return image_facts(path)


def check_images(root: Path, limits: Limits, caption_extension: str, near_bits: int = NEAR_BITS) -> list[Finding]:
    """Every finding under root (a train_data_dir or one image folder), errors first."""
    images = dataset_images(root)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        facts = list(pool.map(remembered_facts, images))
    readable = [f for f in facts if f.size]
    findings = [_unreadable(f) for f in facts if not f.size]
    findings += [found for f in readable for found in _size_findings(f, limits) if found]
    findings += duplicate_findings(readable, near_bits)
    findings += _caption_findings(root, [f.path for f in readable], caption_extension)
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (order[f.level], f.kind, str(f.path)))


def _unreadable(facts: ImageFacts) -> Finding:
    return Finding(facts.path, "unreadable", "error",
                   f"cannot be read as an image ({facts.error}); training skips it: re-export it (open and save it "
                   "again in an image editor) or remove it",
                   f"无法作为图片读取（{facts.error}）；训练会跳过它：请用图片编辑器重新打开并另存，或删除它")


def _size_findings(facts: ImageFacts, limits: Limits) -> list[Finding | None]:
    w, h = facts.size
    aspect = max(w, h) / min(w, h)
    found = [small_finding(facts.path, facts.size, limits.resolution)]
    if aspect > limits.max_aspect * 1.25:
        found.append(Finding(facts.path, "aspect", "warning",
                             f"is {w}x{h} (aspect {aspect:.1f}:1) while the most elongated bucket is "
                             f"{limits.max_aspect:.1f}:1; training crops much of it away: crop it into parts "
                             "by hand, or raise max_bucket_reso",
                             f"尺寸 {w}x{h}（宽高比 {aspect:.1f}:1），而最扁的分桶只有 {limits.max_aspect:.1f}:1；"
                             "训练会裁掉大部分画面：请手动裁成几张，或调大 max_bucket_reso"))
    if w * h >= OVERSIZED * limits.resolution[0] * limits.resolution[1]:
        found.append(Finding(facts.path, "oversized", "info",
                             f"is {w}x{h}, far above the training resolution: each epoch decodes and shrinks it "
                             "again unless latents are cached; `dataset-check --resize-to` writes a smaller copy",
                             f"尺寸 {w}x{h}，远大于训练分辨率：不缓存 latent 时每轮都要重新解码缩小；"
                             "可用 `dataset-check --resize-to` 生成缩小的副本"))
    return found


def duplicate_findings(facts: list[ImageFacts], near_bits: int = NEAR_BITS) -> list[Finding]:
    """Exact duplicates (same SHA-256) and near duplicates (dHash within near_bits and grey thumbnails within
    NEAR_GREY); each group reported once, at its second and later files."""
    findings, first_of = [], {}
    by_hash: dict[str, list[ImageFacts]] = defaultdict(list)
    for item in facts:
        by_hash[item.sha256].append(item)
    for group in by_hash.values():
        for item in group[1:]:
            findings.append(Finding(item.path, "duplicate", "warning",
                                    f"is the same file as {group[0].path.name}: it trains twice as often; remove one",
                                    f"与 {group[0].path.name} 完全相同：会被训练两倍次数；请删除其一",
                                    (group[0].path,)))
        first_of[group[0].path] = group[0]
    unique = list(first_of.values())
    if len(unique) < 2:
        return findings
    hashes = np.array([item.dhash for item in unique], dtype=np.uint64)
    thumbs = np.stack([np.frombuffer(item.thumb, np.uint8) for item in unique]).astype(np.int16)
    reported: set[Path] = set()
    for i, item in enumerate(unique[:-1]):
        close = np.bitwise_count(hashes[i + 1:] ^ hashes[i]) <= near_bits
        close &= np.abs(thumbs[i + 1:] - thumbs[i]).mean(axis=1) <= NEAR_GREY
        for j in np.nonzero(close)[0]:
            other = unique[i + 1 + int(j)]
            if other.path in reported:
                continue
            reported.add(other.path)
            findings.append(Finding(other.path, "near_duplicate", "warning",
                                    f"looks almost the same as {item.path.name} (a resized or re-saved copy?): "
                                    "near copies make the LoRA overfit that picture; keep the better one",
                                    f"与 {item.path.name} 几乎相同（缩放或重新保存的副本？）：近似重复会让 LoRA "
                                    "过拟合这张图；保留更好的一张", (item.path,)))
    return findings


def _caption_findings(root: Path, images: Iterable[Path], caption_extension: str) -> list[Finding]:
    findings, owner = [], {}
    for image in images:
        caption = read_caption(image, caption_extension)
        if caption.path in owner:  # a.png and a.jpg: one a.txt for both
            findings.append(Finding(image, "shared_caption", "warning",
                                    f"shares {caption.path.name} with {owner[caption.path].name}: both train with "
                                    "that caption, and captioning one overwrites the other's; rename one image",
                                    f"与 {owner[caption.path].name} 共用 {caption.path.name}：两张图用同一个标注，"
                                    "自动标注其中一张会改掉另一张的；请给其中一张改名", (owner[caption.path],)))
        owner.setdefault(caption.path, image)
        if caption.error:
            findings.append(Finding(caption.path, "no_caption", "warning",
                                    f"caption cannot be read ({caption.error}); save it as UTF-8",
                                    f"标注文件无法读取（{caption.error}）；请另存为 UTF-8"))
        elif not caption.text:
            findings.append(Finding(image, "no_caption", "warning",
                                    f"has no caption ({caption.path.name} is missing or empty): it trains with its "
                                    "folder's class tokens only; write one, or run `python -m trainer caption`",
                                    f"没有标注（{caption.path.name} 不存在或为空）：训练时只用文件夹名里的类别词；"
                                    "请补写，或运行 `python -m trainer caption` 自动标注"))
    for orphan in captions_without_images(root, caption_extension):
        findings.append(Finding(orphan, "orphan_caption", "info",
                                "caption without an image of the same name: nothing trains with it; rename it to "
                                "its image's name or delete it",
                                "标注文件没有同名图片：不会被使用；请改成对应图片的文件名或删除"))
    return findings


@dataclass(frozen=True)
class Resized:
    source: Path
    target: Path
    old_size: tuple[int, int]
    new_size: tuple[int, int]  # == old_size: copied unchanged


def resize_copy(root: Path, target: Path, max_side: int, caption_extension: str) -> list[Resized]:
    """Copy the dataset under root to target, images with a side above max_side shrunk to it (Lanczos, same
    format, EXIF orientation applied); captions copied as they are. target must be new or empty, outside root."""
    root, target = Path(root).resolve(), Path(target).resolve()
    if target == root or target.is_relative_to(root):
        raise UserError(f"'{target}' is inside the dataset '{root}'", "choose an output folder outside the dataset",
                        zh=f"'{target}' 在数据集 '{root}' 里面", hint_zh="请选择数据集之外的输出文件夹")
    if target.exists() and any(target.iterdir()):
        raise UserError(f"'{target}' is not empty", "choose a new or empty folder: the copy never overwrites",
                        zh=f"'{target}' 不是空文件夹", hint_zh="请选择新的或空的文件夹：复制不会覆盖已有文件")
    done = []
    for image in dataset_images(root):
        out = target / image.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        done.append(_copy_image(image, out, max_side))
        caption = read_caption(image, caption_extension)
        if caption.path.is_file():
            shutil.copy2(caption.path, out.with_name(caption.path.name))
    return done


def _copy_image(source: Path, out: Path, max_side: int) -> Resized:
    with Image.open(source) as img:
        kind = img.format
        upright = ImageOps.exif_transpose(img)
    size = upright.size
    if max(size) <= max_side:
        shutil.copy2(source, out)
        return Resized(source, out, size, size)
    scale = max_side / max(size)
    new_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    small = upright.resize(new_size, Image.Resampling.LANCZOS)
    if kind == "JPEG" and small.mode not in ("RGB", "L"):
        small = small.convert("RGB")
    small.save(out, format=kind, **({"quality": 95} if kind in ("JPEG", "WEBP") else {}))
    return Resized(source, out, size, new_size)
