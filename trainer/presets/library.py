"""The presets a user can pick: the shipped ones (presets/ in the repository) and their own (DANLU_HOME/presets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.common.errors import ConfigError, Problem
from trainer.common.paths import REPO, danlu_home
from trainer.presets.format import Preset, read_preset

SHIPPED_DIR = REPO / "presets"
PRESET_SUFFIXES = (".yaml", ".yml", ".json")


def user_dir() -> Path:
    return danlu_home() / "presets"


@dataclass
class PresetEntry:
    path: Path
    source: str  # "shipped" or "user"
    preset: Preset


def list_presets() -> tuple[list[PresetEntry], list[Problem]]:
    """Shipped presets first, then the user's, each sorted by file name; and the problems of the files that cannot
    be read (each is skipped, not fatal)."""
    entries, problems = [], []
    for source, folder in (("shipped", SHIPPED_DIR), ("user", user_dir())):
        for path in sorted(p for p in folder.glob("*") if p.suffix.lower() in PRESET_SUFFIXES):
            try:
                entries.append(PresetEntry(path, source, read_preset(path)))
            except ConfigError as exc:
                problems += exc.problems
    return entries, problems


def find_preset(name: str) -> PresetEntry:
    """A preset by its name or file stem (user presets win over shipped ones of the same name)."""
    entries, _ = list_presets()
    for entry in reversed(entries):
        if name in (entry.preset.name, entry.path.stem):
            return entry
    raise ConfigError([Problem((), f"preset: no preset named '{name}'", "`python -m trainer preset list` shows them",
                               zh=f"preset：没有名为 '{name}' 的预设",
                               hint_zh="`python -m trainer preset list` 会列出所有预设")])
