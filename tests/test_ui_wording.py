"""The page speaks the page: the trainer's "set KEY: VALUE" (a config file's words) reaches the GUI as what to do
at that field and where it is (ui/wording.py); banners count a repeated problem and follow the page's language."""

from __future__ import annotations

from trainer.run.state import RunState
from ui.review import review
from ui.run_view import banners_html
from ui.wording import gui_wording


def test_set_key_value_becomes_the_fields_action_and_place():
    assert gui_wording("or set overwrite: true to replace it", "en") == \
        "or tick overwrite (Paths › Output › Advanced) to replace it"
    assert gui_wording("set mixed_precision: bf16 (RTX 30xx)", "en") == \
        "set mixed_precision to bf16 (Steps › Speed and memory) (RTX 30xx)"
    assert gui_wording("设 mixed_precision: bf16", "zh") == "把 步数 › 速度与显存 里的 mixed_precision 设为 bf16"
    assert gui_wording("set not_a_key: 1, keep: this", "en") == "set not_a_key: 1, keep: this"  # only fields


def test_an_existing_output_file_names_the_checkbox_not_the_yaml(make_config, tmp_path):
    config = make_config()
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.safetensors").write_bytes(b"an earlier LoRA")
    shown = review(config).errors_in("en")["output_name"]
    assert "tick overwrite (Paths › Output › Advanced)" in shown and "overwrite: true" not in shown


def test_a_repeated_problem_is_one_banner_with_a_count_in_the_pages_language():
    state = RunState()
    event = {"type": "health", "level": "warning", "code": "base_sample", "message": "preview a.png is noise",
             "hint": "the base model may be broken", "message_zh": "预览图 a.png 满屏噪点", "hint_zh": "底模可能有问题"}
    state.apply([event] * 3)
    zh, en = banners_html(state, "zh"), banners_html(state, "en")
    assert zh.count("danlu-banner") == 1 and 'data-count="3"' in zh and "共 3 次" in zh and "满屏噪点" in zh
    assert "(3 times)" in en and "preview a.png is noise" in en
