"""Danlu's preset file: versioned YAML/JSON with a description in both languages and only the keys that differ
from the defaults. Presets are data: parsed with yaml.safe_load / json, never executed.

    danlu_version: 1              # the version of its keys (trainer/config/migrations.py), as in a config file
    name: sdxl-character-12gb
    title: {en: SDXL character, 12 GB, zh: SDXL 角色（12 GB 显存）}
    description: {en: ..., zh: ...}
    model_family: sdxl            # which base models it is for (informational; not a config key here)
    vram_gb: 12                   # the GPU memory it needs
    author: Danlu
    settings: {network_dim: 32, ...}

Applying one: the defaults, then the preset's settings, then the user's own machine values (paths) and LoRA name
(kept_keys). Importing a file instead changes only the keys it names (import_settings). Presets written before
configs carried a version name it preset_version; a plain config file reads as a preset too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from trainer.adapters.sd_scripts import map_network_config
from trainer.common.errors import ConfigError, Problem
from trainer.common.files import atomic_write_text
from trainer.common.places import file_place_problems
from trainer.config import TrainConfig, field_info
from trainer.config.io import parse_config_file, validate_config
from trainer.config.migrations import OLD_VERSION_KEY, VERSION_KEY, migrate, split_version, versioned
from trainer.config.schema.steps import length_defaults
from trainer.presets.paths import usable_here

LANG_TEXT_KEYS = ("title", "description")  # {en, zh} mappings
META_KEYS = (VERSION_KEY, "name", *LANG_TEXT_KEYS, "model_family", "vram_gb", "author", "settings")


@dataclass
class Preset:
    name: str
    settings: dict[str, Any]
    title: dict[str, str] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    model_family: str | None = None
    vram_gb: float | None = None
    author: str = ""

    def text(self, key: str, lang: str) -> str:
        """title or description in lang, falling back to the other language, then the name."""
        texts = getattr(self, key)
        return texts.get(lang) or texts.get("en") or texts.get("zh") or (self.name if key == "title" else "")


def machine_keys() -> list[str]:
    """Keys whose values belong to one computer (paths): never shared, and kept when a preset is applied."""
    return [name for name in TrainConfig.model_fields if field_info(name).get("machine")]


def kept_keys() -> list[str]:
    """What applying a preset keeps from the form: this computer's values (machine_keys) and the LoRA's name."""
    return [*machine_keys(), "output_name"]


def path_keys() -> list[str]:
    """The machine keys that hold a path (the others are launch settings): a file's value applies only when it
    exists on this computer."""
    return [key for key in machine_keys() if field_info(key).get("group") != "launch"]


def changed_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The keys whose values differ from the defaults, in schema order (what a preset stores)."""
    defaults = {name: info.default for name, info in TrainConfig.model_fields.items()}
    return {key: config[key] for key in defaults if key in config and config[key] != defaults[key]}


