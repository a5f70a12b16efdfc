"""The Dataset tab's handlers without a browser (tests/test_ui_dataset.py drives the page): the tagger's fields
become options the real `caption` parser takes, a GBK caption is edited, saved as UTF-8 and undone byte for byte, a
bulk edit touches only the chosen images, a tag clicked in the frequency table joins the tags to remove, the
image checks read an image again only when it changed, and a reloaded page finds a running tagging and stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from trainer.__main__ import _parser
from trainer.dataset.image_check import remembered_facts
from trainer.tagging.run import MODES
from ui import caption_job, dataset_tab
from ui.caption_job import CAPTION_DEFAULTS, STOP_FILE, TAG_DEFAULTS, caption_args
from ui.fields import form_values


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """train_data_dir with one 10_角色 folder: a.png captioned in GBK, b.png in UTF-8, c.png without a caption."""
    folder = tmp_path / "我的 数据" / "10_角色"
    folder.mkdir(parents=True)
    for name, colour in (("a", "red"), ("b", "blue"), ("c", "green")):
        Image.new("RGB", (64, 64), colour).save(folder / f"{name}.png")
    (folder / "a.txt").write_bytes("红发, 1girl".encode("gbk"))
    (folder / "b.txt").write_text("blue sky, 1girl", encoding="utf-8")
    return folder.parent


def _values(root: Path) -> list:
    return form_values({"train_data_dir": str(root), "caption_extension": ".txt"})


def test_tagger_fields_are_options_the_caption_command_takes(tmp_path):
    image = tmp_path / "数据 集" / "10_x" / "a.png"
    settings = {"model": " SmilingWolf/wd-vit-tagger-v3 ", "kind": "auto", "mode": "overwrite", "device": "cpu",
                "batch_size": 2.0, "general_threshold": 0.3, "character_threshold": 0.9, "first": "-zkz, 1girl",
                "exclude": "solo", "rating": True, "keep_underscores": True, "max_tags": 20.0,
                "task": CAPTION_DEFAULTS.task, "max_length": 77.0, "num_beams": 1.0, "prefix": "", "suffix": ""}
    assert set(settings) == set(dataset_tab.SETTING_KEYS)
    args = _parser().parse_args(["caption", *caption_args(image.parent.parent, ".caption", [image], settings)])
    assert (args.dir, args.only, args.caption_extension) == (image.parent.parent, [image], ".caption")
    assert (args.model, args.kind, args.mode, args.device, args.batch_size) == (
        "SmilingWolf/wd-vit-tagger-v3", None, "overwrite", "cpu", 2)
    assert (args.general_threshold, args.character_threshold, args.first, args.exclude) == (
        0.3, 0.9, "-zkz, 1girl", "solo")
    assert args.rating and args.keep_underscores and (args.max_tags, args.max_length, args.num_beams) == (20, 77, 1)
    assert args.json and args.prefix == ""
    for mode in MODES:  # every mode of trainer/tagging/run.py, as the CLI's switches say it
        defaults = dict(settings, mode=mode, rating=TAG_DEFAULTS.rating, first="", kind="wd14")
        args = _parser().parse_args(["caption", *caption_args(image.parent, ".txt", [], defaults)])
        assert (args.mode, args.kind, args.only, args.first) == (mode, "wd14", None, "")


def test_a_gbk_caption_is_edited_as_utf8_and_undone_byte_for_byte(dataset):
    values = _values(dataset)
    shown = [str(path) for path in sorted((dataset / "10_角色").glob("*.png"))]
    editing, name, caption = dataset_tab.pick(SimpleNamespace(index=0), "zh", shown, *values)
    assert (editing, caption) == (shown[0], "红发, 1girl") and "a.txt" in name
    status, version = dataset_tab.save_caption("zh", editing, "红发, 1girl, 微笑 ", *values)
    assert "a.txt" in status and version
    caption_file = dataset / "10_角色" / "a.txt"
    assert caption_file.read_bytes() == "红发, 1girl, 微笑".encode()
    status, _, _ = dataset_tab.undo_last("zh", *values)
    assert "恢复 1 个标注" in status
    assert caption_file.read_bytes() == "红发, 1girl".encode("gbk")


def test_a_bulk_edit_changes_only_the_chosen_images(dataset):
    values, folder = _values(dataset), dataset / "10_角色"
    edit = {"prefix": "zkz", "replace": "1girl=1woman", "regex": False, "remove": "", "min_count": 0,
            "dedupe": False, "sort": False}
    fields = [edit[key] for key in dataset_tab.EDIT_KEYS]
    status, table = dataset_tab.preview_edit("en", [str(folder / "b.png")], *fields, *values)
    assert "1 captions would change" in status
    assert table.values.tolist() == [["10_角色/b.txt", "blue sky, 1girl", "zkz, blue sky, 1woman"]]
    assert (folder / "b.txt").read_text(encoding="utf-8") == "blue sky, 1girl"
    status, table, version = dataset_tab.apply_edit("en", [], *fields, *values)
    assert "2 captions changed" in status and version  # c.png has no caption: it keeps its folder's class tokens
    assert (folder / "a.txt").read_text(encoding="utf-8") == "zkz, 红发, 1woman"
    assert not (folder / "c.txt").exists()


def test_image_facts_are_read_again_only_when_the_file_changed(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 32), "red").save(path)
    first = remembered_facts(path)
    assert remembered_facts(path) is first
    Image.new("RGB", (80, 32), "red").save(path)
    assert remembered_facts(path).size == (80, 32)


def test_a_tag_clicked_in_the_frequency_table_joins_the_tags_to_remove():
    def click(row: int, col: int, value: object) -> SimpleNamespace:
        return SimpleNamespace(index=[row, col], value=value)

    assert dataset_tab.add_removed_tag(click(0, 0, "长发"), "solo") == "solo, 长发"
    assert dataset_tab.add_removed_tag(click(0, 0, "solo"), "solo") == "solo"
    assert dataset_tab.add_removed_tag(click(0, 1, 5), "solo").get("__type__") == "update"  # a count: skipped


def test_a_reloaded_page_finds_the_tagging_and_stop_ends_it(tmp_path, monkeypatch):
    """Stop: the --stop-file the `caption` child checks between batches, and on POSIX SIGTERM, which also ends a
    child still loading its model (a stand-in process here: the child's own handling is tests/test_tagging.py's)."""
    monkeypatch.setenv("DANLU_HOME", str(tmp_path))
    folder = tmp_path / caption_job.JOBS_DIR / "20260101-000000"
    folder.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (folder / "process.json").write_text(json.dumps({"pid": process.pid}), encoding="utf-8")
    try:
        job, seen, timer = dataset_tab.find_tagging("")  # a new page: started by an earlier one (no Popen here)
        assert job == str(folder) and seen is None and timer.active
        assert caption_job.stop_job(folder)
        assert (folder / STOP_FILE).exists()
        if os.name == "posix":
            assert process.wait(30) == -signal.SIGTERM
            caption_job._started[str(folder)] = process  # psutil would still see the unreaped child
            assert not caption_job.stop_job(folder)  # ended: nothing to stop
            assert caption_job.running_job() is None
    finally:
        process.kill()
        caption_job._started.pop(str(folder), None)
