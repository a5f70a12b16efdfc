"""The Presets tab: load a YAML/JSON (or sd-scripts TOML) preset into the form, save the form as a preset.

A loaded preset changes only the keys it names; the rest of the form stays as it was. A saved preset holds the
keys that differ from the defaults (what lora-scripts users share), written to DANLU_HOME/presets and offered
for download. Files are data: YAML/JSON/TOML are parsed, never executed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from trainer.config_io import read_config_file
from trainer.errors import ConfigError

from . import settings
from .fields import FIELD_SPECS, config_from_form, form_values
from .i18n import t
from .page import Page

PRESET_TYPES = [".yaml", ".yml", ".json", ".toml"]


def build(page: Page) -> Callable[[], None]:
    """Builds the tab; returns the wiring, to be called once every tab's fields exist."""
    lang = page.form.lang
    upload = page.text(gr.File(label=t(lang, "preset_file"), file_types=PRESET_TYPES, type="filepath",
                               elem_id="preset-file"), "preset_file")
    with gr.Row():
        name = page.text(gr.Textbox(label=t(lang, "preset_name"), value="my_preset", elem_id="preset-name",
                                    scale=3), "preset_name")
        save = page.text(gr.Button(t(lang, "preset_save"), elem_id="preset-save", scale=1), "preset_save", "value")
    demo = page.text(gr.Button(t(lang, "demo"), elem_id="preset-demo"), "demo", "value")
    download = page.text(gr.File(label=t(lang, "preset_download"), interactive=False, elem_id="preset-download"),
                         "preset_download")

    def wire() -> None:
        inputs = page.form.inputs
        page.then_review(upload.upload(lambda lang, path, *values: load_preset(lang, path, values),
                                       [page.lang, upload, *inputs], [page.message, *inputs]))
        save.click(lambda lang, title, *values: save_preset(lang, title, values), [page.lang, name, *inputs],
                   [page.message, download])
        page.then_review(demo.click(lambda: form_values(settings.demo_form()), None, inputs))

    return wire


def load_preset(lang: str, path: str | None, values: tuple) -> list[Any]:
    """The form with the preset's keys applied, and a message; unknown keys are named, nothing else changes."""
    keep = [gr.skip()] * len(FIELD_SPECS)
    if not path:
        return ["", *keep]
    try:
        preset = read_config_file(Path(path))
    except ConfigError as exc:
        return ["\n".join(f"- {p}" for p in exc.problems), *keep]
    unknown = [key for key in preset if key not in FIELD_SPECS]
    data = {**config_from_form(list(values)), **{k: v for k, v in preset.items() if k in FIELD_SPECS}}
    message = t(lang, "preset_loaded", n=len(preset) - len(unknown), name=Path(path).name)
    if unknown:
        message += "\n\n" + t(lang, "preset_unknown", keys=", ".join(unknown))
    return [message, *form_values(data)]


def save_preset(lang: str, title: str, values: tuple) -> list[Any]:
    """Write the form's non-default keys as YAML; the name is reduced to a safe file name."""
    stem = re.sub(r"[^\w.-]+", "_", (title or "").strip()).strip("._") or "preset"
    data = {key: value for key, value in config_from_form(list(values)).items()
            if value != FIELD_SPECS[key].default}
    folder = settings.home() / "presets"
    folder.mkdir(parents=True, exist_ok=True)
    path = _unused(folder / f"{stem}.yaml")  # an earlier preset of that name is kept
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return [t(lang, "preset_saved", path=path), str(path)]


def _unused(path: Path) -> Path:
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate
