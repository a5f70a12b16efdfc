"""The presets a user can pick: the shipped ones (presets/ in the repository) and their own (DANLU_HOME/presets)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainer.common.errors import ConfigError
from trainer.presets.format import Preset, read_preset

SHIPPED_DIR = Path(__file__).resolve().parent.parent.parent / "presets"
PRESET_SUFFIXES = (".yaml", ".yml", ".json")


def danlu_home() -> Path:
    """Where Danlu keeps the user's things (the GUI's last form, user presets): $DANLU_HOME or ~/.danlu."""
    return Path(os.environ.get("DANLU_HOME") or Path.home() / ".danlu").expanduser()


def user_dir() -> Path:
    return danlu_home() / "presets"


@dataclass
class PresetEntry:
    path: Path
    source: str  # "shipped" or "user"
    preset: Preset


def list_presets() -> tuple[list[PresetEntry], list[str]]:
    """Shipped presets first, then the user's, each sorted by file name; and one line per file that cannot be
    read (it is skipped, not fatal)."""
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
    raise ConfigError([f"preset: no preset named '{name}'; `python -m trainer preset list` shows them"])
