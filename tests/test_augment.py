"""Image augmentation (flip_aug, color_aug, random_crop) and the flipped latent cache; each test fails if its
option were ignored."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from accelerate import Accelerator
from conftest import read_events
from PIL import Image, ImageOps

from trainer.checks.preflight import run_preflight
from trainer.common.errors import ConfigError
from trainer.config.io import validate_config
from trainer.dataset.captions import CaptionOptions
from trainer.dataset.images import color_aug, load_image_rgb, resize_and_crop, shift_hue, to_tensor
from trainer.dataset.latents import CACHE_VERSION, LatentCache, cache_path, encode_pixels
from trainer.dataset.plan import Entry
from trainer.dataset.scan import ImageItem
from trainer.dataset.stream import Augment, BatchDataset, MicroBatch, make_loader
from trainer.run.events import RunLog
from trainer.training.loop import Trainer

SAMPLES = 240


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def noise_image(path: Path, size: tuple[int, int], seed: int = 0) -> ImageItem:
    """Random pixels: no symmetry, so a mirrored or shifted image never equals the original by chance."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return ImageItem(path, "tag", True, *size)


def samples(dataset: BatchDataset, workers: int = 0, key: str = "pixels") -> list[torch.Tensor]:
    return [tensor for item in make_loader(dataset, range(len(dataset)), workers, 0) for tensor in item[key]]


def one_image_dataset(item: ImageItem, bucket: tuple[int, int], cache: LatentCache | None = None,
                      seed: int = 0, **augment) -> BatchDataset:
    """SAMPLES entries of the same image (as repeats give), in batches of 8 over two epochs."""
    entries = [Entry(item, bucket, False)] * (SAMPLES // 2)
    batches = [MicroBatch(epoch, 1, True, 1, tuple(range(i, i + 8)))
               for epoch in (1, 2) for i in range(0, len(entries), 8)]
    return BatchDataset(entries, batches, cache, seed=seed, augment=Augment(**augment))


# ---------------------------------------------------------------- flip_aug

def test_flip_aug_mirrors_about_half_the_samples_exactly(tmp_path):
    item = noise_image(tmp_path / "a.png", (32, 32))
    plain = to_tensor(resize_and_crop(load_image_rgb(item.path), (32, 32))[0])
    results = samples(one_image_dataset(item, (32, 32), flip_aug=True))
    mirrored = [torch.equal(r, torch.flip(plain, [2])) for r in results]
    assert all(m or torch.equal(r, plain) for m, r in zip(mirrored, results))
    assert within_binomial(sum(mirrored), SAMPLES, 0.5)
    assert all(torch.equal(r, plain) for r in samples(one_image_dataset(item, (32, 32))))  # off: never


# ---------------------------------------------------------------- color_aug

def hue_of(img: Image.Image) -> float:
    """Mean hue in degrees."""
    return float(np.asarray(img.convert("HSV"))[..., 0].mean()) * 360 / 256


def test_shift_hue_turns_the_hue_and_keeps_size_and_brightness():
    red = Image.new("RGB", (20, 12), (200, 40, 40))
    for degrees in (-16, -8, 8, 16):
        shifted = shift_hue(red, degrees)
        assert shifted.size == red.size and shifted.mode == "RGB"
        assert (hue_of(shifted) - hue_of(red) + 180) % 360 - 180 == pytest.approx(degrees, abs=2.5)  # 8-bit HSV
        assert max(shifted.getpixel((0, 0))) == pytest.approx(200, abs=2)  # HSV value unchanged


def test_color_aug_changes_a_third_of_the_samples_half_by_hue():
    red = Image.new("RGB", (8, 8), (200, 40, 40))  # green == blue: gamma keeps its hue at 0
    hue_changes = gamma_changes = 0
    for seed in range(3000):
        out = color_aug(red, random.Random(seed))
        assert out.size == red.size
        if out.tobytes() != red.tobytes():
            hue_changes += hue_of(out) != hue_of(red)
            gamma_changes += hue_of(out) == hue_of(red)
    assert within_binomial(hue_changes + gamma_changes, 3000, 0.33 * (1 - 0.02), sigmas=5)
    assert within_binomial(hue_changes, 3000, 0.33 * 0.5 * 0.96, sigmas=5)  # |shift| < 0.7° rounds to none


def test_dataset_color_aug_recolours_some_samples(tmp_path):
    item = noise_image(tmp_path / "a.png", (32, 32))
    plain = to_tensor(resize_and_crop(load_image_rgb(item.path), (32, 32))[0])
    results = samples(one_image_dataset(item, (32, 32), color_aug=True))
    changed = sum(not torch.equal(r, plain) for r in results)
    assert all(r.shape == plain.shape for r in results) and within_binomial(changed, SAMPLES, 0.33, sigmas=5)


# ---------------------------------------------------------------- random_crop

def test_random_crop_offsets_vary_and_stay_in_range(tmp_path):
    item = noise_image(tmp_path / "wide.png", (48, 32))  # 16 spare columns in a 32x32 bucket
    image = load_image_rgb(item.path)
    crops = [to_tensor(image.crop((left, 0, left + 32, 32))) for left in range(17)]
    results = samples(one_image_dataset(item, (32, 32), random_crop=True))
    offsets = [next(left for left, crop in enumerate(crops) if torch.equal(r, crop)) for r in results]
    assert len(set(offsets)) > 12  # StopIteration above would mean a crop outside 0..16
    assert set(offsets) - {8}  # not only the centre
    assert all(torch.equal(r, crops[8]) for r in samples(one_image_dataset(item, (32, 32))))  # off: centre


def test_augmentation_is_deterministic_per_seed_and_the_same_in_workers(tmp_path):
    item = noise_image(tmp_path / "wide.png", (48, 32))
    options = dict(flip_aug=True, color_aug=True, random_crop=True)
    in_process = samples(one_image_dataset(item, (32, 32), seed=5, **options))
    in_workers = samples(one_image_dataset(item, (32, 32), seed=5, **options), workers=2)
    other_seed = samples(one_image_dataset(item, (32, 32), seed=6, **options))
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))
    assert not all(torch.equal(a, b) for a, b in zip(in_process, other_seed))
    # the two epochs of the same entries draw differently
    half = SAMPLES // 2
    assert not all(torch.equal(a, b) for a, b in zip(in_process[:half], in_process[half:]))


