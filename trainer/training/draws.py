"""The random numbers of one micro-batch's training step: drawn for the whole global batch, cut to this process's rows.

With several processes each optimizer step trains global batches of train_batch_size × processes entries, and
process r holds rows r*b..(r+1)*b-1 of each (trainer/dataset/stream.py). Every process draws each random number of
the step (noise, timesteps, noise offset, multires noise, ip noise, Flux's sigmas) for all rows of the global
batch, from generators seeded by the run's seed and the micro-batch's place in the run, and keeps its own rows. So
a sample gets the same numbers whichever process trains it and however many there are, and 2 processes × batch b
train what 1 process × batch 2b trains (docs/training.md, "Several GPUs").

Seeded by place, not taken from torch's global generator: nothing else that draws from it (LoRA dropout, previews
on the main process only, a different network initialisation) shifts a sample's noise, and a resumed run draws
what the uninterrupted one drew without a saved generator state.
"""

from __future__ import annotations

import hashlib

import torch

from trainer.dataset.stream import MicroBatch


class Draws:
    """Generators of one micro-batch (one per device, made on first use); rows [start, stop) of `size`."""

    def __init__(self, key: str, start: int, stop: int, size: int):
        self.key, self.start, self.stop, self.size = key, start, stop, size
        self._generators: dict[str, torch.Generator] = {}

    @classmethod
    def whole(cls, size: int, key: str = "0") -> Draws:
        """All rows of a batch of `size`: one process's view when it is the only one."""
        return cls(key, 0, size, size)

    def generator(self, device: torch.device | str) -> torch.Generator:
        """This micro-batch's generator on `device`: the same numbers on every process (seeded by the device's type,
        not its index: process r runs on GPU r)."""
        device = torch.device(device)
        name = str(device)
        if name not in self._generators:
            digest = hashlib.sha256(f"{self.key}:{device.type}".encode()).digest()
            self._generators[name] = torch.Generator(device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        return self._generators[name]

    def rows(self, values: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor drawn for the global batch."""
        return values[self.start:self.stop]

    def randn(self, shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Standard normal numbers of `shape` per row, in `like`'s dtype and device."""
        return self.rows(torch.randn((self.size, *shape), generator=self.generator(like.device), dtype=like.dtype,
                                     device=like.device))

    def randint(self, low: int, high: int, device: torch.device) -> torch.Tensor:
        """One integer in [low, high) per row."""
        return self.rows(torch.randint(low, high, (self.size,), generator=self.generator(device), device=device))

    def rand_per_batch(self, device: torch.device) -> torch.Tensor:
        """One uniform number in [0, 1) for the whole global batch, shape (1,), on the device (no host sync)."""
        return torch.rand(1, generator=self.generator(device), device=device)

    def uniform(self) -> float:
        """One uniform number in [0, 1) for the whole global batch, drawn on the CPU (a Python number, no sync)."""
        return float(torch.rand((), generator=self.generator("cpu")))


def draws_for(batch: MicroBatch, seed: int) -> Draws:
    """The draws of a scheduled micro-batch: keyed by the seed, its optimizer step and its place in the step,
    which every process shares (one process with the doubled batch included)."""
    return Draws(f"{seed}:{batch.step}:{batch.position}", batch.first_row, batch.first_row + len(batch.indices),
                 batch.global_size)
