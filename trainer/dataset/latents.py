"""VAE latents of the training images, cached in memory and optionally on disk next to each image.

A disk entry is reused only when the image bytes, its bucket and the VAE are the ones it was made from, when it
holds every variant the run needs (with flip_aug the latents of the mirrored image are cached too, encoded from
mirrored pixels: a mirrored latent is not the latent of the mirrored image), and when its tensors are what this
VAE makes for the bucket: float32, the latent shape, finite. Any other entry is rebuilt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import safetensors
import torch
from diffusers import AutoencoderKL

from trainer.dataset.images import load_image_rgb, resize_and_crop, to_tensor
from trainer.dataset.plan import Entry
from trainer.dataset.share import ALONE, Share
from trainer.training.export import atomic_save_safetensors

CACHE_SUFFIX = ".latents.safetensors"
CACHE_VERSION = "2"  # 2: optional latent_flipped tensor
# Variant (flipped or not) -> tensor name in a disk cache file.
TENSOR_NAMES = {False: "latent", True: "latent_flipped"}
Key = tuple[Path, tuple[int, int]]


def vae_fingerprint(vae: AutoencoderKL) -> str:
    """Identifies the VAE's weights without hashing all of them: config plus a few whole tensors."""
    digest = hashlib.sha256(repr(sorted(vae.config.items())).encode())
    params = list(vae.state_dict().values())
    for tensor in params[:2] + params[-2:]:
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_pixels(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (the distribution's mean: deterministic). Flux's VAE also shifts them."""
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    shift = vae.config.get("shift_factor") or 0.0
    return ((latents - shift) * vae.config.scaling_factor).contiguous()  # mode() is a strided view


class LatentCache:
    def __init__(self, vae: AutoencoderKL, to_disk: bool, with_flipped: bool = False):
        self.vae = vae
        self.to_disk = to_disk
        self.variants = (False, True) if with_flipped else (False,)
        self.vae_id = vae_fingerprint(vae)
        self.channels = vae.config.latent_channels
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent, each way
        self._memory: dict[tuple[Path, tuple[int, int], bool], torch.Tensor] = {}

    def fill(self, entries: Iterable[Entry], batch_size: int = 4, progress=None, share: Share = ALONE) -> list[int]:
        """Encode every (image, bucket) not cached yet, this process its share of them, and receive the others'
        shares; returns how many each process encoded."""
        todo: dict[Key, Entry] = {}
        for entry in entries:
            key = (entry.item.path, entry.bucket)
            if key in todo or all((*key, flipped) in self._memory for flipped in self.variants):
                continue
            loaded = self._load_from_disk(*key) if self.to_disk else None
            if loaded is not None:
                self._remember(key, loaded)
            else:
                todo[key] = entry
        keys = share.mine(list(todo))
        encoded: dict[Key, dict[bool, torch.Tensor]] = {}
        for start in range(0, len(keys), batch_size):
            encoded |= self._encode_group(keys[start:start + batch_size])
            if progress is not None:
                progress(min(start + batch_size, len(keys)), len(keys))
        for key, latents in share.merge(encoded).items():
            self._remember(key, latents)
        return share.gather(len(keys))

    def get(self, entry: Entry, flipped: bool = False) -> torch.Tensor:
        return self._memory[(entry.item.path, entry.bucket, flipped)]

    def _remember(self, key: Key, latents: dict[bool, torch.Tensor]) -> None:
        for flipped, latent in latents.items():
            self._memory[(*key, flipped)] = latent

    def _encode_group(self, keys: list[Key]) -> dict[Key, dict[bool, torch.Tensor]]:
        """Encode the keys (writing their disk entries when asked); returns their latents."""
        done: dict[Key, dict[bool, torch.Tensor]] = {}
        by_bucket: dict[tuple[int, int], list[Path]] = {}
        for path, bucket in keys:
            by_bucket.setdefault(bucket, []).append(path)
        for bucket, paths in by_bucket.items():
            pixels = torch.stack([to_tensor(resize_and_crop(load_image_rgb(p), bucket)[0]) for p in paths])
            encoded = {flipped: encode_pixels(self.vae, torch.flip(pixels, [3]) if flipped else pixels)
                       for flipped in self.variants}
            for i, path in enumerate(paths):
                latents = {flipped: batch[i].float().cpu().clone() for flipped, batch in encoded.items()}
                done[(path, bucket)] = latents
                if self.to_disk:
                    self._save_to_disk(path, bucket, latents)
        return done

    def _stamp(self, image: Path, bucket: tuple[int, int]) -> dict[str, str]:
        return {"version": CACHE_VERSION, "vae": self.vae_id, "bucket": f"{bucket[0]}x{bucket[1]}",
                "image_sha256": hashlib.sha256(image.read_bytes()).hexdigest()}

    def _load_from_disk(self, image: Path, bucket: tuple[int, int]) -> dict[bool, torch.Tensor] | None:
        path = cache_path(image)
        if not path.is_file():
            return None
        try:
            with safetensors.safe_open(str(path), "pt") as handle:
                names = set(handle.keys())
                if handle.metadata() != self._stamp(image, bucket) or any(
                        TENSOR_NAMES[flipped] not in names for flipped in self.variants):
                    return None  # made from other inputs, or without the mirrored latents this run needs
                latents = {flipped: handle.get_tensor(TENSOR_NAMES[flipped]) for flipped in self.variants}
        except (OSError, safetensors.SafetensorError):
            return None  # a damaged cache file is simply rebuilt
        return latents if all(self._sound(latent, bucket) for latent in latents.values()) else None

    def _sound(self, latent: torch.Tensor, bucket: tuple[int, int]) -> bool:
        """What this VAE makes for the bucket (w, h): float32 (C, h/f, w/f), every value finite."""
        shape = (self.channels, -(-bucket[1] // self.factor), -(-bucket[0] // self.factor))  # each halving rounds up
        return latent.dtype == torch.float32 and tuple(latent.shape) == shape and bool(torch.isfinite(latent).all())

    def _save_to_disk(self, image: Path, bucket: tuple[int, int], latents: dict[bool, torch.Tensor]) -> None:
        tensors = {TENSOR_NAMES[flipped]: latent.contiguous() for flipped, latent in latents.items()}
        atomic_save_safetensors(cache_path(image), tensors, self._stamp(image, bucket))


def cache_path(image: Path) -> Path:
    return image.with_name(image.name + CACHE_SUFFIX)
