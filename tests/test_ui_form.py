"""The form built from the schema: every field round-trips, has its widget under its key, and its texts in both
languages; problems land on the fields they name; presets load into and save from the form."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
import yaml

from trainer.common.errors import Problem
from trainer.config import TrainConfig
from trainer.config.migrations import CURRENT_VERSION
from trainer.presets.format import read_preset
from ui import presets_tab, settings
from ui.app import build_app
from ui.fields import FIELD_SPECS, config_from_form, form_values, to_config, to_form
from ui.i18n import TEXT
from ui.review import Review, review

# A value other than the default for each widget kind, to prove the conversion is not only right for defaults.
SAMPLE_VALUES = {
    "network_args": ["conv_dim=4", "conv_alpha=1"], "text_encoder_lr": [1e-5, 5e-6], "sample_prompts": ["a", "b"],
    "network_train_unet_only": False, "v2": True, "max_token_length": 150, "lr_warmup_steps": 10,
    "optimizer_type": "torch.optim.AdamW", "network_dim": 16, "noise_offset": 0.05, "resolution": "512,768",
}


@pytest.mark.parametrize("name", list(FIELD_SPECS))
def test_every_field_round_trips_through_its_widget(name):
    spec = FIELD_SPECS[name]
    for value in (spec.default, SAMPLE_VALUES.get(name, spec.default)):
        assert to_config(spec, to_form(spec, value)) == value


def test_a_full_config_round_trips_and_validates():
    config = TrainConfig(max_train_epochs=3, **SAMPLE_VALUES).model_dump()
    back = config_from_form(form_values(config))
    assert back == config
    assert TrainConfig(**back).model_dump() == config


def test_form_text_forms_parse_as_sd_scripts_users_write_them():
    assert to_config(FIELD_SPECS["text_encoder_lr"], "1e-5; 2e-5") == [1e-5, 2e-5]
    assert to_config(FIELD_SPECS["sample_prompts"], "prompts.txt") == "prompts.txt"  # a prompt file
    assert to_config(FIELD_SPECS["sample_prompts"], "1girl, solo\n") == ["1girl, solo"]
    assert to_config(FIELD_SPECS["lr_warmup_steps"], 0.1) == 0.1  # a fraction stays one
    assert to_config(FIELD_SPECS["network_weights"], "  ") is None


def test_every_field_has_a_widget_under_its_key_with_both_help_texts():
    blocks = build_app("en", {})
    ids = {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}
    for name, spec in FIELD_SPECS.items():
        widget = ids[name]
        assert widget.label == name
        assert widget.info == TrainConfig.model_fields[name].description
        if spec.kind == "choice":
            assert {value for _, value in widget.choices} >= {str(c) for c in spec.choices}
    assert {"start", "stop", "check"} <= set(ids)


def test_both_languages_have_every_text_and_every_schema_group():
    assert set(TEXT["en"]) == set(TEXT["zh"])
    for spec in FIELD_SPECS.values():
        assert f"group_{spec.group}" in TEXT["en"]
    assert all(TEXT["zh"][key] for key in TEXT["zh"])


def test_problems_land_on_the_fields_they_name(make_config):
    assert review({**make_config(), "network_dim": 0}).errors_in("en")["network_dim"].startswith("0 is not valid")
    both = review({**make_config(), "network_train_unet_only": True, "network_train_text_encoder_only": True})
    assert set(both.errors_in("en")) == {"network_train_unet_only", "network_train_text_encoder_only"}
    # a rule between keys marks each of them, though its line does not start with them
    noise = review({**make_config(), "adaptive_noise_scale": 0.1}).errors_in("en")
    assert set(noise) == {"adaptive_noise_scale", "noise_offset"} and "needs noise_offset" in noise["noise_offset"]
    errors = Review(problems=[Problem(("ae", "clip_l", "t5xxl"), "empty, but 'x' is a transformer without them"),
                              Problem((), "something without a key")]).errors_in("en")
    assert set(errors) == {"ae", "clip_l", "t5xxl"} and errors["ae"].startswith("empty, but")


def test_a_number_out_of_range_reaches_its_field_not_a_bare_error_toast(make_config):
    """Gradio's own range check raises before the handler runs (a toast saying only "Error"): the form's numbers
    have none, so validation names the field and its range."""
    blocks = build_app("en", {})
    widget = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "network_dim")
    assert widget.preprocess(-4) == -4
    assert "greater than or equal to 1" in review({**make_config(), "network_dim": -4}).errors_in("en")["network_dim"]


def test_live_review_names_a_missing_dataset_at_train_data_dir(make_config, tmp_path):
    result = review({**make_config(), "train_data_dir": str(tmp_path / "missing")})
    assert "train_data_dir" in result.errors_in("en") and result.plan is None
    ok = review(make_config())
    assert ok.errors_in("en") == {} and ok.plan.total_steps > 0 and ok.family == "sd1"


def test_applying_a_preset_keeps_the_users_paths_and_names_the_changes(tmp_path, make_config):
    preset = tmp_path / "style.yaml"
    preset.write_text(yaml.safe_dump({"preset_version": 1, "name": "style", "title": {"en": "Style"},
                                      "settings": {"network_dim": 64, "optimizer_type": "Lion"}}))
    values = form_values(make_config())
    message, *new_values = presets_tab.apply_chosen("en", str(preset), tuple(values))
    data = config_from_form(new_values)
    assert data["network_dim"] == 64 and data["optimizer_type"] == "Lion"
    assert data["train_data_dir"] == make_config()["train_data_dir"]  # the user's own path stays
    assert "Applied Style" in message and "`network_dim`" in message


def test_a_broken_upload_changes_nothing_and_says_why(tmp_path, make_config):
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"network_dim": 64, "frobnicate": 1}))
    message, *new_values = presets_tab.import_upload("en", str(broken), tuple(form_values(make_config())))
    assert "frobnicate" in message and all(value == gr.skip() for value in new_values)  # the form is kept


@pytest.mark.parametrize("encoding", ["gbk", "utf-16"])
def test_a_preset_saved_by_a_chinese_windows_editor_applies(tmp_path, make_config, encoding):
    upload = tmp_path / "角色.yaml"
    upload.write_bytes(yaml.safe_dump({"network_dim": 48, "output_name": "角色"}, allow_unicode=True).encode(encoding))
    message, *new_values = presets_tab.import_upload("en", str(upload), tuple(form_values(make_config())))
    data = config_from_form(new_values)
    assert data["network_dim"] == 48 and data["output_name"] == "角色", message


@pytest.mark.parametrize("lang, words", [
    ("en", ("changed: `max_grad_norm`", "sd-scripts' default", "not imported", "random seed")),
    ("zh", ("已改动：`max_grad_norm`", "sd-scripts 的默认值", "未导入", "随机种子"))])  # the reasons in lang too
def test_an_imported_file_shows_the_import_report(tmp_path, make_config, lang, words):
    # kohya_ss drops max_grad_norm 0 (changed), leaves network_dim to sd-scripts' default 4, and seed "" is random
    kohya = tmp_path / "kohya.json"
    kohya.write_text('{"LoRA_type": "Standard", "max_grad_norm": 0, "network_dim": 0, "seed": ""}', encoding="utf-8")
    form = tuple(form_values(make_config(max_grad_norm=0.5)))  # an import changes only what the file names
    message, *new_values = presets_tab.import_upload(lang, str(kohya), form)
    assert all(word in message for word in words), message
    assert "`max_grad_norm` = `1.0`" in message
    assert config_from_form(new_values)["max_grad_norm"] == 1.0
    toml = tmp_path / "sd.toml"
    toml.write_text("max_train_steps = 300\n", encoding="utf-8")
    message, *_ = presets_tab.import_upload(lang, str(toml), tuple(form_values(make_config())))
    assert "`lr_scheduler` = `'constant'`" in message  # a key the file leaves out, filled in and named


def test_saved_preset_holds_the_changed_keys_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("DANLU_HOME", str(tmp_path))
    values = form_values({"network_dim": 8, "max_train_epochs": 4, "train_data_dir": "/data/me"})
    first = Path(presets_tab.save_preset("en", "my style", tuple(values))[1])
    second = Path(presets_tab.save_preset("en", "my style", tuple(values))[1])
    assert first.name == "my_style.yaml" and second.name == "my_style-2.yaml"
    saved = read_preset(first).settings
    assert saved == {"train_data_dir": "/data/me", "max_train_epochs": 4, "network_dim": 8}
    message, shared = presets_tab.share_preset("en", "my style", tuple(values))
    assert read_preset(Path(shared)).settings == {"max_train_epochs": 4, "network_dim": 8}
    assert "train_data_dir" in message


def test_the_saved_form_carries_the_config_version(tmp_path, monkeypatch):
    monkeypatch.setenv("DANLU_HOME", str(tmp_path))
    settings.save_form({"network_dim": 8, "train_data_dir": "/data/me"})
    saved = yaml.safe_load((tmp_path / settings.FORM_FILE).read_text(encoding="utf-8"))
    assert saved == {"danlu_version": CURRENT_VERSION, "network_dim": 8, "train_data_dir": "/data/me"}
    assert settings.load_form() == {"network_dim": 8, "train_data_dir": "/data/me"}


def test_build_app_in_chinese_labels_tabs_in_chinese():
    blocks = build_app("zh", {})
    labels = {getattr(b, "label", None) for b in blocks.blocks.values() if isinstance(b, gr.Tab)}
    assert {"路径", "步数", "模型效果", "预设", "运行"} <= labels


def test_the_page_listens_on_other_computers_only_with_a_password(capsys):
    import app

    assert app.parse_args(["--no-browser"]).listen is False
    with pytest.raises(SystemExit) as refused:
        app.parse_args(["--listen"])
    assert refused.value.code == 2 and "--auth" in capsys.readouterr().err
    assert app.parse_args(["--listen", "--auth", "me:secret"]).auth == "me:secret"
    assert app.parse_args(["--listen", "--insecure"]).insecure
