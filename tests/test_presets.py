"""Danlu's preset format: versions and migrations, round trips, applying (defaults, preset, the user's paths),
share-safe export and the `preset` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.common.errors import ConfigError
from trainer.config import TrainConfig
from trainer.config.io import config_to_yaml
from trainer.config.migrations import CURRENT_VERSION, VERSION_KEY
from trainer.presets.format import (
    Preset,
    apply_preset,
    changed_settings,
    import_settings,
    preset_text,
    read_preset,
    share_safe,
    write_preset,
)
from trainer.presets.library import find_preset, list_presets

REPO = Path(__file__).resolve().parent.parent
PATHS = {"pretrained_model_name_or_path": "/models/sd15.safetensors", "train_data_dir": "/data/me",
         "output_dir": "/out", "sample_prompts": "/data/prompts.txt"}


def test_version_0_a_plain_config_migrates_to_the_current_version(tmp_path):
    flat = tmp_path / "old.yaml"  # what a run's config.yaml or Danlu's first GUI saved: keys at the top level
    flat.write_text(yaml.safe_dump({"network_dim": 64, "learning_rate": 1e-4, "max_train_epochs": 10,
                                    "optimizer_type": "Lion"}))
    preset = read_preset(flat)
    assert preset.name == "old"
    assert preset.settings == {"network_dim": 64, "optimizer_type": "Lion"}  # defaults dropped
    run_config = tmp_path / "config.yaml"  # a run folder's, with its version: a plain config all the same
    run_config.write_text(config_to_yaml(TrainConfig(network_dim=64, optimizer_type="Lion")))
    assert read_preset(run_config).settings == preset.settings


def test_version_1_round_trips_in_yaml_and_json(tmp_path):
    preset = Preset("style", {"network_dim": 64, "text_encoder_lr": [1e-5, 5e-6]}, {"en": "Style", "zh": "画风"},
                    {"en": "For styles.", "zh": "用于画风。"}, "sdxl", 12, "me")
    for suffix in (".yaml", ".json"):
        path = write_preset(preset, tmp_path / f"style{suffix}")
        assert read_preset(path) == preset
    assert json.loads((tmp_path / "style.json").read_text())[VERSION_KEY] == CURRENT_VERSION  # as a config's


def test_newer_or_broken_presets_are_refused_with_the_file_and_key(tmp_path):
    newer = tmp_path / "newer.yaml"
    newer.write_text(yaml.safe_dump({"preset_version": CURRENT_VERSION + 1, "settings": {}}))
    with pytest.raises(ConfigError, match="newer.yaml: preset_version: .* newer Danlu"):
        read_preset(newer)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preset_version": 1, "name": "x", "settings": {"network_dim": 0}}))
    with pytest.raises(ConfigError, match="bad.yaml: network_dim"):
        read_preset(bad)
    stray = tmp_path / "stray.yaml"
    stray.write_text(yaml.safe_dump({"preset_version": 1, "network_dim": 8}))
    with pytest.raises(ConfigError, match="network_dim: not a preset field.*under settings"):
        read_preset(stray)


def test_a_preset_is_data_never_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("preset_version: 1\nname: !!python/object/apply:os.system ['echo pwned']\nsettings: {}\n")
    with pytest.raises(ConfigError):
        read_preset(evil)


def test_applying_keeps_the_users_paths_and_reports_the_changes():
    preset = Preset("p", {"network_dim": 64, "train_data_dir": "/someone/else", "output_name": "their_lora"})
    current = {**PATHS, "network_dim": 16, "noise_offset": 0.1, "output_name": "my_char"}
    config, changed = apply_preset(preset, current)
    assert config["train_data_dir"] == "/data/me" and config["network_dim"] == 64
    assert config["output_name"] == "my_char"  # the banner says your own paths and name stay
    assert config["noise_offset"] is None  # defaults first: the earlier form's other values do not leak in
    assert set(changed) == {"network_dim", "noise_offset"}


def test_an_import_changes_only_the_keys_it_names_and_its_paths_that_exist_here(tmp_path):
    model, data = tmp_path / "model.safetensors", tmp_path / "img"
    model.write_bytes(b"x")
    data.mkdir()
    current = {**PATHS, "network_dim": 16, "noise_offset": 0.1, "output_name": "my_char", "reg_data_dir": "/r"}
    settings = {"network_dim": 32, "pretrained_model_name_or_path": str(model), "train_data_dir": str(data),
                "output_dir": str(tmp_path / "new_output"), "sample_prompts": ["a cat"], "output_name": "alice",
                "reg_data_dir": None, "vae": "D:/models/vae.safetensors", "max_train_steps": 100}
    config, skipped = import_settings(settings, current)
    assert skipped == {"reg_data_dir": None, "vae": "D:/models/vae.safetensors"}  # empty, and not on this computer
    assert config == {**current, **{k: v for k, v in settings.items() if k not in skipped}, "max_train_epochs": None}
    assert config["noise_offset"] == 0.1 and config["reg_data_dir"] == "/r"  # not in the file: as it was
    hub, _ = import_settings({"pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5"}, current)
    assert hub["pretrained_model_name_or_path"] == "runwayml/stable-diffusion-v1-5"  # a repo id is no local path


def test_the_gui_lists_exactly_what_an_import_changed_in_the_form(tmp_path):
    """A kohya_ss JSON of this computer: its existing paths apply, the others are listed as not applied, the
    keys it leaves out keep the form's values, and the list of changes is the form's own difference."""
    from ui.fields import config_from_form, form_values
    from ui.presets_tab import import_upload

    data = tmp_path / "我的 数据" / "img"
    data.mkdir(parents=True)
    file = json.loads((IMPORTS / "kohya_ss_loha.json").read_text(encoding="utf-8"))
    file.update(train_data_dir=str(data), output_dir=str(tmp_path / "out"))  # here; its model and logs are not
    upload = tmp_path / "mine.json"
    upload.write_text(json.dumps(file), encoding="utf-8")
    before = {**TrainConfig().model_dump(), **PATHS, "output_name": "my_char", "noise_offset": 0.05}
    message, *values = import_upload("en", str(upload), tuple(form_values(before)))
    after = config_from_form(values)
    assert after["train_data_dir"] == str(data) and after["output_dir"] == str(tmp_path / "out")
    assert after["output_name"] == "alice_loha" and after["sample_prompts"][0].startswith("alice, 1girl")
    assert after["pretrained_model_name_or_path"] == PATHS["pretrained_model_name_or_path"]
    assert "not applied: `pretrained_model_name_or_path` = `'D:/models/v1-5-pruned-emaonly.safetensors'`" in message
    changes = message.split("<summary>", 1)[1]
    listed = {line.split("`")[1] for line in changes.splitlines() if line.startswith("- `")}
    assert listed == {key for key in after if after[key] != config_from_form(form_values(before))[key]}
    assert "noise_offset" not in listed or file.get("noise_offset") is not None


def test_share_safe_leaves_out_paths_but_keeps_inline_prompts():
    settings = {**PATHS, "network_dim": 8}
    shared, removed = share_safe(settings)
    assert shared == {"network_dim": 8} and set(removed) == set(PATHS)
    assert share_safe({"sample_prompts": ["a cat"]})[0] == {"sample_prompts": ["a cat"]}


def test_export_share_and_list_from_the_cli(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**PATHS, "network_dim": 12, "max_train_epochs": 4}))
    out = tmp_path / "shared.yaml"
    env = {"DANLU_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "trainer", "preset", "export", str(config), "-o", str(out),
                          "--share"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "left out" in run.stdout and "train_data_dir" in run.stdout
    assert read_preset(out).settings == {"max_train_epochs": 4, "network_dim": 12}
    again = subprocess.run([sys.executable, "-m", "trainer", "preset", "export", str(config), "-o", str(out)],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr  # nothing silently overwritten
    folder = subprocess.run([sys.executable, "-m", "trainer", "preset", "export", str(config), "-o", str(tmp_path),
                             "--overwrite"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert folder.returncode == 2 and "is a folder" in folder.stderr and "Traceback" not in folder.stderr
    assert not list(tmp_path.glob("*.partial"))
    user = tmp_path / "home" / "presets"
    user.mkdir(parents=True)
    (user / "mine.yaml").write_text(preset_text(Preset("mine", {"network_dim": 4}, {"en": "Mine"})))
    monkeypatch.setenv("DANLU_HOME", str(tmp_path / "home"))
    entries, problems = list_presets()
    assert problems == [] and entries[-1].source == "user" and find_preset("mine").preset.settings["network_dim"] == 4
    listing = subprocess.run([sys.executable, "-m", "trainer", "preset", "list"], cwd=REPO, capture_output=True,
                             text=True, env=env, timeout=300)
    assert listing.returncode == 0 and "user     mine" in listing.stdout


def test_changed_settings_keeps_only_non_defaults():
    assert changed_settings({"network_dim": 32, "network_alpha": 16.0, "unknown": 1}) == {"network_alpha": 16.0}


IMPORTS = REPO / "tests" / "data" / "imports"


@pytest.mark.parametrize("name", sorted(p.name for p in IMPORTS.glob("*") if "dataset" not in p.name))
def test_an_imported_config_passes_check_on_the_first_try(name, tmp_path, tiny_sd1, train_dir):
    """Another tool's config, applied with this computer's paths, is ready to train (fp16 aside on a CPU)."""
    import torch

    from trainer.checks.preflight import run_preflight
    from trainer.config.io import validate_config
    from trainer.presets.importers import import_file

    result = import_file(IMPORTS / name)
    mine = {"pretrained_model_name_or_path": str(tiny_sd1), "train_data_dir": str(train_dir),
            "output_dir": str(tmp_path / "out"), "reg_data_dir": None}
    config, _ = apply_preset(Preset(name, result.settings), mine)
    config["reg_data_dir"] = None  # the foreign file's regularization folder is not on this computer
    if isinstance(config["sample_prompts"], str):
        config["sample_prompts"] = None  # nor is its prompt file
    if config["mixed_precision"] == "fp16" and not torch.cuda.is_available():
        config["mixed_precision"] = "no"  # fp16 needs CUDA; this test machine has none
    config.pop("model_family", None)
    plan = run_preflight(validate_config(config), gpu=(torch.cuda.is_available(), False)).plan
    assert plan.total_steps > 0


def test_a_field_the_file_leaves_at_danlus_default_is_named_too(tmp_path):
    """kohya_ss writes every field: noise_offset 0 means none, so the form's own noise_offset goes; Danlu keys
    kohya_ss has no field for (on_nan, ...) are not the file's and stay as the form has them."""
    from trainer.presets.importers import import_file

    upload = tmp_path / "k.json"
    upload.write_text(json.dumps({"LoRA_type": "Standard", "noise_offset": 0, "max_grad_norm": 0}), encoding="utf-8")
    named = import_file(upload).named_settings()
    assert named["noise_offset"] is None and named["max_grad_norm"] == 1.0 and "on_nan" not in named
    config, _ = import_settings(named, {"noise_offset": 0.05, "max_grad_norm": 0.5, "on_nan": "warn"})
    assert (config["noise_offset"], config["max_grad_norm"], config["on_nan"]) == (None, 1.0, "warn")
