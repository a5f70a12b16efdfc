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
    preset = Preset("p", {"network_dim": 64, "train_data_dir": "/someone/else"})
    current = {**PATHS, "network_dim": 16, "noise_offset": 0.1}
    config, changed = apply_preset(preset, current)
    assert config["train_data_dir"] == "/data/me" and config["network_dim"] == 64
    assert config["noise_offset"] is None  # defaults first: the earlier form's other values do not leak in
    assert set(changed) == {"network_dim", "noise_offset"}


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
