"""Text-encoder outputs computed once before training: in memory, optionally on disk next to each image.

Used only with a frozen text encoder and captions that never change (the config validator ensures both), so
every step reads its captions' conditioning (hidden states, and the pooled embedding where the family has one)
from here and the text encoders never run in a training step. A disk entry (<image>.te.safetensors) is reused
only when the caption, the text encoders' weights, the family's text options (clip_skip, max_token_length, ...)
and the precision are the ones it was made with. Sample prompts are cached too (in memory), so previews need
no text encoder either.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import safetensors
import torch
from accelerate import Accelerator

from trainer.config import TrainConfig
from trainer.dataset.captions import CaptionOptions, process_caption
from trainer.dataset.plan import Entry
from trainer.dataset.share import ALONE, Share, shares_text
from trainer.families.base import Conditioning, ModelFamily
from trainer.training.export import atomic_save_safetensors

CACHE_SUFFIX = ".te.safetensors"  # trainer/dataset/scan.py skips files with this suffix
CACHE_VERSION = "2"  # 2: a conditioning dict (hidden, pooled, ...) per caption
# Captions are padded to a fixed length, so a larger encoding batch only costs a little memory.
ENCODE_BATCH = 32


def text_encoder_fingerprint(text_encoders: list[torch.nn.Module]) -> str:
    """Identifies the weights cheaply: every tensor's name, shape and first values (a fine-tune changes them)."""
    digest = hashlib.sha256()
    for text_encoder in text_encoders:
        for name, tensor in text_encoder.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().flatten()[:1024].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def fixed_caption(caption: str, options: CaptionOptions) -> str:
    """The caption every step trains with: with the cache only the deterministic caption options are on."""
    return process_caption(caption, options, random.Random(0), epoch=1)


def cache_path(image: Path) -> Path:
    return image.with_name(image.name + CACHE_SUFFIX)


class TextEncoderCache:
    """caption -> conditioning (kept on the CPU); `get` stacks those of a batch."""

    def __init__(self, encode: Callable[[list[str]], Conditioning], stamp: dict[str, str], to_disk: bool):
        self.encode = encode
        self.stamp = {"version": CACHE_VERSION, **stamp}
        self.to_disk = to_disk
        self._memory: dict[str, Conditioning] = {}

    def fill(self, items: Iterable[tuple[Path, str]], batch_size: int = ENCODE_BATCH,
             share: Share = ALONE) -> list[int]:
        """Cache the caption of every (image, caption), this process its share of the images (writing their disk
        entries), then receive the others'; returns how many captions each process encoded."""
        images = dict(items)  # an image repeated in several entries is one item
        current = {image for image, caption in images.items() if self.to_disk and self._load(image, caption)}
        mine = share.mine([image for image in images if image not in current])
        encoded = self.fill_texts((images[image] for image in mine), batch_size)
        if self.to_disk:
            for image in mine:
                self._save(image, images[image])
        self._memory |= share.merge({images[image]: self._memory[images[image]] for image in mine})
        return share.gather(encoded)

    def fill_texts(self, texts: Iterable[str], batch_size: int = ENCODE_BATCH) -> int:
        """Encode the texts not cached yet (in memory only); returns how many were encoded."""
        todo = list(dict.fromkeys(text for text in texts if text not in self._memory))
        for start in range(0, len(todo), batch_size):
            group = todo[start:start + batch_size]
            batch = self.encode(group)
            for row, text in enumerate(group):
                # a row of a batch is a view: clone it, or every entry would keep the whole batch alive
                self._memory[text] = {name: tensor[row].cpu().clone() for name, tensor in batch.items()}
        return len(todo)

    def get(self, captions: list[str]) -> Conditioning:
        missing = [caption for caption in captions if caption not in self._memory]
        if missing:
            raise KeyError(f"text-encoder cache: no entry for the caption {missing[0]!r}; training changed a caption "
                           "after it was cached")
        rows = [self._memory[caption] for caption in captions]
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}

    def _stamp(self, caption: str) -> dict[str, str]:
        return {**self.stamp, "caption_sha256": hashlib.sha256(caption.encode()).hexdigest()}

    def _load(self, image: Path, caption: str) -> bool:
        """Whether the image's disk entry holds this caption's outputs; reads them into memory when needed."""
        path = cache_path(image)
        if not path.is_file():
            return False
        try:
            with safetensors.safe_open(str(path), "pt") as handle:
                if handle.metadata() != self._stamp(caption):
                    return False
                if caption not in self._memory:
                    self._memory[caption] = {name: handle.get_tensor(name) for name in handle.keys()}
                return True
        except (OSError, safetensors.SafetensorError):
            return False  # a damaged cache file is simply rebuilt

    def _save(self, image: Path, caption: str) -> None:
        atomic_save_safetensors(cache_path(image), dict(self._memory[caption]), self._stamp(caption))


def build_text_encoder_cache(config: TrainConfig, family: ModelFamily, entries: list[Entry], prompts: list[str],
                             accelerator: Accelerator, log: Callable[[str], None],
                             share: Share = ALONE) -> TextEncoderCache | None:
    """The filled cache (captions and sample prompts) when the config asks for one. The caller places the text
    encoders on the accelerator for this, alone, and back on the CPU after (training.loop.Trainer._visiting):
    previews read their prompts from the cache too. Half precision stays: T5-XXL in fp32 would need 19 GB of RAM."""
    if not config.text_encoder_outputs_cached:
        return None

    def encode(captions: list[str]) -> Conditioning:
        with torch.no_grad(), accelerator.autocast():  # as a training step would compute them
            return family.encode_text(captions)

    stamp = {"text_encoder": text_encoder_fingerprint(family.text_encoders), "precision": config.mixed_precision,
             **family.text_cache_stamp()}
    cache = TextEncoderCache(encode, stamp, config.cache_text_encoder_outputs_to_disk)
    options = CaptionOptions.from_config(config)
    started = time.time()
    encoded = cache.fill(((entry.item.path, fixed_caption(entry.item.caption, options)) for entry in entries),
                         share=share)
    cache.fill_texts(prompts)
    log(f"text-encoder outputs cached: {shares_text(encoded)} captions encoded in {time.time() - started:.1f}s")
    return cache
