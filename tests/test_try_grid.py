"""A try grid without a model: axes and cells, a run's defaults, refusals, effect measures, the labelled PNG and
the Try tab's options (torch-free)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from trainer.common.errors import UserError
from trainer.try_lora.cli import check_try_args
from trainer.try_lora.effects import effect_size, seed_spread, summary
from trainer.try_lora.grid import GridSpec, lora_choice, parse_list
from trainer.try_lora.picture import drawable, grid_image, read_settings, save_grid
from ui.try_tab import try_args


def _spec(**overrides) -> GridSpec:
    loras = [lora_choice("/r/a-000002.safetensors"), lora_choice("/r/a-000004.safetensors"),
             lora_choice("/s/b-000004.safetensors")]
    return GridSpec(**{"base": "/m", "loras": loras, "strengths": [0.0, 1.0], "seeds": [1], "prompts": ["cat"],
                       "rows": ["file"], "cols": ["epoch"], **overrides})


def test_file_and_epoch_make_an_xy_plot_with_gaps():
    spec = _spec()
    assert [lora.epoch for lora in spec.loras] == [2, 4, 4] and spec.loras[2].name == "b"
    rows, cols = spec.layout()
    assert rows == ["file", "strength"] and cols == ["epoch"]  # strength has 2 values: nested in the rows
    assert spec.labels(rows) == [["a", "strength 0"], ["a", "strength 1"], ["b", "strength 0"], ["b", "strength 1"]]
    assert spec.labels(cols) == [["epoch 2"], ["epoch 4"]]
    places = {(cell.lora, cell.strength): (cell.row, cell.col) for cell in spec.cells()}
    assert places == {(0, 0.0): (0, 0), (0, 1.0): (1, 0), (1, 0.0): (0, 1), (1, 1.0): (1, 1), (2, 0.0): (2, 1),
                      (2, 1.0): (3, 1)}  # b has no epoch 2: that place stays empty


def test_prompt_options_and_overrides():
    spec = _spec(prompts=["猫 --n blurry --w 640 --h 480 --s 12 --l 5"], steps=6, width=333)
    prompt = spec.prompt(0)
    assert (prompt.prompt, prompt.negative, prompt.width, prompt.height, prompt.steps, prompt.scale) == \
        ("猫", "blurry", 328, 480, 6, 5.0)


@pytest.mark.parametrize("overrides, says", [
    ({"rows": ["strength"], "cols": ["strength"]}, "named twice"), ({"cols": ["colour"]}, "not an axis"),
    ({"sampler": "nope"}, "not a sampler"), ({"loras": []}, "no LoRA file"), ({"seeds": [1, 1]}, "given twice"),
    ({"prompts": ["cat --x 1"]}, "not a prompt option"), ({"steps": 0}, "--steps: 0 is out of range")])
def test_refusals_name_the_option(overrides, says):
    with pytest.raises(UserError) as caught:
        _spec(**overrides).check()
    assert says in caught.value.message and caught.value.problems[0].zh


def test_lists_and_their_refusals():
    assert parse_list("0, 0.4，0.7 1", float, "--strengths") == [0.0, 0.4, 0.7, 1.0]
    for text, kind in (("0,nan", float), ("0,9", float), ("1,-2", int), ("a", int)):
        with pytest.raises(UserError):
            parse_list(text, kind, "--x")


def _fake_run(tmp_path):
    run = tmp_path / "runs" / "20260101-000000"
    run.mkdir(parents=True)
    files = [tmp_path / "demo_lora-000005.safetensors", tmp_path / "demo_lora.safetensors"]
    for path in files:
        path.write_bytes(b"x")
    (run / "config.yaml").write_text("pretrained_model_name_or_path: /models/sd15\nseed: 42\nsample_sampler: ddim\n"
                                     "sample_prompts:\n- 一只猫 --w 64 --h 64\n- '# a comment'\n", encoding="utf-8")
    events = [{"type": "checkpoint", "path": str(files[0]), "epoch": 5, "step": 10},
              {"type": "checkpoint", "path": str(tmp_path / "gone-000007.safetensors"), "epoch": 7, "step": 14},
              {"type": "checkpoint", "path": str(files[1]), "epoch": 10, "step": 20}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return run, files


def test_a_runs_defaults_and_the_try_tabs_options(tmp_path):
    run, files = _fake_run(tmp_path)
    spec = check_try_args(try_args(str(run), "", "", "", "0, 0.5", "3", ["strength"], [], "", None, 6.5, None, None))
    assert (spec.base, spec.sampler, spec.seeds, spec.cfg) == ("/models/sd15", "ddim", [3], 6.5)
    assert spec.prompts == ["一只猫 --w 64 --h 64"]  # the comment line left out
    assert [(lora.path, lora.name, lora.epoch) for lora in spec.loras] == [
        (str(files[0]), "demo_lora", 5), (str(files[1]), "demo_lora", 10)]  # the deleted file left out
    assert spec.cols == ["epoch"]  # one run's files: epochs side by side
    lines = ["-dash first --w 64", "second"]
    spec = check_try_args(try_args(str(run), "/other", str(files[0]), "\n".join(lines), "1", "1", [], ["seed"],
                                   "euler", 10, None, 64, 64))
    assert (spec.base, spec.prompts, spec.steps, spec.width, spec.cols) == ("/other", ["-dash first --w 64", "second"],
                                                                           10, 64, ["seed"])
    with pytest.raises(UserError, match="no LoRA file given|has saved no LoRA"):
        check_try_args(try_args("", "/m", "", "cat", "1", "1", [], [], "", None, None, None, None))


def test_effects_and_summary():
    gen = np.random.default_rng(0)
    base = [gen.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    assert effect_size(base[0], base[0]) == 0 and seed_spread(base[:1]) is None
    assert effect_size(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)) == 1.0
    shifted = [np.clip(b.astype(int) + 40, 0, 255).astype(np.uint8) for b in base]
    results = [{"label": "a", "lora": 0, "strength": s, "seed": seed, "prompt": 0, "image": image,
                "effect": effect_size(image, base[seed]), "health": "ok" if s == 0 else "noise"}
               for s, images in ((0.0, base), (1.0, shifted)) for seed, image in enumerate(images)]
    rows = summary(results, {0: seed_spread(base)})
    assert [row["strength"] for row in rows] == [0.0, 1.0]
    assert rows[0]["effect"] == 0 and rows[1]["effect"] > 0.1 and rows[1]["broken"] == {"noise": 2}
    assert rows[0]["seed_spread"] == rows[0]["base_seed_spread"] > 0


def test_grid_png_labels_and_settings(tmp_path):
    cells = {(0, 0): Image.new("RGB", (64, 64), "red"), (1, 1): Image.new("RGB", (64, 64), "blue")}
    image = grid_image(cells, [["strength 0"], ["strength 1"]], [["P1: 一只猫"], ["seed 2"]])
    assert image.width > 2 * 64 and image.height > 2 * 64  # tiny pictures are scaled up to hold their labels
    settings = {"danlu_try": 1, "prompts": ["一只猫"]}
    save_grid(image, tmp_path / "grid.png", settings)
    assert read_settings(tmp_path / "grid.png") == settings
    assert drawable("P1: 一只猫", cjk=True) == "P1: 一只猫"
    assert drawable("P1: 一只猫", cjk=False) == "P1 [?]"  # without a CJK font: no tofu boxes


def test_the_try_tab_shows_progress_cells_and_a_refusal_in_the_pages_language(tmp_path):
    from ui.try_tab import axis_choices, grid_html, status_markdown, summary_frame

    cell = tmp_path / "r00-c01.png"
    Image.new("RGB", (8, 8), "red").save(cell)
    spec = _spec(strengths=[1.0], seeds=[2], prompts=["一只猫"], rows=["epoch", "strength"], cols=["prompt", "seed"])
    rows, cols = spec.layout()
    events = [{"type": "plan", "total": 2, "rows": spec.labels(rows), "cols": spec.labels(cols), "row_axes": rows,
               "col_axes": cols, "settings": spec.to_json(), "family": "sd1", "device": "cpu"},
              {"type": "cell", "row": 0, "col": 0, "path": str(cell), "effect": 0.25, "health": "noise"}]
    assert "Waiting to start" in status_markdown("en", str(tmp_path), [], alive=True)  # behind another grid
    assert "正在加载底模" in status_markdown("zh", str(tmp_path), [{"type": "started"}], alive=True)
    assert "1 / 2" in status_markdown("en", str(tmp_path), events, alive=True)
    assert "still loaded" not in status_markdown("en", str(tmp_path), events, alive=True)
    kept = [{**events[0], "model_kept": True, "ready_s": 0.4}, *events[1:]]
    assert "底模仍在内存中" in status_markdown("zh", str(tmp_path), kept, alive=True)
    shown = grid_html("en", events)
    assert shown.count("<img") == 1 and "P1: 一只猫" in shown and "effect 0.250 · noise" in shown
    assert "epoch 2" in shown and "strength 1" in shown and "seed 2" in shown
    shown = grid_html("zh", events)  # grid.png stays English; the page's labels follow the page
    texts = [text for part in re.findall(r"<(?:th|small)>(.*?)</(?:th|small)>", shown) for text in part.split("<br>")]
    names = {lora.name for lora in spec.loras}
    assert "第 2 轮" in texts and "效果 0.250 · 噪点" in texts and "提示词 1：一只猫" in texts
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in texts if text and text not in names), texts
    record = {"settings": spec.to_json(), "summary": [
        {"file": "a e2", "lora": 0, "strength": 1.0, "effect": 0.25, "effect_min": 0.2, "effect_max": 0.3,
         "seed_spread": None, "base_seed_spread": None, "broken": {"noise": 1}}]}
    table = summary_frame("zh", record)
    assert all(re.search(r"[\u4e00-\u9fff]", label) for label, _ in axis_choices("zh"))  # the rows/columns choices
    assert table.iloc[0].tolist()[:2] == ["a · 第 2 轮", 1.0] and table.iloc[0].tolist()[-1] == "噪点 1"
    failed = events + [{"type": "error", "message": "x: a LoRA for SDXL", "hint": "h", "zh": "这是 SDXL 的 LoRA"},
                       {"type": "finished", "status": "failed"}]
    assert "这是 SDXL 的 LoRA" in status_markdown("zh", str(tmp_path), failed, alive=False)
    assert "console.log" in status_markdown("en", str(tmp_path), events, alive=False)  # died without a word


def test_a_missing_file_and_an_unknown_base_are_refused_before_a_model_loads(tmp_path):
    spec = GridSpec(str(tmp_path), [lora_choice(tmp_path / "gone.safetensors")])
    with pytest.raises(UserError, match="--lora: .* does not exist"):
        spec.check()
    (tmp_path / "gone.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="--base: cannot tell which model"):
        spec.check()
