"""Preset versions and how an older one becomes the current one: one function per step, applied in order.

Version 0 is a plain config mapping (sd-scripts' keys at the top level): a run's config.yaml, the files Danlu's
first GUI saved, or a YAML/JSON a user wrote by hand. Version 1 adds the metadata and puts the keys under settings.
A test covers each step (tests/test_presets.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.common.errors import ConfigError
from trainer.config import TrainConfig

PRESET_VERSION = 1


def _v0_to_v1(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A flat config -> metadata + the keys that differ from the defaults (unknown keys stay: validation names
    them)."""
    defaults = {key: info.default for key, info in TrainConfig.model_fields.items()}
    settings = {key: value for key, value in data.items()
                if key != "preset_version" and (key not in defaults or value != defaults[key])}
    return {"preset_version": 1, "name": name, "settings": settings}


MIGRATIONS: dict[int, Callable[[dict[str, Any], str], dict[str, Any]]] = {0: _v0_to_v1}


def migrate(data: dict[str, Any], name: str) -> dict[str, Any]:
    """data as the current version; name: what to call a version-0 preset (its file name)."""
    version = data.get("preset_version", 0)
    if not isinstance(version, int) or version < 0:
        raise ConfigError([f"preset_version: {version!r} is not a version number"])
    if version > PRESET_VERSION:
        raise ConfigError([f"preset_version: {version} was written by a newer Danlu (this one reads up to "
                           f"{PRESET_VERSION}); update Danlu"])
    while version < PRESET_VERSION:
        data = MIGRATIONS[version](data, name)
        version = data["preset_version"]
    return data
