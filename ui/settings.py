"""What the GUI remembers between sessions, in DANLU_HOME (default ~/.danlu): the last form and language.

The form is saved on every Check and Start, so a reloaded page or a restarted GUI shows it again and finds the
training running in its output_dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.common.errors import ConfigError
from trainer.common.files import atomic_write_text
from trainer.common.paths import danlu_home as home
from trainer.config.io import config_to_yaml, read_config_file
from trainer.run import child

FORM_FILE = "form.yaml"
LANG_FILE = "lang.txt"
DEMO_PREPARE_TIMEOUT_S = 300


def load_form() -> dict[str, Any] | None:
    try:
        return read_config_file(home() / FORM_FILE)
    except ConfigError:
        return None


def save_form(data: dict[str, Any]) -> None:
    atomic_write_text(home() / FORM_FILE, config_to_yaml(data))  # versioned: a later Danlu migrates it


def load_lang() -> str | None:
    """The language last chosen in the page (a reload keeps it)."""
    try:
        return (home() / LANG_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def save_lang(lang: str) -> None:
    home().mkdir(parents=True, exist_ok=True)
    (home() / LANG_FILE).write_text(lang, encoding="utf-8")


def demo_root() -> Path:
    """Where the demo's model, dataset and outputs live: DANLU_HOME/demo."""
    return home() / "demo"


def is_demo(output_dir: Path | None) -> bool:
    """output_dir is the demo's (under DANLU_HOME/demo): the page then says the demo is ready to start."""
    if output_dir is None:
        return False
    try:
        return output_dir.resolve().is_relative_to(demo_root().resolve())
    except OSError:
        return False


def demo_form() -> dict[str, Any]:
    """The demo's config (tiny local model and dataset under DANLU_HOME/demo, built on first use by the trainer
    in its own process, so the GUI process never loads a model). UserError when it could not be built."""
    root = demo_root()
    child.run(["demo", "--dir", root, "--prepare-only"], timeout_s=DEMO_PREPARE_TIMEOUT_S).check()
    return read_config_file(root / "config.yaml")
