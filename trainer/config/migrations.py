"""Config versions and how older settings become today's: one function per step, applied in order.

Every file Danlu writes with config keys carries `danlu_version`: a config.yaml (a run's, the demo's, the GUI's
form) at the top level, a preset next to its settings. Reading either migrates the keys through the same chain,
so a renamed key never breaks an old run folder, shared config or preset. A file without a version (a config
written before configs carried one, a YAML/JSON a user wrote, sd-scripts' TOML) has the keys of version 1.
Presets written before then name the key preset_version. Each step gets a test (tests/test_config.py shows the
chain with a renamed key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.common.errors import ConfigError, Problem

VERSION_KEY = "danlu_version"
OLD_VERSION_KEY = "preset_version"  # presets' name for it before configs carried one
CURRENT_VERSION = 1
UNVERSIONED = 1  # the keys of a file without a version

# version n -> the step that turns its settings into version n+1's (a renamed key, a changed meaning)
STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def split_version(data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A file's version and its mapping without the version key; ConfigError for a version this Danlu cannot
    read."""
    key = next((name for name in (VERSION_KEY, OLD_VERSION_KEY) if name in data), VERSION_KEY)
    version = data.get(key, UNVERSIONED)
    if isinstance(version, bool) or not isinstance(version, int) or version < UNVERSIONED:
        raise ConfigError([Problem((key,), f"{version!r} is not a version number", zh=f"{version!r} 不是版本号")])
    if version > CURRENT_VERSION:
        raise ConfigError([Problem((key,), f"{version} was written by a newer Danlu (this one reads up to "
                                   f"{CURRENT_VERSION})", "update Danlu",
                                   zh=f"{version} 是更新版本的丹炉写的（这个版本最多读到 {CURRENT_VERSION}）",
                                   hint_zh="请更新丹炉")])
    return version, {name: value for name, value in data.items() if name not in (VERSION_KEY, OLD_VERSION_KEY)}


def migrate(settings: dict[str, Any], version: int) -> dict[str, Any]:
    """Settings (config keys -> values) of `version` as the current version has them."""
    while version < CURRENT_VERSION:
        settings = STEPS[version](dict(settings))
        version += 1
    return settings


def versioned(settings: dict[str, Any]) -> dict[str, Any]:
    """What a file holds: the current version first, then the settings."""
    return {VERSION_KEY: CURRENT_VERSION, **settings}
