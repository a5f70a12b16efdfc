"""The training data stream: every micro-batch of the whole run, in order, loaded by DataLoader workers.

All epochs' batches are laid out up front (indices only), so one DataLoader with persistent workers serves
the whole run and the order depends only on the seed. Several processes share each global batch (`schedule`).
Captions and augmentations are drawn per sample from (seed, epoch, entry index), so they too depend only on the
seed, whichever worker or process loads them; the step's noise is drawn so too (trainer/training/draws.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from trainer.config import TrainConfig
from trainer.dataset.captions import CAPTION_STREAM, CaptionOptions, process_caption, sample_rng
from trainer.dataset.images import center_crop_offset, color_aug, load_image_rgb, resize_and_crop, to_tensor
from trainer.dataset.latents import LatentCache
from trainer.dataset.plan import Entry, epoch_batches

IMAGE_STREAM = "image"


@dataclass(frozen=True)
class MicroBatch:
    epoch: int               # 1-based
    step: int                # 1-based optimizer step this batch belongs to
    last_of_step: bool       # the optimizer steps after this batch
    micro_batches: int       # batches in this optimizer step (the last step of an epoch may have fewer)
    indices: tuple[int, ...]  # the entries this process trains
    position: int = 0        # 0-based place in its step: with the step, the key of its random draws
    first_row: int = 0       # where `indices` start in the global batch (all processes' rows)
    global_rows: int = 0     # rows in the global batch; 0: `indices` are all of it (one process)
    weight: float = 1.0      # this process's loss factor: its rows × processes / global rows (0: a stand-in row)

    @property
    def global_size(self) -> int:
        return self.global_rows or len(self.indices)


def schedule(entries: list[Entry], batch_size: int, accumulation: int, seed: int, total_steps: int,
             process_index: int = 0, num_processes: int = 1) -> list[MicroBatch]:
    """Micro-batches of the run for one process, grouped into optimizer steps as sd-scripts counts them.

    The processes train global batches of batch_size × num_processes entries, cut, shuffled and grouped exactly as
    one process with that batch size does, and process r takes rows r*b..(r+1)*b-1 of each: data parallel, so
    2 processes × batch b train what 1 process × batch 2b trains. A bucket's short last batch may leave a process
    fewer rows; its loss is weighted so the processes' averaged gradients are the global batch's mean. A process
    with no row computes the batch's first row with weight 0 (DDP needs every process's gradients).
    """
    out: list[MicroBatch] = []
    step, epoch = 0, 0
    while step < total_steps:
        epoch += 1
        batches = epoch_batches(entries, batch_size * num_processes, seed, epoch)
        for start in range(0, len(batches), accumulation):
            step += 1
            group = batches[start:start + accumulation]
            for position, rows in enumerate(group):
                out.append(_rows_of(MicroBatch(epoch, step, position == len(group) - 1, len(group), tuple(rows),
                                               position), batch_size, process_index, num_processes))
            if step == total_steps:
                break
        if not batches:
            break
    return out


def _rows_of(batch: MicroBatch, batch_size: int, process_index: int, num_processes: int) -> MicroBatch:
    """One process's part of a global micro-batch."""
    if num_processes == 1:
        return batch
    size, first = len(batch.indices), process_index * batch_size
    mine = batch.indices[first:first + batch_size]
    if not mine:  # a stand-in: the first row again, contributing nothing
        return replace(batch, indices=batch.indices[:1], first_row=0, global_rows=size, weight=0.0)
    return replace(batch, indices=mine, first_row=first, global_rows=size, weight=len(mine) * num_processes / size)


@dataclass(frozen=True)
class Augment:
    """Image augmentation keys of the config; field names are the config keys."""

    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False

    @classmethod
    def from_config(cls, config: TrainConfig) -> Augment:
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


class BatchDataset(Dataset):
    """Item i is micro-batch i: latents from the cache, or pixels loaded here (in a worker)."""

    def __init__(self, entries: list[Entry], batches: list[MicroBatch], cache: LatentCache | None, *,
                 seed: int = 0, captions: CaptionOptions = CaptionOptions(), augment: Augment = Augment()):
        if cache is not None and (augment.color_aug or augment.random_crop):
            raise ValueError("color_aug and random_crop need pixels; cached latents cannot serve them")
        self.entries = entries
        self.batches = batches
        self.cache = cache
        self.seed = seed
        self.captions = captions
        self.augment = augment

    @classmethod
    def from_config(cls, entries: list[Entry], batches: list[MicroBatch], cache: LatentCache | None,
                    config: TrainConfig) -> BatchDataset:
        return cls(entries, batches, cache, seed=config.seed, captions=CaptionOptions.from_config(config),
                   augment=Augment.from_config(config))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        batch = self.batches[index]
        captions, images, sizes = [], [], []
        for i in batch.indices:
            entry = self.entries[i]
            rng = sample_rng(self.seed, batch.epoch, i, CAPTION_STREAM)
            captions.append(process_caption(entry.item.caption, self.captions, rng, batch.epoch))
            image, crop = self._image(entry, sample_rng(self.seed, batch.epoch, i, IMAGE_STREAM))
            images.append(image)
            sizes.append(size_condition(entry, crop))
        item = {"captions": captions, "is_reg": torch.tensor([self.entries[i].is_reg for i in batch.indices]),
                "size_cond": torch.tensor(sizes, dtype=torch.float32)}
        item["latents" if self.cache is not None else "pixels"] = torch.stack(images)
        return item

    def _image(self, entry: Entry, rng: random.Random) -> tuple[torch.Tensor, tuple[int, int]]:
        """Cached latents (plain or of the mirrored image), or pixels: crop, colour, then mirror, as sd-scripts.
        Returns them with the crop's (top, left)."""
        flipped = self.augment.flip_aug and rng.random() < 0.5
        if self.cache is not None:  # cached latents are always centre crops
            return self.cache.get(entry, flipped), center_crop_offset((entry.item.width, entry.item.height), entry.bucket)
        img, crop = resize_and_crop(load_image_rgb(entry.item.path), entry.bucket, self.augment.random_crop, rng)
        if self.augment.color_aug:
            img = color_aug(img, rng)
        pixels = to_tensor(img)
        return (torch.flip(pixels, [2]) if flipped else pixels), crop


def size_condition(entry: Entry, crop: tuple[int, int]) -> list[int]:
    """SDXL's micro-conditioning of one image: original (h, w), crop (top, left), target (h, w)."""
    bucket_w, bucket_h = entry.bucket
    return [entry.item.height, entry.item.width, *crop, bucket_h, bucket_w]


def make_loader(dataset: BatchDataset, indices: Sequence[int], workers: int, seed: int) -> DataLoader:
    """A loader over some of the run's micro-batches, in order.

    Its own seeded generator: creating a loader must not draw from the global RNG, or a resumed run's noise
    would drift from the uninterrupted one.
    """
    # Cached latents are already in memory: worker processes would only copy them.
    workers = 0 if dataset.cache is not None else workers
    return DataLoader(Subset(dataset, list(indices)), batch_size=None, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed))