def share_safe(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings without this computer's values, and the keys left out. Inline sample prompts (a list) are
    data and stay; a prompt file (a str) is a path and goes."""
    removed = [key for key in machine_keys() if key in settings
               and not (key == "sample_prompts" and isinstance(settings[key], list))]
    return {k: v for k, v in settings.items() if k not in removed}, removed


def apply_preset(preset: Preset, current: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config to use: defaults, then the preset, then the user's own paths and LoRA name from `current`
    (kept_keys); and the keys whose value changed from `current`."""
    config = {name: info.default for name, info in TrainConfig.model_fields.items()}
    config.update(_named(preset.settings))
    config.update({key: current[key] for key in kept_keys() if current.get(key) not in (None, "")})
    return config, _changed(config, current)


def import_settings(settings: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An imported file applied to the form `current`: only the keys it names change. A path it names that does
    not exist on this computer, or that it leaves empty (paths.usable_here), is not applied: the second mapping
    lists those with the file's value, and the form keeps its own."""
    named = _named(settings)
    skipped = {key: named.pop(key) for key in path_keys() if key in named and not usable_here(key, named[key])}
    return {**current, **named}, skipped


def _named(settings: dict[str, Any]) -> dict[str, Any]:
    """The keys a preset or file sets, as Danlu's own: sd-scripts' network_module/network_args as network_type
    etc. (else the default network_type would contradict them), and steps without epochs train those steps."""
    if "network_module" in settings or "network_args" in settings:
        settings = map_network_config(settings)
    return {**settings, **length_defaults(settings)}


def _changed(config: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [key for key in config if config[key] != current.get(key, TrainConfig.model_fields[key].default)]


def is_preset(data: dict[str, Any]) -> bool:
    """A file's mapping is a preset's (it has preset fields, or presets' old version key), not a plain config's."""
    return OLD_VERSION_KEY in data or any(key in data for key in META_KEYS
                                          if key != VERSION_KEY and key not in TrainConfig.model_fields)


def read_preset(path: Path, every_key: bool = False) -> Preset:
    """A preset file of any version (its settings migrate), or a plain config file (the keys that differ from the
    defaults, or with every_key all the keys it names; named after the file). ConfigError names the file and
    each problem."""
    data = parse_config_file(path)  # YAML, JSON (or a TOML config), with a clear error when it cannot be parsed
    try:
        version, rest = split_version(data)
        if is_preset(data):
            return preset_from_mapping(rest, version)
        preset = preset_from_mapping({"name": path.stem, "settings": rest}, version)  # a plain config
        return preset if every_key else replace(preset, settings=changed_settings(preset.settings))
    except ConfigError as exc:
        raise ConfigError([problem.within(f"{path.name}: ") for problem in exc.problems]) from None


def preset_from_mapping(data: dict[str, Any], version: int) -> Preset:
    """A preset's fields (without the version key); its settings are of `version` and migrate."""
    unknown = [key for key in data if key not in META_KEYS]
    if unknown:
        raise ConfigError([Problem((key,), "not a preset field", f"a preset has {', '.join(META_KEYS)} (config keys "
                                   "go under settings)", zh="不是预设的字段",
                                   hint_zh=f"预设只有 {', '.join(META_KEYS)}（配置参数写在 settings 下面）")
                           for key in unknown])
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError([Problem(("settings",), "expected a mapping of config keys to values",
                                   zh="应为“参数: 值”的映射")])
    settings = migrate(settings, version)
    validate_config(settings)
    texts = {key: _lang_text(data, key) for key in LANG_TEXT_KEYS}
    return Preset(str(data.get("name") or "preset"), settings, texts["title"], texts["description"],
                  data.get("model_family"), data.get("vram_gb"), str(data.get("author") or ""))


def preset_to_mapping(preset: Preset) -> dict[str, Any]:
    data = {"name": preset.name, "title": preset.title, "description": preset.description,
            "model_family": preset.model_family, "vram_gb": preset.vram_gb, "author": preset.author,
            "settings": preset.settings}
    return versioned({k: v for k, v in data.items() if k == "settings" or v not in (None, "", {})})


def preset_text(preset: Preset, suffix: str = ".yaml") -> str:
    data = preset_to_mapping(preset)
    if suffix.lower() == ".json":
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_preset(preset: Preset, path: Path, overwrite: bool = False) -> Path:
    """Write YAML (or JSON for a .json path) atomically; an existing file is kept unless overwrite, a folder always."""
    problems = file_place_problems(path, "-o", overwrite)
    if problems:
        raise ConfigError(problems)
    atomic_write_text(path, preset_text(preset, path.suffix))
    return path


def _lang_text(data: dict[str, Any], key: str) -> dict[str, str]:
    value = data.get(key)
    if value is None:
        return {}
    if isinstance(value, str):
        return {"en": value}
    if not isinstance(value, dict) or not set(value) <= {"en", "zh"}:
        raise ConfigError([Problem((key,), "expected {en: ..., zh: ...}", zh="应写成 {en: ..., zh: ...}")])
    return {lang: str(text) for lang, text in value.items()}