def test_pixel_augments_with_cache_latents_are_config_errors():
    for key in ("color_aug", "random_crop"):
        with pytest.raises(ConfigError, match=f"{key}: cannot be used with cache_latents.*cache_latents: false"):
            validate_config({key: True})
        assert getattr(validate_config({key: True, "cache_latents": False}), key)
    assert validate_config({"flip_aug": True, "cache_latents": True}).flip_aug


# ---------------------------------------------------------------- latent cache with flips

@pytest.fixture(scope="module")
def vae(tiny_sd1):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(tiny_sd1, subfolder="vae")


def test_cached_flipped_latent_is_the_encoding_of_the_mirrored_image(tmp_path, vae):
    entry = Entry(noise_image(tmp_path / "a.png", (64, 48)), (64, 48), False)
    cache = LatentCache(vae, to_disk=False, with_flipped=True)
    assert cache.fill([entry]) == [1]
    image = resize_and_crop(load_image_rgb(entry.item.path), entry.bucket)[0]
    expected = encode_pixels(vae, to_tensor(ImageOps.mirror(image))[None])[0]
    assert torch.allclose(cache.get(entry, flipped=True), expected, atol=1e-5)
    assert torch.allclose(cache.get(entry), encode_pixels(vae, to_tensor(image)[None])[0], atol=1e-5)
    # the latent of the mirrored image is not the mirrored latent
    assert (cache.get(entry, flipped=True) - torch.flip(cache.get(entry), [2])).abs().max() > 1e-3
    with pytest.raises(KeyError):
        LatentCache(vae, to_disk=False).get(entry, flipped=True)  # not cached without flip_aug


