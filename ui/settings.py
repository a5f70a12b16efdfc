"""What the GUI remembers between sessions, in DANLU_HOME (default ~/.danlu): the last form and language.

The form is saved on every Check and Start, so a reloaded page or a restarted GUI shows it again and finds the
training running in its output_dir.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from trainer.common.errors import ConfigError
from trainer.config.io import read_config_file
from trainer.presets.library import danlu_home as home

FORM_FILE = "form.yaml"
LANG_FILE = "lang.txt"
DEMO_PREPARE_TIMEOUT_S = 300


def load_form() -> dict[str, Any] | None:
    try:
        return read_config_file(home() / FORM_FILE)
    except ConfigError:
        return None


def save_form(data: dict[str, Any]) -> None:
    folder = home()
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"{FORM_FILE}.tmp"
    temporary.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    temporary.replace(folder / FORM_FILE)


def load_lang() -> str | None:
    """The language last chosen in the page (a reload keeps it)."""
    try:
        return (home() / LANG_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def save_lang(lang: str) -> None:
    home().mkdir(parents=True, exist_ok=True)
    (home() / LANG_FILE).write_text(lang, encoding="utf-8")


def demo_form() -> dict[str, Any]:
    """The demo's config (tiny local model and dataset under DANLU_HOME/demo, built on first use by the trainer
    in its own process, so the GUI process never loads a model)."""
    root = home() / "demo"
    argv = [sys.executable, "-m", "trainer", "demo", "--dir", str(root), "--prepare-only"]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=DEMO_PREPARE_TIMEOUT_S,
                   cwd=Path(__file__).resolve().parent.parent)
    return read_config_file(root / "config.yaml")
