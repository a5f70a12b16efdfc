"""Epoch entries (repeats, regularization matching), bucketed batches and the step plan users see before training.

Semantics follow sd-scripts' DreamBoothDataset and BucketBatchIndex so step counts match what users know.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainer.dataset.scan import DatasetScan, ImageItem, Subset

Bucket = tuple[int, int]

PLAN_TEXT = {
    "en": {"folder": "{name}: {images} images × {repeats} repeats = {n}",
           "reg_folder": "reg {name}: {images} images × {repeats} repeats, {n} used to match the training entries",
           "buckets": "buckets: ", "batches": "batches per epoch = Σ ceil(bucket entries / batch {batch}) = {n}",
           "shared": "batches per epoch = Σ ceil(bucket entries / (batch {batch} × {p} processes)) = {n}",
           "per_epoch": "steps per epoch = ceil({batches} / accumulation {acc}) = {n}",
           "total": "total steps = {epochs} epochs × {per} = {n}",
           "total_steps": "total steps = max_train_steps {n} ({epochs} epochs of {per})",
           "ignored": " (max_train_steps {steps} ignored: max_train_epochs decides, as in sd-scripts)"},
    "zh": {"folder": "{name}：{images} 张图 × {repeats} 次重复 = {n}",
           "reg_folder": "正则 {name}：{images} 张图 × {repeats} 次重复，取 {n} 个与训练图数量对齐",
           "buckets": "分桶：", "batches": "每轮批次数 = Σ ceil(各桶图数 / 批大小 {batch}) = {n}",
           "shared": "每轮批次数 = Σ ceil(各桶图数 / (批大小 {batch} × {p} 个进程)) = {n}",
           "per_epoch": "每轮步数 = ceil({batches} / 梯度累积 {acc}) = {n}",
           "total": "总步数 = {epochs} 轮 × {per} = {n}",
           "total_steps": "总步数 = max_train_steps {n}（{epochs} 轮，每轮 {per} 步）",
           "ignored": "（max_train_steps {steps} 不生效：与 sd-scripts 一样以 max_train_epochs 为准）"},
}


@dataclass(frozen=True)
class Entry:
    """One sample of an epoch: an image with N repeats gives N entries."""
    item: ImageItem
    bucket: Bucket
    is_reg: bool


@dataclass
class FolderPlan:
    path: Path
    name: str
    images: int
    repeats: int
    is_reg: bool
    used: int | None = None  # reg folders: entries actually used after matching the training count

    @property
    def entries(self) -> int:
        return self.images * self.repeats if self.used is None else self.used


@dataclass
class StepPlan:
    folders: list[FolderPlan]
    buckets: dict[Bucket, int]
    train_images: int
    reg_images: int
    batches_per_epoch: int
    train_batch_size: int
    gradient_accumulation_steps: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    max_train_epochs: int | None = None
    max_train_steps: int | None = None
    # with several GPUs a batch is train_batch_size × num_processes entries, train_batch_size on each process
    num_processes: int = 1

    def describe(self, lang: str = "en") -> str:
        """The plan as `check` prints it (lang "en") or the GUI shows it in Chinese ("zh"): formulas with numbers."""
        words = PLAN_TEXT[lang]
        lines = [_folder_line(f, words) for f in self.folders]
        lines.append(words["buckets"] + ", ".join(f"{_bucket_name(b)}: {n}" for b, n in self.buckets.items()))
        batches = words["shared" if self.num_processes > 1 else "batches"]
        lines.append(batches.format(batch=self.train_batch_size, p=self.num_processes, n=self.batches_per_epoch))
        lines.append(words["per_epoch"].format(batches=self.batches_per_epoch, acc=self.gradient_accumulation_steps,
                                               n=self.steps_per_epoch))
        lines.append(self._total_line(words))
        return "\n".join(lines)

    def _total_line(self, words: dict[str, str]) -> str:
        if self.max_train_epochs is None:
            return words["total_steps"].format(n=self.total_steps, epochs=self.epochs, per=self.steps_per_epoch)
        line = words["total"].format(epochs=self.max_train_epochs, per=self.steps_per_epoch, n=self.total_steps)
        if self.max_train_steps:
            line += words["ignored"].format(steps=self.max_train_steps)
        return line

    def as_event(self) -> dict:
        return {
            "images": self.train_images,
            "reg_images": self.reg_images,
            "repeats": {f.name: f.repeats for f in self.folders},
            "folders": [{"name": f.name, "images": f.images, "repeats": f.repeats, "entries": f.entries,
                         "is_reg": f.is_reg} for f in self.folders],
            "buckets": {_bucket_name(b): n for b, n in self.buckets.items()},
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "epochs": self.epochs,
            "train_batch_size": self.train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "num_processes": self.num_processes,
        }


def _bucket_name(bucket: Bucket) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def _folder_line(folder: FolderPlan, words: dict[str, str]) -> str:
    if folder.is_reg:
        return words["reg_folder"].format(name=folder.name, images=folder.images, repeats=folder.repeats,
                                          n=folder.entries)
    return words["folder"].format(name=folder.name, images=folder.images, repeats=folder.repeats, n=folder.entries)


def _reg_repeats(reg_subsets: list[Subset], num_train: int) -> list[tuple[ImageItem, int]]:
    """sd-scripts' matching: the first pass registers each reg image with its folder's repeats, later passes add
    one repeat per image, stopping as soon as the count reaches the training entries (so it may overshoot by
    less than one folder's repeats)."""
    images = [(item, subset.repeats) for subset in reg_subsets for item in subset.images]
    repeats: list[int] = []
    n, first_loop = 0, True
    while images and n < num_train:
        for i, (_, folder_repeats) in enumerate(images):
            if first_loop:
                repeats.append(folder_repeats)
                n += folder_repeats
            else:
                repeats[i] += 1
                n += 1
            if n >= num_train:
                break
        first_loop = False
    return [(item, r) for (item, _), r in zip(images, repeats)]


def build_entries(scan: DatasetScan, bucket_of: Callable[[ImageItem], Bucket]) -> list[Entry]:
    """Training entries (image × repeats), then regularization entries matched to their count."""
    entries = []
    for subset in scan.train_subsets:
        for item in subset.images:
            entries += [Entry(item, bucket_of(item), False)] * subset.repeats
    for item, repeats in _reg_repeats(scan.reg_subsets, len(entries)):
        entries += [Entry(item, bucket_of(item), True)] * repeats
    return entries


def _bucket_indices(entries: list[Entry]) -> dict[Bucket, list[int]]:
    groups: dict[Bucket, list[int]] = {}
    for index, entry in enumerate(entries):
        groups.setdefault(entry.bucket, []).append(index)
    return dict(sorted(groups.items()))


def _batch_starts(count: int, batch_size: int) -> range:
    """Start index of each batch of one bucket: the single definition of how a bucket is cut into batches."""
    return range(0, count, batch_size)


def count_batches(bucket_sizes: dict[Bucket, int] | list[int], batch_size: int) -> int:
    sizes = bucket_sizes.values() if isinstance(bucket_sizes, dict) else bucket_sizes
    return sum(len(_batch_starts(n, batch_size)) for n in sizes)


def epoch_batches(entries: list[Entry], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Entry indices grouped in batches that never mix buckets; shuffled, deterministic per (seed, epoch)."""
    rng = random.Random(seed * 1000003 + epoch)
    batches = []
    for indices in _bucket_indices(entries).values():
        rng.shuffle(indices)
        batches += [indices[start:start + batch_size] for start in _batch_starts(len(indices), batch_size)]
    rng.shuffle(batches)
    return batches


def _folder_plans(entries: list[Entry], scan: DatasetScan) -> list[FolderPlan]:
    used = Counter((e.is_reg, e.item.path.parent) for e in entries)
    return [FolderPlan(path=s.path, name=s.path.name, images=len(s.images), repeats=s.repeats, is_reg=s.is_reg,
                       used=used[(True, s.path)] if s.is_reg else None) for s in scan.subsets]


def _total_steps(steps_per_epoch: int, max_train_epochs: int | None, max_train_steps: int | None) -> int:
    """sd-scripts' precedence: max_train_epochs, when set, overrides max_train_steps."""
    if max_train_epochs:
        return max_train_epochs * steps_per_epoch
    if max_train_steps:
        return max_train_steps
    raise ValueError("set max_train_epochs or max_train_steps (at least one, above 0)")


def make_plan(entries: list[Entry], scan: DatasetScan, *, train_batch_size: int, gradient_accumulation_steps: int,
              max_train_epochs: int | None, max_train_steps: int | None, num_processes: int = 1) -> StepPlan:
    """How many batches, optimizer steps and epochs a run does (sd-scripts' formulas). Several processes share
    each batch of train_batch_size × num_processes entries (dataset/stream.py schedule)."""
    if train_batch_size < 1 or gradient_accumulation_steps < 1:
        raise ValueError("train_batch_size and gradient_accumulation_steps must be at least 1")
    if not entries:
        raise ValueError("no training images: nothing to plan")
    buckets = dict(sorted(Counter(e.bucket for e in entries).items()))
    batches = count_batches(buckets, train_batch_size * num_processes)
    steps_per_epoch = math.ceil(batches / gradient_accumulation_steps)
    total = _total_steps(steps_per_epoch, max_train_epochs, max_train_steps)
    return StepPlan(
        folders=_folder_plans(entries, scan), buckets=buckets,
        train_images=sum(not e.is_reg for e in entries), reg_images=sum(e.is_reg for e in entries),
        batches_per_epoch=batches, train_batch_size=train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, steps_per_epoch=steps_per_epoch,
        epochs=math.ceil(total / steps_per_epoch), total_steps=total,
        max_train_epochs=max_train_epochs, max_train_steps=max_train_steps,
        num_processes=num_processes,
    )
