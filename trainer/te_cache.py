"""Text-encoder outputs computed once before training: in memory, optionally on disk next to each image.

Used only with a frozen text encoder and captions that never change (the config validator ensures both), so
every step reads its captions' hidden states from here and the text encoder never runs in a training step.
A disk entry (<image>.te.safetensors) is reused only when the caption, the text encoder's weights,
clip_skip, max_token_length and the precision are the ones it was made with.
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
from transformers import CLIPTextModel

from .captions import CaptionOptions, process_caption
from .config import TrainConfig
from .dataset.plan import Entry
from .export import atomic_save_safetensors
from .families import sd

CACHE_SUFFIX = ".te.safetensors"  # trainer/dataset/scan.py skips files with this suffix
CACHE_VERSION = "1"
# Captions are padded to a fixed length, so a larger encoding batch only costs a little memory.
ENCODE_BATCH = 32


def text_encoder_fingerprint(text_encoder: CLIPTextModel) -> str:
    """Identifies the weights cheaply: every tensor's name, shape and first values (a fine-tune changes them)."""
    digest = hashlib.sha256()
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
    """caption -> hidden states (kept on the CPU); `get` stacks those of a batch."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], stamp: dict[str, str], to_disk: bool):
        self.encode = encode
        self.stamp = {"version": CACHE_VERSION, **stamp}
        self.to_disk = to_disk
        self._memory: dict[str, torch.Tensor] = {}

    def fill(self, items: Iterable[tuple[Path, str]], batch_size: int = ENCODE_BATCH) -> int:
        """Cache the caption of every (image, caption); returns how many captions the text encoder encoded."""
        images = dict(items)  # an image repeated in several entries is one item
        current = {image for image, caption in images.items() if self.to_disk and self._load(image, caption)}
        todo = list(dict.fromkeys(caption for caption in images.values() if caption not in self._memory))
        for start in range(0, len(todo), batch_size):
            group = todo[start:start + batch_size]
            self._memory.update(zip(group, self.encode(group).cpu()))
        if self.to_disk:
            for image in images.keys() - current:
                self._save(image, images[image])
        return len(todo)

    def get(self, captions: list[str]) -> torch.Tensor:
        missing = [caption for caption in captions if caption not in self._memory]
        if missing:
            raise KeyError(f"text-encoder cache: no entry for the caption {missing[0]!r}; training changed a caption "
                           "after it was cached")
        return torch.stack([self._memory[caption] for caption in captions])

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
                    self._memory[caption] = handle.get_tensor("hidden_states")
                return True
        except (OSError, safetensors.SafetensorError):
            return False  # a damaged cache file is simply rebuilt

    def _save(self, image: Path, caption: str) -> None:
        tensors = {"hidden_states": self._memory[caption].clone()}  # a row of a batch: save it on its own
        atomic_save_safetensors(cache_path(image), tensors, self._stamp(caption))


def build_text_encoder_cache(config: TrainConfig, model: sd.SDModel, entries: list[Entry], accelerator: Accelerator,
                             log: Callable[[str], None]) -> TextEncoderCache | None:
    """The filled cache when the config asks for one. The text encoder is used on the accelerator while
    caching, then waits on the CPU in fp32 (half precision is slow or unsupported there) for previews only."""
    if not config.text_encoder_outputs_cached:
        return None
    text_encoder = model.text_encoder.to(accelerator.device)

    def encode(captions: list[str]) -> torch.Tensor:
        ids = sd.tokenize(model.tokenizer, captions, config.max_token_length).to(accelerator.device)
        with torch.no_grad(), accelerator.autocast():  # as a training step would compute them
            return sd.encode_tokens(text_encoder, ids, config.clip_skip)

    stamp = {"text_encoder": text_encoder_fingerprint(text_encoder), "clip_skip": str(config.clip_skip),
             "max_token_length": str(config.max_token_length or sd.WINDOW_TOKENS),
             "precision": config.mixed_precision}
    cache = TextEncoderCache(encode, stamp, config.cache_text_encoder_outputs_to_disk)
    options = CaptionOptions.from_config(config)
    started = time.time()
    with accelerator.main_process_first():  # the main process writes disk entries that the others then read
        encoded = cache.fill((entry.item.path, fixed_caption(entry.item.caption, options)) for entry in entries)
    text_encoder.to("cpu", torch.float32)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log(f"text-encoder outputs cached: {encoded} captions encoded in {time.time() - started:.1f}s")
    return cache
