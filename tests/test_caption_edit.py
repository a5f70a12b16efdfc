"""Bulk caption edits on a folder with Chinese tags, "，" separators, GBK and UTF-16 files and a path with spaces
and Chinese characters: the preview, apply with backup, undo (twice), the frequency table (the same counts as
ss_tag_frequency), and the `tags` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from trainer.common.errors import UserError
from trainer.dataset.caption_edit import (
    BACKUP_DIR,
    Backup,
    apply_changes,
    caption_files,
    captions_without_images,
    parse_edit,
    plan_edit,
    tag_frequency,
    undo,
    write_caption,
)
from trainer.dataset.scan import scan_dataset
from trainer.training.metadata import tag_frequency as metadata_frequency

CAPTIONS = {
    "a": ("1girl，红发, 猫耳, 1girl", "gbk"),
    "b": ("猫耳, smile, blue sky", "utf-16"),  # Notepad's "Unicode": with a BOM
    "c": ("zkz, 1girl, smile, rare tag", "utf-8-sig"),
}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "我的 数据集"
    folder = root / "10_zkz girl"
    folder.mkdir(parents=True)
    for name, (text, encoding) in CAPTIONS.items():
        Image.new("RGB", (8, 8)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_bytes(text.encode(encoding))
    Image.new("RGB", (8, 8)).save(folder / "d.png")  # no caption: its folder's class tokens count
    (folder / "orphan.txt").write_text("left over", encoding="utf-8")
    return root


def _texts(root) -> dict[str, str | None]:
    return {f.image.stem: f.text for f in caption_files(root, ".txt")}


def test_plan_shows_changes_and_writes_nothing(dataset):
    files = caption_files(dataset, ".txt")
    changes = plan_edit(files, parse_edit("zkz", ["猫耳=cat ears"], ["smile"], dedupe=True))
    assert {c.path.stem: (c.old, c.new) for c in changes} == {
        "a": ("1girl，红发, 猫耳, 1girl", "zkz, 1girl, 红发, cat ears"),
        "b": ("猫耳, smile, blue sky", "zkz, cat ears, blue sky"),
        "c": ("zkz, 1girl, smile, rare tag", "zkz, 1girl, rare tag"),
    }  # d has no caption file: it keeps training with its folder's class tokens
    assert _texts(dataset)["a"] == "1girl，红发, 猫耳, 1girl" and not (dataset / BACKUP_DIR).exists()


def test_apply_undo_restores_bytes_in_order(dataset):
    folder = dataset / "10_zkz girl"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    apply_changes(dataset, plan_edit(caption_files(dataset, ".txt"), parse_edit("zkz")), "trigger")
    assert (folder / "b.txt").read_text(encoding="utf-8") == "zkz, 猫耳, smile, blue sky"  # now UTF-8
    apply_changes(dataset, plan_edit(caption_files(dataset, ".txt"), parse_edit(sort=True)), "sort")
    assert _texts(dataset)["b"] == "blue sky, smile, zkz, 猫耳"
    assert undo(dataset).label == "sort"
    assert _texts(dataset)["b"] == "zkz, 猫耳, smile, blue sky"
    undone = undo(dataset)
    assert undone.label == "trigger" and len(undone.restored) == 2  # c.txt began with zkz already
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # byte for byte: GBK, UTF-16, BOM
    write_caption(folder / "a.txt", "edited by hand", Backup(dataset, "edit a"))  # the Dataset tab's edit
    assert undo(dataset).label == "edit a" and (folder / "a.txt").read_bytes() == before["a.txt"]
    with pytest.raises(UserError, match="nothing to undo") as nothing:
        undo(dataset)
    assert nothing.value.problems[0].zh


def test_min_count_regex_and_selection(dataset):
    files = caption_files(dataset, ".txt")
    changes = plan_edit(files, parse_edit(min_count=2))  # tags in fewer than 2 captions go
    assert {c.path.stem: c.new for c in changes} == {"a": "1girl, 猫耳, 1girl", "b": "猫耳, smile",
                                                     "c": "1girl, smile"}  # d has no caption to edit
    changes = plan_edit(files[:1], parse_edit(replace_pairs=[r"(\d)girl=\1woman"], regex=True))
    assert [c.new for c in changes] == ["1woman，红发, 猫耳, 1woman"]  # text replacement keeps the rest as is
    with pytest.raises(UserError, match="not a regular expression"):
        parse_edit(replace_pairs=["(=x"], regex=True)
    with pytest.raises(UserError, match="not FIND=REPLACEMENT"):
        parse_edit(replace_pairs=["no equals sign"])


def test_frequency_is_what_the_lora_metadata_records(dataset):
    frequency = tag_frequency(caption_files(dataset, ".txt"))
    assert frequency == {"10_zkz girl": {"1girl": 3, "猫耳": 2, "smile": 2, "红发": 1, "blue sky": 1, "zkz": 1,
                                         "rare tag": 1, "zkz girl": 1}}
    scan = scan_dataset(dataset, None, ".txt")
    assert metadata_frequency(scan) == frequency
    assert [p.name for p in captions_without_images(dataset, ".txt")] == ["orphan.txt"]


def test_tags_command_dry_run_apply_undo(dataset):
    def tags(*args):
        result = subprocess.run([sys.executable, "-m", "trainer", "tags", str(dataset), *args, "--json"],
                                capture_output=True, text=True, encoding="utf-8", timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    dry = tags("--remove", "smile, 1girl", "--dry-run")
    assert not dry["applied"] and len(dry["changes"]) == 3 and _texts(dataset)["b"] == "猫耳, smile, blue sky"
    assert tags("--remove", "smile")["applied"]
    assert _texts(dataset)["b"] == "猫耳, blue sky"
    assert tags()["frequency"]["10_zkz girl"].get("smile") is None
    assert tags("--undo")["restored"] and _texts(dataset)["b"] == "猫耳, smile, blue sky"
    config = dataset.parent / "config.yaml"
    config.write_text("caption_extension: .caption\n", encoding="utf-8")  # no .caption files: class tokens
    assert tags("--config", str(config))["frequency"] == {"10_zkz girl": {"zkz girl": 4}}
