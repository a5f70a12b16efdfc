"""Image checks on generated images: unreadable and truncated files, small images (how far below), extreme aspect
ratios, exact and near duplicates, missing captions and orphan captions; the resized copy; and the small images
in the dataset check that `check` and the Paths tab show."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainer.checks.preflight import scan_and_plan
from trainer.common.errors import UserError
from trainer.config import TrainConfig
from trainer.dataset.image_check import Limits, check_images, duplicate_findings, image_facts, resize_copy


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "数据 集" / "10_cat"
    folder.mkdir(parents=True)
    photo = _noise(64, 64, 0).resize((600, 600), Image.Resampling.BICUBIC)  # smooth, like a photo
    photo.save(folder / "photo.png")
    (folder / "copy.png").write_bytes((folder / "photo.png").read_bytes())
    photo.resize((450, 450), Image.Resampling.LANCZOS).save(folder / "smaller.jpg", quality=90)
    _noise(40, 30, 1).save(folder / "tiny.png")
    _noise(2000, 100, 2).save(folder / "banner.png")
    _noise(600, 600, 3).save(folder / "cut.jpg")
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[:len(data) // 2])  # truncated: only a full decode notices
    for name in ("photo", "copy", "smaller", "tiny", "banner"):
        (folder / f"{name}.txt").write_text("cat", encoding="utf-8")
    (folder / "gone.txt").write_text("cat", encoding="utf-8")
    return tmp_path / "数据 集"


def test_findings_name_each_file_and_what_to_do(dataset):
    findings = check_images(dataset, Limits.from_config(TrainConfig(resolution=512)), ".txt")
    found = {(f.path.name, f.kind) for f in findings if f.kind != "duplicate"}
    assert found == {("cut.jpg", "unreadable"), ("tiny.png", "small"), ("banner.png", "aspect"),
                     ("smaller.jpg", "near_duplicate"), ("gone.txt", "orphan_caption")}
    [same] = [f for f in findings if f.kind == "duplicate"]
    assert {same.path.name, same.others[0].name} == {"photo.png", "copy.png"}
    assert findings[0].kind == "unreadable" and findings[0].level == "error"
    small = next(f for f in findings if f.kind == "small")
    assert "is 40x30, 14.8 times smaller per side than the training resolution 512x512" in small.en
    assert "小 14.8 倍" in small.zh
    aspect = next(f for f in findings if f.kind == "aspect")
    assert "aspect 20.0:1" in aspect.en and "4.0:1" in aspect.en  # 1024x256 is the most elongated bucket
    near = next(f for f in findings if f.kind == "near_duplicate")
    assert near.others[0].name in ("photo.png", "copy.png")


def test_flat_pictures_are_not_near_duplicates(tmp_path):
    """Flat areas give dHash 0 bits in any picture: plain colours, and different drawings on white, differ."""
    Image.new("RGB", (64, 64), (220, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 64), (30, 200, 30)).save(tmp_path / "green.png")
    for name, box in (("left.png", (4, 20, 24, 44)), ("right.png", (40, 20, 60, 44))):
        drawing = Image.new("RGB", (64, 64), (255, 255, 255))
        drawing.paste((0, 0, 0), box)
        drawing.save(tmp_path / name)
    drawing.resize((48, 48)).save(tmp_path / "right small.png")  # a true near copy
    facts = [image_facts(tmp_path / name) for name in ("red.png", "green.png", "left.png", "right.png",
                                                       "right small.png")]
    assert [(f.path.name, f.others[0].name) for f in duplicate_findings(facts)] == [("right small.png",
                                                                                     "right.png")]


def test_missing_and_shared_captions_are_reported(dataset):
    (dataset / "10_cat" / "tiny.txt").unlink()
    _noise(300, 300, 4).save(dataset / "10_cat" / "photo.webp")  # photo.txt belongs to photo.png too
    findings = check_images(dataset, Limits.from_config(TrainConfig()), ".txt")
    assert [f.path.name for f in findings if f.kind == "no_caption"] == ["tiny.png"]
    assert [(f.path.name, f.others[0].name) for f in findings if f.kind == "shared_caption"] == [
        ("photo.webp", "photo.png")]


def test_resize_copy_never_touches_the_original(dataset, tmp_path):
    (dataset / "10_cat" / "cut.jpg").unlink()
    done = resize_copy(dataset, tmp_path / "small copy", 300, ".txt")
    sizes = {item.target.name: item.new_size for item in done}
    assert sizes["photo.png"] == (300, 300) and sizes["banner.png"] == (300, 15) and sizes["tiny.png"] == (40, 30)
    with Image.open(tmp_path / "small copy" / "10_cat" / "smaller.jpg") as img:
        assert img.size == (300, 300) and img.format == "JPEG"
    assert (tmp_path / "small copy" / "10_cat" / "photo.txt").read_text(encoding="utf-8") == "cat"
    with Image.open(dataset / "10_cat" / "photo.png") as img:
        assert img.size == (600, 600)
    with pytest.raises(UserError, match="not empty"):
        resize_copy(dataset, tmp_path / "small copy", 300, ".txt")
    with pytest.raises(UserError, match="inside the dataset"):
        resize_copy(dataset, dataset / "out", 300, ".txt")


def test_dataset_check_of_a_config_reports_small_images(dataset):
    (dataset / "10_cat" / "cut.jpg").unlink()
    scan, _, plan = scan_and_plan(TrainConfig(train_data_dir=str(dataset), resolution=768))
    small = [p for p in scan.problems if "times smaller per side" in p.reason]
    assert plan is not None and [(p.path.name, p.level) for p in small] == [("tiny.png", "warning")]
    assert "is 40x30, 22.2 times smaller per side than the training resolution 768x768" in small[0].reason
    assert "小 22.2 倍" in small[0].zh  # the Paths tab's zh page
