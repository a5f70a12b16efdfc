"""Dataset scan, image conversion, buckets and the step plan (sd-scripts semantics)."""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.dataset import assign_bucket, build_entries, epoch_batches, make_buckets, make_plan, scan_dataset
from trainer.dataset.images import load_image_rgb, resize_and_crop, to_rgb, to_tensor

LANDSCAPE, PORTRAIT = (48, 32), (32, 48)
BUCKETS_512 = dict(resolution=(512, 512), enable_bucket=True, min_bucket_reso=256, max_bucket_reso=1024,
                   bucket_reso_steps=64, bucket_no_upscale=False)


def make_image(path: Path, size=PORTRAIT, color=(200, 30, 30), mode="RGB", **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save_kw)
    return path


def noise_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def bucket_512(item) -> tuple[int, int]:
    return assign_bucket(item.width, item.height, **BUCKETS_512)


def build_two_folders(root: Path) -> Path:
    """10_a: 2 landscape + 1 portrait; 5_b: 1 landscape + 1 portrait."""
    train = root / "train"
    for name, size in [("a1", LANDSCAPE), ("a2", LANDSCAPE), ("a3", PORTRAIT)]:
        make_image(train / "10_a" / f"{name}.png", size)
    for name, size in [("b1", LANDSCAPE), ("b2", PORTRAIT)]:
        make_image(train / "5_b" / f"{name}.jpg", size)
    return train


# ---------------------------------------------------------------- buckets

def test_make_buckets_grid_and_area():
    buckets = make_buckets((512, 512), 256, 1024, 64)
    assert {(512, 512), (448, 576), (576, 448)} <= set(buckets)
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(w * h <= 512 * 512 for w, h in buckets)
    assert all(256 <= min(w, h) and max(w, h) <= 1024 for w, h in buckets)
    assert buckets == sorted(set(buckets))
    assert buckets[:4] == [(256, 832), (256, 896), (256, 960), (256, 1024)] and len(buckets) == 17  # as sd-scripts
    tall = make_buckets((512, 768), 256, 1024, 64)
    assert (576, 576) in tall and (512, 768) in tall and all(w * h <= 512 * 768 for w, h in tall)


def test_assign_bucket_by_aspect_ratio():
    assert assign_bucket(800, 600, **BUCKETS_512) == (576, 448)
    assert assign_bucket(600, 800, **BUCKETS_512) == (448, 576)
    assert assign_bucket(300, 300, **BUCKETS_512) == (512, 512)
    assert assign_bucket(2000, 500, **BUCKETS_512) == (1024, 256)


def test_bucket_no_upscale_and_disabled():
    no_upscale = {**BUCKETS_512, "bucket_no_upscale": True}
    assert assign_bucket(300, 200, **no_upscale) == (256, 192)  # small: own size rounded down, not upscaled
    assert assign_bucket(20, 30, **no_upscale) == (64, 64)  # never below one step
    w, h = assign_bucket(2000, 1000, **no_upscale)  # large: shrunk to the resolution's area
    assert (w, h) == (640, 320) and w * h <= 512 * 512
    assert assign_bucket(800, 600, **{**BUCKETS_512, "enable_bucket": False, "resolution": (512, 768)}) == (512, 768)


# ---------------------------------------------------------------- step plan

def test_step_plan_matches_formula(tmp_path):
    scan = scan_dataset(build_two_folders(tmp_path), None, ".txt")
    assert not scan.problems
    entries = build_entries(scan, bucket_512)
    # landscape (640x384): 2*10 + 1*5 = 25, portrait (384x640): 1*10 + 1*5 = 15
    assert {b: sum(e.bucket == b for e in entries) for b in {e.bucket for e in entries}} == {
        (640, 384): 25, (384, 640): 15}
    plan = make_plan(entries, scan, train_batch_size=2, gradient_accumulation_steps=2, max_train_epochs=3,
                     max_train_steps=None)
    batches = 13 + 8  # ceil(25/2) + ceil(15/2)
    steps = 11  # ceil(21/2)
    assert (plan.train_images, plan.reg_images) == (40, 0)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps, plan.epochs) == (batches, steps, 33, 3)
    assert [(f.name, f.images, f.repeats, f.entries) for f in plan.folders] == [("10_a", 3, 10, 30), ("5_b", 2, 5, 10)]
    text = plan.describe()
    assert "10_a: 3 images × 10 repeats = 30" in text and "640x384: 25" in text
    assert "= 21" in text and "ceil(21 / accumulation 2) = 11" in text and "3 epochs × 11 = 33" in text
    event = plan.as_event()
    assert event["repeats"] == {"10_a": 10, "5_b": 5} and event["buckets"] == {"384x640": 15, "640x384": 25}
    assert (event["images"], event["total_steps"], event["epochs"]) == (40, 33, 3)


