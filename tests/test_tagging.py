"""WD14 tagging for real on a tiny ONNX model (tests/tagging_helpers.py), captioning a folder (modes, backup and
undo, a clean stop), and the download path against a fake Hub: a cut download resumed, the offline message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.tagging_helpers import SIDE, FakeHub, tiny_wd14
from trainer.common.errors import UserError
from trainer.dataset.caption_edit import caption_files, undo
from trainer.tagging.options import TagOptions
from trainer.tagging.run import StopRequest, run_captioner, split_work
from trainer.tagging.source import model_folder
from trainer.tagging.wd14 import WdTagger, tagger_input

RED, BLUE = (255, 0, 0), (0, 0, 255)
REPO = "danlu-test/wd-tiny-tagger"


@pytest.fixture(scope="module")
def wd_model(tmp_path_factory):
    return tiny_wd14(tmp_path_factory.mktemp("wd") / "tiny tagger 模型")


def _tags(model, options: TagOptions, colour=RED) -> list[str]:
    [caption] = WdTagger(model, "cpu", options).caption([Image.new("RGB", (40, 40), colour)])
    return caption.split(", ")


def test_wd14_thresholds_exclusions_trigger_and_underscores(wd_model):
    # Characters first, then general tags by confidence; underscores become spaces but the kaomoji keeps its own.
    assert _tags(wd_model, TagOptions()) == ["hatsune miku", "red hair", "long hair", "^_^"]
    assert _tags(wd_model, TagOptions(), BLUE) == ["blue sky", "long hair", "^_^"]
    assert _tags(wd_model, TagOptions(general_threshold=0.2)) == ["hatsune miku", "red hair", "long hair", "^_^",
                                                                  "smile"]
    assert _tags(wd_model, TagOptions(general_threshold=0.48, character_threshold=0.99)) == ["red hair",
                                                                                            "long hair"]
    assert _tags(wd_model, TagOptions(underscores_to_spaces=False))[:2] == ["hatsune_miku", "red_hair"]
    # Excluded tags match in either spelling; the trigger word comes first even when not predicted; max_tags
    # counts predicted tags; the rating (argmax of the category-9 rows) follows the trigger.
    assert _tags(wd_model, TagOptions(exclude=("long_hair", "Hatsune Miku"), first=("zkz",))) == [
        "zkz", "red hair", "^_^"]
    assert _tags(wd_model, TagOptions(max_tags=2, rating=True, first=("zkz",))) == [
        "zkz", "sensitive", "hatsune miku", "red hair"]
    assert _tags(wd_model, TagOptions(rating=True), BLUE)[0] == "general"


def test_wd14_input_is_bgr_on_a_white_square():
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # transparent: white, like the padding
    array = tagger_input(image, SIDE)
    assert array.shape == (SIDE, SIDE, 3) and array.dtype == np.float32
    assert array[SIDE // 2, SIDE // 2].tolist() == [0, 0, 255]  # red in BGR order
    assert array[0, SIDE // 2].tolist() == [255, 255, 255]  # padded above and below with white


def _folder(root, colours: dict[str, tuple]) -> None:
    (root / "10_miku").mkdir(parents=True)
    for name, colour in colours.items():
        Image.new("RGB", (24, 24), colour).save(root / "10_miku" / name)


def test_caption_folder_modes_backup_undo_and_stop(wd_model, tmp_path):
    root = tmp_path / "数据 set"
    _folder(root, {"a.png": RED, "b.png": BLUE, "c.png": BLUE})
    existing = root / "10_miku" / "b.txt"
    existing.write_text("blue sky, 手写", encoding="utf-16")  # a user's caption in Notepad's "Unicode"
    tagger = WdTagger(wd_model, "cpu", TagOptions(first=("zkz",)))
    files = caption_files(root, ".txt")
    todo, skipped = split_work(files, "skip")
    assert [f.image.name for f in todo] == ["a.png", "c.png"] and [f.image.name for f in skipped] == ["b.png"]
    events = []
    report = run_captioner(tagger, root, todo, mode="skip", batch_size=1, tags=True, label="caption",
                           progress=events.append, should_stop=lambda: True)  # asked to stop after one batch
    assert report.stopped and [p.name for p in report.written] == ["a.txt"]
    assert not (root / "10_miku" / "c.txt").exists()
    assert events == [{"event": "progress", "done": 1, "total": 2, "file": str(root / "10_miku" / "a.png"),
                       "caption": "zkz, hatsune miku, red hair, long hair, ^_^"}]
    # append keeps the user's caption and adds only new tags; the file becomes UTF-8
    report = run_captioner(tagger, root, todo[1:] + [f for f in files if f.image.name == "b.png"], mode="append",
                           batch_size=4, tags=True, label="caption")
    assert existing.read_text(encoding="utf-8") == "blue sky, 手写, zkz, long hair, ^_^"
    undone = undo(root)  # the last run: b.txt back as it was (UTF-16), c.txt (created) removed
    assert undone.label == "caption" and existing.read_text(encoding="utf-16") == "blue sky, 手写"
    assert not (root / "10_miku" / "c.txt").exists() and (root / "10_miku" / "a.txt").exists()
    undo(root)
    assert not (root / "10_miku" / "a.txt").exists()


def test_stop_request_notes_sigterm_and_a_second_ends():
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL in a plain process (another test may have set its own)
    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
        assert signal.getsignal(signal.SIGTERM) is before  # a second SIGTERM does what it did before: ends it
    assert signal.getsignal(signal.SIGTERM) is not stop._on_signal


def test_stop_file_stops(tmp_path):
    stop = StopRequest(tmp_path / "STOP")
    assert not stop()
    (tmp_path / "STOP").touch()  # what a GUI on Windows writes, where SIGTERM cannot be caught
    assert stop()


def _cli(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, **env}, timeout=300)


def test_caption_cli_downloads_resumes_and_says_when_offline(tmp_path):
    root = tmp_path / "训练 data"
    _folder(root, {"a.png": RED, "b.png": BLUE})
    cache = tmp_path / "hf cache"
    hub = FakeHub({REPO: tiny_wd14(tmp_path / "served", padding_mb=11)}, cut="model.onnx")
    try:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1"}
        offline = _cli(["caption", root, "--model", REPO, "--json"], {**env, "HF_HUB_OFFLINE": "1"})
        assert offline.returncode == 2 and hub.requests == []
        assert f"'{REPO}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in offline.stderr
        result = _cli(["caption", root, "--model", REPO, "--json", "--trigger", "zkz", "--batch-size", "2"], env)
        assert result.returncode == 0, result.stderr
    finally:
        hub.close()
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0] == {"event": "start", "total": 2, "skipped": 0, "model": REPO}
    assert events[1] == {"event": "loaded", "kind": "wd14", "folder": events[1]["folder"]}
    assert [e["done"] for e in events[2:-1]] == [1, 2] and events[-1]["written"] == 2
    assert (root / "10_miku" / "b.txt").read_text(encoding="utf-8") == "zkz, blue sky, long hair, ^_^"
    resumed = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("model.onnx")]
    assert resumed[0][2] is None and resumed[1][2].startswith("bytes=")  # the cut download went on, not anew
    # Cached now: offline works, and the captions already written are kept (skip is the default).
    again = _cli(["caption", root, "--model", REPO, "--json"], {**env, "HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["skipped"] == 2


def test_model_source_messages(tmp_path, wd_model):
    assert model_folder(str(wd_model / "model.onnx"), "wd14") == wd_model  # the .onnx file's folder
    with pytest.raises(UserError, match="does not exist") as missing:
        model_folder(str(tmp_path / "nope" / "x"), None)
    assert missing.value.problems[0].zh.startswith("模型")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no model.onnx or selected_tags.csv"):
        model_folder(str(tmp_path / "empty"), "wd14")
