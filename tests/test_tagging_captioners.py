"""Florence-2 and BLIP captioning for real on tiny random models saved with save_pretrained
(tests/tagging_helpers.py): the kind read from the folder, batches, max length, prefix and suffix."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.tagging_helpers import WORDS, tiny_blip, tiny_florence2
from trainer.common.errors import UserError
from trainer.dataset.caption_edit import caption_files
from trainer.tagging.options import BLIP, FLORENCE2, CaptionOptions, TagOptions, kind_of_folder
from trainer.tagging.run import load_captioner, run_captioner


def _dataset(root):
    (root / "5_cat").mkdir(parents=True)
    for name, colour in {"a.png": (250, 0, 0), "b.jpg": (0, 250, 0), "c.webp": (0, 0, 250)}.items():
        Image.new("RGB", (40, 30), colour).save(root / "5_cat" / name)
    return caption_files(root, ".caption")


def test_blip_captions_a_folder_with_prefix_suffix_and_max_length(tmp_path):
    model = tiny_blip(tmp_path / "blip 模型", word=7)
    assert kind_of_folder(model) == BLIP
    files = _dataset(tmp_path / "数据")
    options = CaptionOptions(max_length=3, num_beams=2, prefix="zkz,", suffix="photo")
    captioner = load_captioner(BLIP, model, "cpu", TagOptions(), options)
    report = run_captioner(captioner, tmp_path / "数据", files, mode="skip", batch_size=2, tags=False, label="blip")
    assert len(report.written) == 3
    word = WORDS[7]
    for item in files:
        assert item.path.read_text(encoding="utf-8") == f"zkz, {word} {word} {word}, photo"


def test_florence2_detailed_caption(tmp_path):
    model = tiny_florence2(tmp_path / "florence")
    assert kind_of_folder(model) == FLORENCE2
    files = _dataset(tmp_path / "data")
    captioner = load_captioner(FLORENCE2, model, "cpu", TagOptions(), CaptionOptions(max_length=5, prefix="zkz"))
    report = run_captioner(captioner, tmp_path / "data", files, mode="overwrite", batch_size=3, tags=False,
                           label="florence")
    assert len(report.written) == 3
    for item in files:
        trigger, words = item.path.read_text(encoding="utf-8").split(", ")
        assert trigger == "zkz" and 1 <= len(words.split()) <= 4 and set(words.split()) <= set(WORDS)


def test_remote_code_models_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "florence2", "auto_map": {"AutoConfig": "x"}}))
    with pytest.raises(UserError, match="runs its own Python code") as refused:
        load_captioner(FLORENCE2, tmp_path, "cpu", TagOptions(), CaptionOptions())
    assert "florence-community/Florence-2-large" in refused.value.hint
