"""The training data stream: every micro-batch of the whole run, in order, loaded by DataLoader workers.

All epochs' batches are laid out up front (indices only), so one DataLoader with persistent workers serves
the whole run and the order depends only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from .dataset.images import load_image_rgb, resize_and_crop, to_tensor
from .dataset.plan import Entry, epoch_batches
from .latents import LatentCache


@dataclass(frozen=True)
class MicroBatch:
    epoch: int               # 1-based
    step: int                # 1-based optimizer step this batch belongs to
    last_of_step: bool       # the optimizer steps after this batch
    micro_batches: int       # batches in this optimizer step (the last step of an epoch may have fewer)
    indices: tuple[int, ...]


def schedule(entries: list[Entry], batch_size: int, accumulation: int, seed: int, total_steps: int,
             process_index: int = 0, num_processes: int = 1) -> list[MicroBatch]:
    """Micro-batches of the run for one process, grouped into optimizer steps as sd-scripts counts them."""
    out: list[MicroBatch] = []
    step, epoch = 0, 0
    while step < total_steps:
        epoch += 1
        batches = epoch_batches(entries, batch_size, seed, epoch)
        usable = len(batches) // num_processes * num_processes  # equal work on every process
        mine = batches[process_index:usable:num_processes]
        for start in range(0, len(mine), accumulation):
            step += 1
            group = mine[start:start + accumulation]
            for i, indices in enumerate(group):
                out.append(MicroBatch(epoch, step, i == len(group) - 1, len(group), tuple(indices)))
            if step == total_steps:
                break
        if not mine:
            break
    return out


class BatchDataset(Dataset):
    """Item i is micro-batch i: latents from the cache, or pixels loaded here (in a worker)."""

    def __init__(self, entries: list[Entry], batches: list[MicroBatch], cache: LatentCache | None):
        self.entries = entries
        self.batches = batches
        self.cache = cache

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        batch = self.batches[index]
        chosen = [self.entries[i] for i in batch.indices]
        item = {"captions": [e.item.caption for e in chosen],
                "is_reg": torch.tensor([e.is_reg for e in chosen])}
        if self.cache is not None:
            item["latents"] = torch.stack([self.cache.get(e) for e in chosen])
        else:
            item["pixels"] = torch.stack([to_tensor(resize_and_crop(load_image_rgb(e.item.path), e.bucket)[0])
                                          for e in chosen])
        return item


def make_loader(dataset: BatchDataset, workers: int) -> DataLoader:
    # Cached latents are already in memory: worker processes would only copy them.
    workers = 0 if dataset.cache is not None else workers
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