@pytest.mark.parametrize("steps", [20, 100])
def test_max_train_epochs_takes_precedence_over_max_train_steps(tmp_path, steps):
    """sd-scripts: with max_train_epochs set, max_train_steps is ignored; alone, it decides."""
    scan = scan_dataset(build_two_folders(tmp_path), None, ".txt")
    plan = make_plan(build_entries(scan, bucket_512), scan, train_batch_size=2, gradient_accumulation_steps=2,
                     max_train_epochs=3, max_train_steps=steps)
    assert (plan.total_steps, plan.epochs) == (33, 3)
    assert f"max_train_steps {steps} ignored" in plan.describe()
    cap = steps
    only_steps = make_plan(build_entries(scan, bucket_512), scan, train_batch_size=2, gradient_accumulation_steps=2,
                           max_train_epochs=None, max_train_steps=cap)
    assert (only_steps.total_steps, only_steps.epochs) == (cap, -(-cap // 11))
    with pytest.raises(ValueError):
        make_plan(build_entries(scan, bucket_512), scan, train_batch_size=2, gradient_accumulation_steps=2,
                  max_train_epochs=None, max_train_steps=None)


@pytest.mark.parametrize("reg_repeats, per_image, reg_total", [(7, [10, 10, 10, 10], 40), (15, [15, 15, 15], 45)])
def test_reg_images_matched_to_train_count(tmp_path, reg_repeats, per_image, reg_total):
    train = build_two_folders(tmp_path)  # 40 training entries
    reg = tmp_path / "reg"
    for i in range(4):
        make_image(reg / f"{reg_repeats}_person" / f"r{i}.png", LANDSCAPE)
    scan = scan_dataset(train, reg, ".txt")
    entries = build_entries(scan, bucket_512)
    reg_entries = [e for e in entries if e.is_reg]
    counts = [sum(e.item.path.name == f"r{i}.png" for e in reg_entries) for i in range(4)]
    assert counts == per_image + [0] * (4 - len(per_image))  # first pass may stop before the last image
    plan = make_plan(entries, scan, train_batch_size=2, gradient_accumulation_steps=2, max_train_epochs=1,
                     max_train_steps=None)
    assert (plan.train_images, plan.reg_images, plan.folders[-1].entries) == (40, reg_total, reg_total)
    landscape = 25 + reg_total
    assert plan.batches_per_epoch == -(-landscape // 2) + 8
    assert plan.steps_per_epoch == -(-plan.batches_per_epoch // 2)
    assert f"reg {reg_repeats}_person: 4 images × {reg_repeats} repeats, {reg_total} used" in plan.describe()


def test_epoch_batches_single_bucket_deterministic(tmp_path):
    scan = scan_dataset(build_two_folders(tmp_path), None, ".txt")
    entries = build_entries(scan, bucket_512)
    for batch_size in (1, 2, 3, 4, 7):
        plan = make_plan(entries, scan, train_batch_size=batch_size, gradient_accumulation_steps=1,
                         max_train_epochs=1, max_train_steps=None)
        for seed, epoch in [(0, 0), (1, 5), (42, 2)]:
            batches = epoch_batches(entries, batch_size, seed, epoch)
            assert len(batches) == plan.batches_per_epoch
            assert sorted(i for b in batches for i in b) == list(range(len(entries)))
            assert all(len({entries[i].bucket for i in b}) == 1 and len(b) <= batch_size for b in batches)
    assert epoch_batches(entries, 2, 7, 1) == epoch_batches(entries, 2, 7, 1)
    assert epoch_batches(entries, 2, 7, 1) != epoch_batches(entries, 2, 7, 2)
    assert epoch_batches(entries, 2, 7, 1) != epoch_batches(entries, 2, 8, 1)
    # the batch order is shuffled too, so buckets interleave instead of running one after another
    assert len({entries[epoch_batches(entries, 2, seed, 0)[0][0]].bucket for seed in range(10)}) == 2


# ---------------------------------------------------------------- scan problems

def test_every_problem_names_its_path(tmp_path):
    train = tmp_path / "train"
    good = make_image(train / "10_ok" / "good.png")
    make_image(train / "girl" / "x.png")
    make_image(train / "0_zero" / "x.png")
    stray = make_image(train / "stray.png")
    (train / "10_ok" / "notes.pdf").write_bytes(b"%PDF")
    (train / "10_ok" / "good.npz").write_bytes(b"cache")  # sidecar: silently accepted
    (train / "10_ok" / "good.latents.safetensors").write_bytes(b"cache")
    (train / "10_ok" / ".DS_Store").write_bytes(b"hidden")
    (train / "10_ok" / "fake.png").write_text("not an image")
    (train / "10_ok" / "cut.png").write_bytes(noise_bytes("PNG")[:-400])
    (train / "10_ok" / "cut.jpg").write_bytes(noise_bytes("JPEG")[:-400])
    make_image(train / "10_ok" / "latin.png")
    (train / "10_ok" / "latin.txt").write_bytes("café".encode("latin-1"))
    scan = scan_dataset(train, None, ".txt")
    by_path = {p.path: p for p in scan.problems}
    expected = {
        train / "girl": "rename it like 10_girl", train / "0_zero": "rename it like",
        train: f"1 image(s) directly in {train} are ignored ({stray.name}); put them in a sub-folder named like",
        train / "10_ok" / "notes.pdf": "not an image (supported: .jpg",
        train / "10_ok" / "fake.png": "cannot be read as an image", train / "10_ok" / "cut.png": "cannot be read",
        train / "10_ok" / "cut.jpg": "truncated", train / "10_ok" / "latin.txt": "UTF-8",
    }
    assert set(by_path) == set(expected)
    for path, words in expected.items():
        assert words in str(by_path[path]) and str(path) in str(by_path[path])
        assert by_path[path].level == "warning"
    assert not scan.errors
    [subset] = scan.subsets
    assert [i.path for i in subset.images] == [good, train / "10_ok" / "latin.png"]
    assert subset.images[1].caption == "ok" and not subset.images[1].has_caption_file


def test_fatal_problems(tmp_path):
    missing = scan_dataset(tmp_path / "nope", None, ".txt")
    assert [str(e) for e in missing.errors] == [f"{tmp_path / 'nope'}: folder does not exist; check the path."]
    (tmp_path / "empty" / "girl").mkdir(parents=True)
    empty = scan_dataset(tmp_path / "empty", None, ".txt")
    assert any("no training images found" in str(e) and "10_name" in str(e) for e in empty.errors)
    train = build_two_folders(tmp_path)
    no_reg = scan_dataset(train, tmp_path / "reg_missing", ".txt")
    assert [e.path for e in no_reg.errors] == [tmp_path / "reg_missing"]
    (tmp_path / "reg_empty").mkdir()
    empty_reg = scan_dataset(train, tmp_path / "reg_empty", ".txt")
    assert not empty_reg.errors and "no regularization images" in str(empty_reg.warnings[0])


def test_captions_and_class_tokens(tmp_path):
    folder = tmp_path / "train" / "3_sks_girl"
    make_image(folder / "a.png")
    make_image(folder / "b.png")
    (folder / "a.caption").write_text("\ufeffred hair,\n  smiling \n\n", encoding="utf-8")
    scan = scan_dataset(tmp_path / "train", None, "caption")  # extension without the dot
    [subset] = scan.subsets
    assert (subset.repeats, subset.class_tokens) == (3, "sks_girl")
    a, b = subset.images
    assert (a.caption, a.has_caption_file) == ("red hair,, smiling", True)
    assert (b.caption, b.has_caption_file) == ("sks_girl", False)


def test_exif_orientation_swaps_size(tmp_path):
    path = tmp_path / "train" / "1_x" / "rot.jpg"
    path.parent.mkdir(parents=True)
    img = Image.new("RGB", (32, 48), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 16, 16))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(path, exif=exif, quality=95)
    [item] = scan_dataset(tmp_path / "train", None, ".txt").subsets[0].images
    assert (item.width, item.height) == (48, 32)
    loaded = load_image_rgb(path)
    assert loaded.size == (48, 32)
    assert loaded.getpixel((44, 4))[0] > 200 and loaded.getpixel((4, 4))[2] > 200  # red moved to top-right


# ---------------------------------------------------------------- image conversion

def test_alpha_palette_gray_cmyk_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 128))
    rgba.save(tmp_path / "rgba.png")
    loaded = load_image_rgb(tmp_path / "rgba.png")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1))[0] == 255 and 120 < loaded.getpixel((1, 1))[1] < 135
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    loaded = load_image_rgb(tmp_path / "p.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((1, 1)) == (10, 200, 10)
    make_image(tmp_path / "l.png", (4, 4), 100, "L")
    assert load_image_rgb(tmp_path / "l.png").getpixel((0, 0)) == (100, 100, 100)
    make_image(tmp_path / "cmyk.jpg", (8, 8), (0, 255, 255, 0), "CMYK", quality=100)
    r, g, b = load_image_rgb(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


@pytest.mark.parametrize("value, expected", [(32768, 128), (65535, 255), (0, 0)])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path, value, expected):
    make_image(tmp_path / "g16.png", (4, 4), value, "I;16")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert load_image_rgb(tmp_path / "g16.png").getpixel((0, 0)) == (expected,) * 3
    big_endian = Image.frombytes("I;16B", (2, 2), np.full(4, value, dtype=">u2").tobytes())
    assert to_rgb(big_endian).getpixel((0, 0)) == (expected,) * 3
    assert to_rgb(Image.new("I", (2, 2), value)).getpixel((0, 0)) == (expected,) * 3


def test_to_tensor_range():
    img = Image.new("RGB", (3, 2), (0, 0, 0))
    img.putpixel((2, 1), (255, 255, 255))
    tensor = to_tensor(img)
    assert tensor.shape == (3, 2, 3) and tensor.dtype.is_floating_point
    assert tensor[:, 0, 0].tolist() == [-1.0] * 3 and tensor[:, 1, 2].tolist() == [1.0] * 3


# ---------------------------------------------------------------- resize and crop

def test_resize_and_crop_center_and_random():
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    cropped, (top, left) = resize_and_crop(img, (64, 64))  # scaled to 128x64, 64 spare columns
    assert cropped.size == (64, 64) and (top, left) == (0, 32)
    tall, (top, left) = resize_and_crop(Image.new("RGB", (333, 1000)), (256, 384))
    assert tall.size == (256, 384) and left == 0 and top == (769 - 384) // 2
    for bucket in [(64, 64), (96, 32), (32, 96), (128, 64)]:
        assert resize_and_crop(Image.new("RGB", (77, 51)), bucket, random_crop=True)[0].size == bucket
    gradient = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8) * 2, (50, 1)))
    first = resize_and_crop(gradient, (32, 32), random_crop=True, rng=random.Random(3))
    second = resize_and_crop(gradient, (32, 32), random_crop=True, rng=random.Random(3))
    assert first[1] == second[1] and first[0].tobytes() == second[0].tobytes()
    offsets = {resize_and_crop(gradient, (32, 32), random_crop=True, rng=random.Random(s))[1] for s in range(20)}
    assert len(offsets) > 1 and all(t == 0 and 0 <= l <= 32 for t, l in offsets)