def test_disk_cache_holds_the_flipped_latents_as_part_of_its_key(tmp_path, vae):
    entry = Entry(noise_image(tmp_path / "a.png", (64, 64)), (64, 64), False)
    assert LatentCache(vae, to_disk=True).fill([entry]) == [1]
    assert LatentCache(vae, to_disk=True, with_flipped=True).fill([entry]) == [1]  # file lacks the mirror
    with safetensors.safe_open(str(cache_path(entry.item.path)), "pt") as handle:
        assert set(handle.keys()) == {"latent", "latent_flipped"} and handle.metadata()["version"] == CACHE_VERSION
    reused = LatentCache(vae, to_disk=True, with_flipped=True)
    assert reused.fill([entry]) == [0] and LatentCache(vae, to_disk=True).fill([entry]) == [0]
    fresh = LatentCache(vae, to_disk=False, with_flipped=True)
    fresh.fill([entry])
    assert all(torch.allclose(reused.get(entry, f), fresh.get(entry, f), atol=1e-5) for f in (False, True))


def test_dataset_serves_plain_or_mirrored_latents_from_the_cache(tmp_path, vae):
    item = noise_image(tmp_path / "a.png", (32, 32))
    cache = LatentCache(vae, to_disk=False, with_flipped=True)
    cache.fill([Entry(item, (32, 32), False)])
    plain, mirrored = cache.get(Entry(item, (32, 32), False)), cache.get(Entry(item, (32, 32), False), True)
    results = samples(one_image_dataset(item, (32, 32), cache, flip_aug=True), key="latents")
    flipped = [torch.equal(r, mirrored) for r in results]
    assert all(f or torch.equal(r, plain) for f, r in zip(flipped, results))
    assert within_binomial(sum(flipped), SAMPLES, 0.5)
    with pytest.raises(ValueError, match="random_crop"):
        one_image_dataset(item, (32, 32), cache, random_crop=True)


# ---------------------------------------------------------------- a real run

def setup_trainer(tmp_path: Path, config) -> Trainer:
    trainer = Trainer(config, run_preflight(config), RunLog(tmp_path / "run"), Accelerator())
    trainer.setup()
    return trainer


def test_short_training_with_caption_options_and_flip_aug(tmp_path, make_config):
    config = validate_config(make_config(shuffle_caption=True, keep_tokens=1, caption_dropout_rate=0.3,
                                         flip_aug=True, max_train_steps=3))
    trainer = setup_trainer(tmp_path, config)
    dataset = trainer.dataset
    assert (dataset.captions, dataset.augment) == (CaptionOptions.from_config(config), Augment(flip_aug=True))
    flipped = []
    for index, batch in enumerate(trainer.batches):  # what the loop is about to consume
        item = dataset[index]
        for i, caption, latent in zip(batch.indices, item["captions"], item["latents"]):
            raw = dataset.entries[i].item.caption.split(", ")
            assert caption == "" or (caption.split(", ")[0] == raw[0] and sorted(caption.split(", ")) == sorted(raw))
            flipped.append(torch.equal(latent, trainer.cache.get(dataset.entries[i], flipped=True)))
    assert any(flipped) and not all(flipped)
    assert trainer.run() == "completed"
    trainer.log.close()
    assert read_events(tmp_path / "run")[-1]["status"] == "completed"
    assert (tmp_path / "out" / "test.safetensors").is_file()


def test_pixel_augments_reach_the_loader_without_a_cache(tmp_path, make_config):
    config = validate_config(make_config(cache_latents=False, color_aug=True, random_crop=True))
    trainer = setup_trainer(tmp_path, config)
    trainer.log.close()
    dataset = trainer.dataset
    assert dataset.cache is None and dataset.augment == Augment(color_aug=True, random_crop=True)
